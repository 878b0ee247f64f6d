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
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import zmq

from bus.client import AsyncRequester, RequestClient
from bus.errors import ActorUnavailable
from bus.kinds import (
    CountByTag,
    Counts,
    CountsReply,
    Dependencies,
    GetResult,
    History,
    HistoryReply,
    HistoryStats,
    IdsReply,
    ListTasks,
    Lookup,
    LookupReply,
    Ok,
    PauseRecurring,
    RecurringReply,
    RecurringSchedules,
    ResumeRecurring,
    RetryDeadLetter,
    Submit,
    SubmitReply,
    TagCountsReply,
    TasksReply,
    TypeStatsReply,
)
from bus.kinds_flow import FlowReply, GetFlow, GroupPauseReply
from bus.kinds_run import (
    CancelTask,
    CancelTasks,
    DispatcherState,
    GetLimiterState,
    GetState,
    LimiterState,
    PauseAll,
    ResumeAll,
    SetDefaultGroupLimit,
    SetGroupLimit,
    SetMaxConcurrency,
)
from bus.security import CurveSecurity
from bus.subscribe import Configure
from bus.topology import Topology
from taskmill import flow
from taskmill.config import GroupLimits
from taskmill.deploy import DeploymentConfig
from taskmill.flow import RateLimit
from taskmill.records import (
    EstimatedProgress,
    RecurringScheduleInfo,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskRecord,
    TypeStats,
)
from taskmill.results import SUBSCRIBE_TIMEOUT_S, TERMINAL_TOPICS, wait_result, wait_result_blocking
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import (
    TaskStore,
    cancelled_ids,
    estimates,
    progress_estimates,
    rest_of,
    tag_query,
)
from taskmill.subscription import TOPICS, EventSubscriber, EventSubscription
from taskmill.task import TaskSubmission, TypedTask, generate_dedup_key, wire_batch

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
    wire = wire_batch([s.to_submission() if isinstance(s, TypedTask) else s for s in submissions])
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
        self._limiter = self._requester(RequestClient, self.topology.limiter, timeout)
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

    def pause_all(self) -> None:
        """Pause every running task and stop dispatching until ``resume_all``."""
        self._dispatcher.call(PauseAll(), Ok)

    def resume_all(self) -> None:
        """Dispatch again after ``pause_all``."""
        self._dispatcher.call(ResumeAll(), Ok)

    def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        """Submit a dead-lettered task again (see ``AsyncClient.retry_dead_letter``)."""
        return _outcomes(self._store.call(RetryDeadLetter(history_id), SubmitReply))[0]

    def cancel_group(self, group: str) -> list[int]:
        """Cancel every active task of ``group`` (with their children); the cancelled ids."""
        return cancelled_ids(self._dispatcher.call(CancelTasks(group=group), Ok))

    def cancel_type(self, task_type: str) -> list[int]:
        """Cancel every active task of ``task_type`` (with their children); the cancelled ids."""
        return cancelled_ids(self._dispatcher.call(CancelTasks(task_type=task_type), Ok))

    def cancel_by_tag(self, key: str, value: str) -> list[int]:
        """Cancel every active task tagged ``key`` = ``value``; the cancelled ids."""
        return cancelled_ids(self._dispatcher.call(CancelTasks(tag=[key, value]), Ok))

    def task_ids_by_tags(self, tags: dict[str, str], status: str | None = None) -> list[int]:
        """Ids of the active tasks having every one of ``tags`` (and ``status``), in id order."""
        return self._store.call(tag_query(tags, status), IdsReply).ids

    def count_by_tag(self, key: str) -> dict[str, int]:
        """How many active tasks have each value of tag ``key``, the most used value first."""
        return dict(self._store.call(CountByTag(key), TagCountsReply).counts)

    def tag_values(self, key: str) -> list[str]:
        """The values of tag ``key`` among the active tasks, the most used first."""
        return list(self.count_by_tag(key))

    def set_rate_limit(self, task_type: str, limit: RateLimit | None) -> None:
        """See ``Scheduler.set_rate_limit``."""
        self._limiter.call(flow.set_rate_limit("type", task_type, limit), Ok)

    def set_group_rate_limit(self, group: str, limit: RateLimit | None) -> None:
        self._limiter.call(flow.set_rate_limit("group", group, limit), Ok)

    def set_group_weight(self, group: str, weight: float) -> None:
        self._limiter.call(flow.set_group_weight(group, weight), Ok)

    def remove_group_weight(self, group: str) -> None:
        self._limiter.call(flow.set_group_weight(group, None), Ok)

    def reset_group_weights(self) -> None:
        self._limiter.call(flow.reset_group_weights(), Ok)

    def set_group_minimum_slots(self, group: str, n: int) -> None:
        self._limiter.call(flow.set_group_minimum_slots(group, n), Ok)

    def pause_group(self, group: str, until: datetime | float | timedelta | None = None) -> None:
        """See ``Scheduler.pause_group``."""
        self._limiter.call(flow.pause_group(group, until), GroupPauseReply)

    def resume_group(self, group: str) -> None:
        self._limiter.call(flow.resume_group(group), GroupPauseReply)

    def pause_recurring(self, task_id: int) -> bool:
        """See ``AsyncClient.pause_recurring``."""
        return bool(self._store.call(PauseRecurring(task_id), Ok).value)

    def resume_recurring(self, task_id: int) -> bool:
        """See ``AsyncClient.resume_recurring``."""
        return bool(self._store.call(ResumeRecurring(task_id), SubmitReply).outcomes)

    def cancel_recurring(self, task_id: int) -> bool:
        """See ``AsyncClient.cancel_recurring``."""
        return bool(self._dispatcher.call(CancelTask(task_id, recurring=True), Ok).value)

    def recurring_schedules(self) -> list[RecurringScheduleInfo]:
        """Every recurring schedule, by id."""
        reply = self._store.call(RecurringSchedules(), RecurringReply)
        return [RecurringScheduleInfo.from_row(r) for r in reply.schedules]

    def lookup(self, task_type: str, data: bytes | str | None) -> TaskLookup:
        """Where the task of ``task_type`` and dedup data (its key, else its payload) is."""
        key = generate_dedup_key(task_type, _dedup_data(data))
        return TaskLookup.from_reply(self._store.call(Lookup(key), LookupReply))

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

    def task_dependencies(self, task_id: int) -> list[int]:
        """The ids of the active tasks ``task_id`` still waits for."""
        return self._store.call(Dependencies(task_id), IdsReply).ids

    def task_dependents(self, task_id: int) -> list[int]:
        """The ids of the blocked tasks waiting for ``task_id``."""
        return self._store.call(Dependencies(task_id, dependents=True), IdsReply).ids

    def blocked_tasks(self, limit: int = 1000) -> list[TaskRecord]:
        """Tasks waiting for their dependencies, in queue order."""
        rows = self._store.call(ListTasks("blocked", limit), TasksReply).tasks
        return [TaskRecord.from_row(r) for r in rows]

    def blocked_count(self) -> int:
        """Tasks waiting for their dependencies."""
        return self._store.call(Counts(), CountsReply).blocked

    def wait_result(self, task_id: int, timeout: float | None = None) -> TaskHistoryRecord:
        """The task's terminal history record once it has one; ``TimeoutError`` after
        ``timeout`` seconds (see ``AsyncClient.wait_result``)."""
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
        replies = self._store.pipeline([Counts(), GetFlow(), *(HistoryStats(t) for t in types)])
        counts, flow_state = replies[0], replies[1]
        assert isinstance(counts, CountsReply) and isinstance(flow_state, FlowReply)
        stats = {}
        for task_type, reply in zip(types, replies[2:], strict=True):
            assert isinstance(reply, TypeStatsReply)
            stats[task_type] = TypeStats.from_reply(reply)
        return SchedulerSnapshot.from_state(
            state, counts, progress_estimates(state.running, stats, datetime.now(UTC)), flow_state
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
        self._limiter.close()
        if self._own_context:
            self._context.destroy(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Endpoints):
    """``Client`` for asyncio: every call is a coroutine. Create it on the loop that uses it.

    The embedded ``Scheduler`` is this same client over inproc, plus the actors' lifecycle: a
    call behaves alike whichever of the two makes it (a submission is retried with its request
    id in both).
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
        self._store = self._requester(AsyncRequester, self.topology.store, timeout)
        self._dispatcher = self._requester(AsyncRequester, self.topology.dispatcher, timeout)
        self._limiter = self._requester(AsyncRequester, self.topology.limiter, timeout)
        self._tasks = TaskStore(self._store)
        self._subscriptions: weakref.WeakSet[EventSubscription] = weakref.WeakSet()
        self._closed = False

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, submission: Submittable) -> SubmitOutcome:
        """Submit one task (a ``TaskSubmission`` or a ``TypedTask``); its outcome."""
        return (await self.submit_batch([submission]))[0]

    async def submit_batch(self, submissions: Sequence[Submittable]) -> list[SubmitOutcome]:
        """Submit many tasks in one transaction; one outcome each, in order."""
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

    async def submit_typed(self, task: TypedTask) -> SubmitOutcome:
        return await self.submit(task.to_submission())

    async def submit_typed_at(self, task: TypedTask, priority: int) -> SubmitOutcome:
        return await self.submit(task.to_submission(priority))

    async def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        """Submit a dead-lettered task again (retry count 0) and drop its dead-letter row."""
        return await self._tasks.retry_dead_letter(history_id)

    # -- queries -----------------------------------------------------------------------------

    async def cancel_group(self, group: str) -> list[int]:
        """Cancel every active task of ``group`` (with their children); the cancelled ids."""
        return await self._cancel_where(CancelTasks(group=group))

    async def cancel_type(self, task_type: str) -> list[int]:
        """Cancel every active task of ``task_type`` (with their children); the cancelled ids."""
        return await self._cancel_where(CancelTasks(task_type=task_type))

    async def cancel_by_tag(self, key: str, value: str) -> list[int]:
        """Cancel every active task tagged ``key`` = ``value`` (with their children); the
        cancelled ids."""
        return await self._cancel_where(CancelTasks(tag=[key, value]))

    async def _cancel_where(self, message: CancelTasks) -> list[int]:
        return cancelled_ids(await self._dispatcher.call(message, Ok))

    async def task_ids_by_tags(self, tags: dict[str, str], status: str | None = None) -> list[int]:
        return await self._tasks.task_ids_by_tags(tags, status)

    async def count_by_tag(self, key: str) -> dict[str, int]:
        return await self._tasks.count_by_tag(key)

    async def tag_values(self, key: str) -> list[str]:
        return await self._tasks.tag_values(key)

    async def set_rate_limit(self, task_type: str, limit: RateLimit | None) -> None:
        """Limit how fast tasks of ``task_type`` start (None removes the limit, the one it was
        built with included); kept across restarts."""
        await self._limiter.call(flow.set_rate_limit("type", task_type, limit), Ok)

    async def set_group_rate_limit(self, group: str, limit: RateLimit | None) -> None:
        """Limit how fast tasks of ``group`` start (None removes the limit)."""
        await self._limiter.call(flow.set_rate_limit("group", group, limit), Ok)

    async def set_group_weight(self, group: str, weight: float) -> None:
        """``group``'s fair share of the slots, relative to the other groups' weights; kept
        across restarts. Publishes ``GroupWeightChanged`` when its weight changed."""
        await self._limiter.call(flow.set_group_weight(group, weight), Ok)

    async def remove_group_weight(self, group: str) -> None:
        """``group`` has the default weight again (whatever it was built with)."""
        await self._limiter.call(flow.set_group_weight(group, None), Ok)

    async def reset_group_weights(self) -> None:
        """Every group has the default weight again (the default weight stays)."""
        await self._limiter.call(flow.reset_group_weights(), Ok)

    async def set_group_minimum_slots(self, group: str, n: int) -> None:
        """Slots ``group`` gets before the weights share the rest (0: none, whatever it was
        built with); kept across restarts."""
        await self._limiter.call(flow.set_group_minimum_slots(group, n), Ok)

    async def pause_group(
        self, group: str, until: datetime | float | timedelta | None = None
    ) -> None:
        """No task of ``group`` starts until ``resume_group`` (or ``until``: an instant, or
        seconds from now); kept across restarts. Its running tasks finish their run."""
        await self._limiter.call(flow.pause_group(group, until), GroupPauseReply)

    async def resume_group(self, group: str) -> None:
        """Let ``group``'s tasks start again."""
        await self._limiter.call(flow.resume_group(group), GroupPauseReply)

    async def pause_recurring(self, task_id: int) -> bool:
        """No next instance of the recurring schedule ``task_id`` names (its first task's id,
        or an active instance's) until ``resume_recurring``; a running or due instance still
        runs. False when there is no such schedule."""
        return await self._tasks.pause_recurring(task_id)

    async def resume_recurring(self, task_id: int) -> bool:
        """Resume the schedule: with no instance active, the next is inserted at once."""
        return await self._tasks.resume_recurring(task_id)

    async def cancel_recurring(self, task_id: int) -> bool:
        """End the schedule: its active instance is cancelled (``Cancelled``, history
        ``cancelled``) and no other follows. False when there is no such schedule."""
        reply = await self._dispatcher.call(CancelTask(task_id, recurring=True), Ok)
        return bool(reply.value)

    async def lookup(self, task_type: str, data: bytes | str | None) -> TaskLookup:
        """Where the task of ``task_type`` and dedup data (its key, else its payload) is."""
        return await self._tasks.lookup(generate_dedup_key(task_type, _dedup_data(data)))

    async def task_lookup(self, task_type: str, data: bytes | None) -> TaskLookup:
        return await self.lookup(task_type, data)

    async def lookup_typed(self, task: TypedTask) -> TaskLookup:
        return await self._tasks.lookup(task.to_submission().dedup_key)

    async def history(self, limit: int = 50, offset: int = 0) -> list[TaskHistoryRecord]:
        return await self._tasks.history(limit, offset)

    def store(self) -> TaskStore:
        """Every query of the Store (``TaskStore``), over this client's connection."""
        return self._tasks

    async def wait_result(self, task_id: int, timeout: float | None = None) -> TaskHistoryRecord:
        """The task's terminal history record (completed, failed, cancelled, dead_letter) once
        it has one, with its ``result``; ``TimeoutError`` after ``timeout`` seconds."""
        return await wait_result(
            task_id,
            timeout,
            lambda: self._tasks.result(task_id),
            lambda: self._subscribe(TERMINAL_TOPICS, SUBSCRIBE_TIMEOUT_S),
        )

    async def _state(self) -> DispatcherState:
        return await self._dispatcher.call(GetState(), DispatcherState)

    async def active_tasks(self) -> list[TaskRecord]:
        return [TaskRecord.from_row(r.task) for r in (await self._state()).running]

    async def estimated_progress(self) -> list[EstimatedProgress]:
        return await estimates(self._tasks, (await self._state()).running)

    async def snapshot(self) -> SchedulerSnapshot:
        """Running tasks with progress estimates, queue counts, pressure, limits, rate limits
        and paused groups."""
        state, counts, flow_state = await asyncio.gather(
            self._state(),
            self._tasks.counts(),
            self._store.call(GetFlow(), FlowReply),
        )
        return SchedulerSnapshot.from_state(
            state, counts, await estimates(self._tasks, state.running), flow_state
        )

    async def subscribe(self, timeout: float = DEFAULT_TIMEOUT_S) -> EventSubscription:
        """A live subscription to every event: nothing published after this returns is missed.
        Closing the client closes it too."""
        return await self._subscribe(TOPICS, timeout)

    async def _subscribe(
        self, topics: Sequence[bytes], timeout: float = DEFAULT_TIMEOUT_S
    ) -> EventSubscription:
        if self._closed:
            raise ActorUnavailable("the client is closed")
        events = self.topology.events
        subscription = await EventSubscription.open(
            self._context, events, topics, timeout, configure=_configure(self.security, events)
        )
        self._subscriptions.add(subscription)
        return subscription

    # -- controls ----------------------------------------------------------------------------

    async def cancel(self, task_id: int) -> bool:
        """Cancel a task (and its children); False when no active task has that id."""
        return bool((await self._dispatcher.call(CancelTask(task_id), Ok)).value)

    async def pause_all(self) -> None:
        await self._dispatcher.call(PauseAll(), Ok)

    async def resume_all(self) -> None:
        await self._dispatcher.call(ResumeAll(), Ok)

    async def is_paused(self) -> bool:
        return (await self._state()).is_paused

    async def set_max_concurrency(self, n: int) -> None:
        await self._dispatcher.call(SetMaxConcurrency(n), Ok)

    async def max_concurrency(self) -> int:
        return (await self._state()).max_concurrency

    async def set_group_limit(self, group: str, n: int) -> None:
        """Limit ``group`` to ``n`` running tasks (0 blocks it); applies at once."""
        await self._limiter.call(SetGroupLimit(group, n), Ok)

    async def remove_group_limit(self, group: str) -> None:
        """Fall back to the default limit for ``group``."""
        await self._limiter.call(SetGroupLimit(group, None), Ok)

    async def set_default_group_concurrency(self, n: int) -> None:
        """The limit of groups without their own (0: unlimited)."""
        await self._limiter.call(SetDefaultGroupLimit(n), Ok)

    async def group_limits(self) -> GroupLimits:
        """The limits in force (a copy)."""
        state = await self._limiter.call(GetLimiterState(), LimiterState)
        return GroupLimits(state.default, dict(state.overrides))

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the subscriptions this client opened, then its sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close_requesters()
        await self._close_subscriptions()
        if self._own_context:
            self._context.destroy(linger=0)

    def _close_requesters(self) -> None:
        for requester in (self._store, self._dispatcher, self._limiter):
            requester.close()

    async def _close_subscriptions(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
