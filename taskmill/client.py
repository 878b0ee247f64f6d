"""``Client`` and ``AsyncClient``: producers and dashboards in other processes.

Both talk to a running deployment (the Procfile processes, or any set of actors on known
endpoints) over the bus: submissions and queries go to the Store, controls and the running set to
the Dispatcher. Nothing here schedules.

Every ``Submit`` carries a fresh ``request_id``. When the Store does not answer in time
(``ActorUnavailable``: it is restarting, say) the same message is sent again, a few times with a
doubling pause; the Store remembers request ids and answers a repeat with the outcomes it stored
the first time, so a submission is applied exactly once however many times it was sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import zmq

from bus.client import AsyncRequester, RequestClient
from bus.errors import ActorUnavailable
from bus.kinds import (
    Counts,
    CountsReply,
    GetResult,
    History,
    HistoryReply,
    HistoryStats,
    Lookup,
    LookupReply,
    Ok,
    Submit,
    SubmitReply,
    TypeStatsReply,
)
from bus.kinds_run import CancelTask, DispatcherState, GetState, PauseAll, ResumeAll
from bus.security import CurveSecurity
from bus.subscribe import Configure
from bus.topology import Topology
from taskmill.deploy import DeploymentConfig
from taskmill.records import (
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TypeStats,
)
from taskmill.results import SUBSCRIBE_TIMEOUT_S, TERMINAL_TOPICS, wait_result, wait_result_blocking
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import TaskStore, estimates, progress_estimates, rest_of
from taskmill.subscription import EventSubscriber, EventSubscription
from taskmill.task import TaskSubmission, TypedTask, generate_dedup_key

__all__ = ["AsyncClient", "Client"]

Target = DeploymentConfig | Topology | None
R = TypeVar("R", RequestClient, AsyncRequester)
Submittable = TaskSubmission | TypedTask

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
FIRST_BACKOFF_S = 0.25


def _topology(target: Target) -> tuple[Topology, CurveSecurity | None]:
    """The endpoints, and the CURVE settings a deployment on tcp asks for."""
    if isinstance(target, Topology):
        return target, None
    cfg = target if target is not None else DeploymentConfig.load()
    return cfg.topology(), cfg.security()


def _configure(security: CurveSecurity | None, endpoint: str) -> Configure | None:
    return security.configure_client(endpoint) if security is not None else None


def _check_options(timeout: float, retries: int) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if not timeout > 0:  # also refuses NaN
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _connect(
    target: Target, context: zmq.Context[Any] | None
) -> tuple[Topology, CurveSecurity | None, zmq.Context[Any], bool]:
    """Endpoints, CURVE settings, the zmq context and whether the client owns it."""
    topology, security = _topology(target)
    return topology, security, context if context is not None else zmq.Context(), context is None


class _Endpoints:
    """What both clients share: making a requester for one of the deployment's endpoints."""

    security: CurveSecurity | None
    _context: zmq.Context[Any]

    def _requester(self, kind: type[R], endpoint: str, timeout: float) -> R:
        configure = _configure(self.security, endpoint)
        return kind(self._context, endpoint, timeout=timeout, configure=configure)


def _submit_message(submissions: Sequence[Submittable]) -> Submit | None:
    wire = [(s.to_submission() if isinstance(s, TypedTask) else s).to_wire() for s in submissions]
    return Submit(wire, request_id=uuid.uuid4().hex) if wire else None


def _outcomes(reply: SubmitReply) -> list[SubmitOutcome]:
    return [SubmitOutcome.from_wire(o) for o in reply.outcomes]


def _dedup_data(data: bytes | str | None) -> bytes | None:
    return data.encode("utf-8") if isinstance(data, str) else data


class Client(_Endpoints):
    """A blocking client of a running deployment. One per thread (zmq sockets are not shared).

    ``Client(DeploymentConfig.load(...))``, ``Client(topology)``, or ``Client()`` for the
    configuration in ``TASKMILL_*`` environment variables. A request that gets no answer within
    ``timeout`` seconds raises ``ActorUnavailable``; submissions are first retried ``retries``
    times (see the module docstring).
    """

    def __init__(
        self,
        target: Target = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        _check_options(timeout, retries)
        self.retries = retries
        self.topology, self.security, self._context, self._own_context = _connect(target, context)
        self._store = self._requester(RequestClient, self.topology.store, timeout)
        self._dispatcher = self._requester(RequestClient, self.topology.dispatcher, timeout)
        self._closed = False

    # -- submitting --------------------------------------------------------------------------

    def submit(self, submission: Submittable) -> SubmitOutcome:
        """Submit one task (a ``TaskSubmission`` or a ``TypedTask``); its outcome."""
        return self.submit_batch([submission])[0]

    def submit_batch(self, submissions: Sequence[Submittable]) -> list[SubmitOutcome]:
        """Submit many tasks in one transaction; one outcome each, in order."""
        message = _submit_message(submissions)
        if message is None:
            return []
        delay = FIRST_BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                return _outcomes(self._store.call(message, SubmitReply))
            except ActorUnavailable:
                if attempt == self.retries:
                    raise
            time.sleep(delay)  # the Store may be restarting: give it time before the retry
            delay *= 2
        raise AssertionError("unreachable")

    # -- controls and queries ----------------------------------------------------------------

    def cancel(self, task_id: int) -> bool:
        """Cancel a task (and its children); False when no active task has that id."""
        return bool(self._dispatcher.call(CancelTask(task_id), Ok).value)

    def lookup(self, task_type: str, data: bytes | str | None) -> TaskLookup:
        """Where the task of ``task_type`` and dedup data (its key, else its payload) is."""
        key = generate_dedup_key(task_type, _dedup_data(data))
        return TaskLookup.from_reply(self._store.call(Lookup(key), LookupReply))

    def pause_all(self) -> None:
        """Stop dispatching (running tasks are paused) until ``resume_all``."""
        self._dispatcher.call(PauseAll(), Ok)

    def resume_all(self) -> None:
        self._dispatcher.call(ResumeAll(), Ok)

    def history(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        task_type: str | None = None,
    ) -> list[TaskHistoryRecord]:
        """Terminal runs, newest first, of one ``status`` and ``task_type`` when given (in
        several requests when they exceed a frame)."""
        records: list[TaskHistoryRecord] = []
        page: History | None = History(limit, offset, task_type=task_type, status=status)
        while page is not None:
            reply = self._store.call(page, HistoryReply)
            records += [TaskHistoryRecord.from_row(r) for r in reply.rows]
            page = rest_of(page, reply)
        return records

    def result(self, task_id: int) -> TaskHistoryRecord | None:
        """The task's terminal history record with its ``result``, or None while it has none."""
        rows = self._store.call(GetResult(task_id), HistoryReply).rows
        return TaskHistoryRecord.from_row(rows[0]) if rows else None

    def wait_result(self, task_id: int, timeout: float | None = None) -> TaskHistoryRecord:
        """The task's terminal history record once it has one; ``TimeoutError`` after
        ``timeout`` seconds (see ``Scheduler.wait_result``)."""
        events = self.topology.events

        def subscribe() -> EventSubscriber:
            return EventSubscriber(
                events,
                TERMINAL_TOPICS,
                timeout=SUBSCRIBE_TIMEOUT_S,
                context=self._context,
                configure=_configure(self.security, events),
            )

        return wait_result_blocking(task_id, timeout, lambda: self.result(task_id), subscribe)

    def snapshot(self) -> SchedulerSnapshot:
        """Running tasks with progress estimates, queue counts, pressure, limits."""
        state = self._dispatcher.call(GetState(), DispatcherState)
        types = sorted({r.task.task_type for r in state.running})
        replies = self._store.pipeline([Counts(), *(HistoryStats(t) for t in types)])
        counts = replies[0]
        assert isinstance(counts, CountsReply)
        stats = {}
        for task_type, reply in zip(types, replies[1:], strict=True):
            assert isinstance(reply, TypeStatsReply)
            stats[task_type] = TypeStats.from_reply(reply)
        return SchedulerSnapshot.from_state(
            state, counts, progress_estimates(state.running, stats, datetime.now(UTC))
        )

    def subscribe(self, timeout: float = DEFAULT_TIMEOUT_S) -> EventSubscriber:
        """A live subscription to every event (close it before the client)."""
        events = self.topology.events
        return EventSubscriber(
            events,
            timeout=timeout,
            context=self._context,
            configure=_configure(self.security, events),
        )

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store.close()
        self._dispatcher.close()
        if self._own_context:
            self._context.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Endpoints):
    """``Client`` for asyncio: every call is a coroutine. Create it on the loop that uses it."""

    def __init__(
        self,
        target: Target = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        _check_options(timeout, retries)
        self.retries = retries
        self.topology, self.security, self._context, self._own_context = _connect(target, context)
        self._store = self._requester(AsyncRequester, self.topology.store, timeout)
        self._dispatcher = self._requester(AsyncRequester, self.topology.dispatcher, timeout)
        self._tasks = TaskStore(self._store)
        self._closed = False

    async def submit(self, submission: Submittable) -> SubmitOutcome:
        return (await self.submit_batch([submission]))[0]

    async def submit_batch(self, submissions: Sequence[Submittable]) -> list[SubmitOutcome]:
        message = _submit_message(submissions)
        if message is None:
            return []
        delay = FIRST_BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                return _outcomes(await self._store.call(message, SubmitReply))
            except ActorUnavailable:
                if attempt == self.retries:
                    raise
            await asyncio.sleep(delay)  # the Store may be restarting
            delay *= 2
        raise AssertionError("unreachable")

    async def cancel(self, task_id: int) -> bool:
        return bool((await self._dispatcher.call(CancelTask(task_id), Ok)).value)

    async def pause_all(self) -> None:
        await self._dispatcher.call(PauseAll(), Ok)

    async def resume_all(self) -> None:
        await self._dispatcher.call(ResumeAll(), Ok)

    async def lookup(self, task_type: str, data: bytes | str | None) -> TaskLookup:
        return await self._tasks.lookup(generate_dedup_key(task_type, _dedup_data(data)))

    async def history(self, limit: int = 50, offset: int = 0) -> list[TaskHistoryRecord]:
        return await self._tasks.history(limit, offset)

    def store(self) -> TaskStore:
        """Every query of the Store (``TaskStore``), over this client's connection."""
        return self._tasks

    async def wait_result(self, task_id: int, timeout: float | None = None) -> TaskHistoryRecord:
        """The task's terminal history record once it has one; ``TimeoutError`` after
        ``timeout`` seconds (see ``Scheduler.wait_result``)."""
        events = self.topology.events

        async def subscribe() -> EventSubscription:
            return await EventSubscription.open(
                self._context,
                events,
                TERMINAL_TOPICS,
                timeout=SUBSCRIBE_TIMEOUT_S,
                configure=_configure(self.security, events),
            )

        return await wait_result(task_id, timeout, lambda: self._tasks.result(task_id), subscribe)

    async def snapshot(self) -> SchedulerSnapshot:
        state, counts = await asyncio.gather(
            self._dispatcher.call(GetState(), DispatcherState), self._tasks.counts()
        )
        return SchedulerSnapshot.from_state(
            state, counts, await estimates(self._tasks, state.running)
        )

    async def subscribe(self, timeout: float = DEFAULT_TIMEOUT_S) -> EventSubscription:
        """A live subscription to every event (close it before the client)."""
        events = self.topology.events
        return await EventSubscription.open(
            self._context, events, timeout=timeout, configure=_configure(self.security, events)
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._store.close()
        self._dispatcher.close()
        if self._own_context:
            self._context.destroy(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
