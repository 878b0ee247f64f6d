"""``Scheduler``: the user's door to an embedded deployment (every actor in one thread of this
process, over inproc; ``executor_thread`` and ``separate_threads`` give threads of their own).

It starts the actors, forwards each call as a message and turns replies into public types. It
decides nothing itself: dispatch, preemption, retries and dedup happen in the actors.

Shutdown order matters: the Dispatcher stops dispatching and drains (or cancels) running tasks
first; the executors whose tokens it cancelled get up to ``STOP_GRACE_S`` to return on their
own; then the actors stop, the executor host first (the coroutines still running are cancelled
and get a short grace to finish cancelling; threads they started are not waited for), the Store
last, so every result reaches the database before it is checkpointed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Sequence
from typing import Any

import zmq

from actors.dispatcher.actor import Dispatcher
from actors.host.actor import STOP_GRACE_S, ExecutorHost
from actors.publisher.actor import EventPublisher
from bus.cancel import CancellationToken
from bus.client import AsyncRequester
from bus.errors import ActorUnavailable
from bus.hosting import ActorThread
from bus.kinds import Ok, Submit, SubmitReply
from bus.kinds_run import (
    CancelTask,
    DispatcherState,
    GetLimiterState,
    GetState,
    LimiterState,
    PauseAll,
    ResumeAll,
    SetDefaultGroupLimit,
    SetGroupLimit,
    SetMaxConcurrency,
    Shutdown,
    Start,
)
from bus.runtime import Actor
from bus.topology import Topology
from taskmill.builder import AppSpec, SchedulerBuilder
from taskmill.config import GroupLimits
from taskmill.context import make_runner
from taskmill.monitoring import monitor_actor
from taskmill.records import EstimatedProgress, SubmitOutcome, TaskHistoryRecord, TaskRecord
from taskmill.results import TERMINAL_TOPICS, wait_result
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import TaskStore, estimates
from taskmill.subscription import TOPICS, EventSubscription
from taskmill.task import TaskSubmission, TypedTask, generate_dedup_key
from taskmill.wiring import dispatcher_settings, host_settings, limiter_actor, store_actor

log = logging.getLogger("taskmill.scheduler")

__all__ = ["Scheduler"]


class Scheduler:
    """An embedded scheduler. Build it with ``await Scheduler.builder()...build()``."""

    def __init__(
        self,
        spec: AppSpec,
        context: zmq.Context[Any],
        topology: Topology,
        threads: dict[str, ActorThread],
        host: ExecutorHost,
    ) -> None:
        self._spec = spec
        self._context = context
        self.topology = topology
        self._threads = threads
        self._host = host
        self._store = AsyncRequester(context, topology.store)
        self._dispatcher = AsyncRequester(context, topology.dispatcher)
        self._limiter = AsyncRequester(context, topology.limiter)
        self._task_store = TaskStore(self._store)
        self._closed = False
        self._closing = asyncio.Event()
        self._running = False
        self._subscriptions: weakref.WeakSet[EventSubscription] = weakref.WeakSet()

    @staticmethod
    def builder() -> SchedulerBuilder:
        return SchedulerBuilder()

    @classmethod
    async def start(cls, spec: AppSpec) -> Scheduler:
        """Start every actor (the Dispatcher idle until ``run``); called by ``build()``."""
        context: zmq.Context[Any] = zmq.Context()
        topology = Topology.ipc(spec.run_dir) if spec.run_dir else Topology.inproc()
        threads: dict[str, ActorThread] = {}
        runners = {t: make_runner(e) for t, e in spec.executors.items()}
        state = {type(obj): obj for obj in spec.app_state}
        settings = host_settings(spec, topology, capacity=max(32, spec.max_concurrency))
        host = ExecutorHost(runners, settings, state=state)
        # Set up in this order (the Store first, so it is the last closed).
        actors: list[tuple[str, Actor, str]] = [
            ("store", store_actor(spec, topology), topology.store_control),
            (
                "events",
                EventPublisher(
                    topology.events_in,
                    topology.events,
                    metrics_port=spec.metrics_port,
                    watch=topology,
                    metrics_interval_s=spec.metrics_interval,
                ),
                topology.events_control,
            ),
            ("limiter", limiter_actor(spec, topology), topology.limiter_control),
            ("monitor", monitor_actor(spec, topology), topology.monitor_control),
            (
                "dispatcher",
                Dispatcher(dispatcher_settings(spec, topology, autostart=False)),
                topology.dispatcher_control,
            ),
        ]
        worker = ("worker", host, topology.host_control(host.settings.host_id))
        alone = spec.separate_threads or spec.executor_thread
        if not alone:
            actors.append(worker)  # set up last, so stopped first
        try:
            if spec.separate_threads:
                for name, actor, control in actors:
                    thread = ActorThread(actor, context, control)
                    threads[name] = await asyncio.to_thread(thread.start)
            else:
                # One thread for all the actors: under the GIL, a message between threads costs
                # a wake-up and a GIL hand-off; within one loop it costs neither. Same actors,
                # same sockets: only the scheduling of their handlers changes. With the host in
                # the group, asyncio drives the loop (the executors' coroutines run on it).
                group = ActorThread([(a, c) for _, a, c in actors], context, name="actors")
                threads["actors"] = await asyncio.to_thread(group.start)
            if alone:
                _, host_actor, control = worker
                thread = ActorThread(host_actor, context, control)
                threads["worker"] = await asyncio.to_thread(thread.start)
        except BaseException:
            await asyncio.to_thread(_stop_all, threads)
            context.term()
            raise
        return cls(spec, context, topology, threads, host)

    # -- running -----------------------------------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Dispatch until ``token`` is cancelled, then shut down per the shutdown mode."""
        await self._start_dispatching()
        try:
            # Ends on the token, or when close() is called from elsewhere (a signal handler).
            stopped = asyncio.ensure_future(token.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                await asyncio.wait({stopped, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                closing.cancel()
        finally:
            await self.close()

    async def _start_dispatching(self) -> None:
        if self._running:
            raise RuntimeError("this scheduler is already running")
        self._running = True
        await self._dispatcher.call(Start(), Ok)

    async def __aenter__(self) -> Scheduler:
        """Run in the background for the body of ``async with``; shut down on exit."""
        await self._start_dispatching()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Shut down (per the shutdown mode) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        mode = self._spec.shutdown_mode
        drain = mode.timeout_s if mode.is_graceful else 0.0
        try:
            await self._dispatcher.call(Shutdown(drain), Ok, timeout=drain + 10.0)
        except Exception as exc:  # still stop every actor below
            log.warning("dispatcher shutdown failed: %s", exc)
        else:
            # The Dispatcher has cancelled the tokens of what still ran: let those executors
            # stop on their own before the host's loop stops and cancels their coroutines.
            await asyncio.to_thread(self._host.wait_until_idle, STOP_GRACE_S)
        for requester in (self._store, self._dispatcher, self._limiter):
            requester.close()
        errors = await asyncio.to_thread(_stop_all, self._threads)
        # Subscriptions close last: events published while the actors stopped still arrive.
        for subscription in list(self._subscriptions):
            await subscription.close()
        # Every actor thread has stopped; destroy closes whatever a caller left open.
        self._context.destroy(linger=0)
        if errors:
            raise errors[0]

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome:
        return (await self.submit_batch([submission]))[0]

    async def submit_batch(self, submissions: Sequence[TaskSubmission]) -> list[SubmitOutcome]:
        """Submit many tasks in one transaction; one outcome each, in order."""
        wire = [s.to_wire() for s in submissions]
        if not wire:
            return []
        reply = await self._store.call(Submit(wire), SubmitReply)
        return [SubmitOutcome.from_wire(o) for o in reply.outcomes]

    async def submit_typed(self, task: TypedTask) -> SubmitOutcome:
        return await self.submit(task.to_submission())

    async def submit_typed_at(self, task: TypedTask, priority: int) -> SubmitOutcome:
        return await self.submit(task.to_submission(priority))

    async def task_lookup(self, task_type: str, data: bytes | None) -> Any:
        return await self._task_store.lookup(generate_dedup_key(task_type, data))

    async def lookup_typed(self, task: TypedTask) -> Any:
        return await self._task_store.lookup(task.to_submission().dedup_key)

    def store(self) -> TaskStore:
        return self._task_store

    async def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        """Submit a dead-lettered task again (retry count 0) and drop its dead-letter row."""
        return await self._task_store.retry_dead_letter(history_id)

    async def wait_result(self, task_id: int, timeout: float | None = None) -> TaskHistoryRecord:
        """The task's terminal history record (completed, failed, cancelled, dead_letter) once
        it has one, with its ``result``; ``TimeoutError`` after ``timeout`` seconds."""
        return await wait_result(
            task_id,
            timeout,
            lambda: self._task_store.result(task_id),
            lambda: self._subscribe(TERMINAL_TOPICS),
        )

    # -- controls ----------------------------------------------------------------------------

    async def cancel(self, task_id: int) -> bool:
        reply = await self._dispatcher.call(CancelTask(task_id), Ok)
        return bool(reply.value)

    async def pause_all(self) -> None:
        await self._dispatcher.call(PauseAll(), Ok)

    async def resume_all(self) -> None:
        await self._dispatcher.call(ResumeAll(), Ok)

    async def _state(self) -> DispatcherState:
        return await self._dispatcher.call(GetState(), DispatcherState)

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

    async def register_state(self, obj: object) -> None:
        self._host.register_state(obj)

    # -- observing ---------------------------------------------------------------------------

    async def active_tasks(self) -> list[TaskRecord]:
        return [TaskRecord.from_row(r.task) for r in (await self._state()).running]

    async def estimated_progress(self) -> list[EstimatedProgress]:
        return await estimates(self._task_store, (await self._state()).running)

    async def snapshot(self) -> SchedulerSnapshot:
        state, counts = await asyncio.gather(self._state(), self._task_store.counts())
        progress = await estimates(self._task_store, state.running)
        return SchedulerSnapshot.from_state(state, counts, progress)

    async def subscribe(self) -> EventSubscription:
        """A live subscription to every event: nothing published after this returns is missed."""
        return await self._subscribe()

    async def _subscribe(self, topics: Sequence[bytes] = TOPICS) -> EventSubscription:
        if self._closed:
            raise ActorUnavailable("the scheduler is closed")
        subscription = await EventSubscription.open(self._context, self.topology.events, topics)
        self._subscriptions.add(subscription)
        return subscription


def _stop_all(threads: dict[str, ActorThread]) -> list[BaseException]:
    errors: list[BaseException] = []
    # The monitor pushes events too: stop it before the publisher.
    for name in ("worker", "dispatcher", "monitor", "limiter", "events", "store", "actors"):
        thread = threads.get(name)
        if thread is None:
            continue
        try:
            thread.stop()
        except BaseException as exc:
            log.error("actor %s failed: %s", name, exc)
            errors.append(exc)
    with contextlib.suppress(Exception):
        threads.clear()
    return errors
