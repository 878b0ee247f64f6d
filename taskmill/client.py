"""``AsyncClient``: a running deployment's client for asyncio (dashboards, async producers).

The embedded ``Scheduler`` is this client over inproc plus the actors' lifecycle. How it reaches
a deployment, and how it retries a submission safely, is ``taskmill.connection``'s.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import zmq

from bus.client import AsyncRequester
from bus.errors import ActorUnavailable
from bus.kinds import (
    Ok,
    SubmitReply,
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
from taskmill import flow
from taskmill.config import GroupLimits
from taskmill.connection import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    FIRST_BACKOFF_S,
    Endpoints,
    Submittable,
    Target,
    curve_configure,
    dedup_data,
    outcomes,
    submit_message,
)
from taskmill.flow import RateLimit
from taskmill.records import (
    EstimatedProgress,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskRecord,
)
from taskmill.results import SUBSCRIBE_TIMEOUT_S, TERMINAL_TOPICS, wait_result
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import (
    TaskStore,
    cancelled_ids,
    estimates,
)
from taskmill.subscription import TOPICS, EventSubscription
from taskmill.task import generate_dedup_key
from taskmill.typed import TypedTask

__all__ = ["AsyncClient"]


class AsyncClient(Endpoints[AsyncRequester]):
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
        super().__init__(AsyncRequester, target, timeout, retries, context)
        self._tasks = TaskStore(self._store)
        self._subscriptions: weakref.WeakSet[EventSubscription] = weakref.WeakSet()

    # -- submitting --------------------------------------------------------------------------

    async def submit(self, submission: Submittable) -> SubmitOutcome:
        """Submit one task (a ``TaskSubmission`` or a ``TypedTask``); its outcome."""
        return (await self.submit_batch([submission]))[0]

    async def submit_batch(self, submissions: Sequence[Submittable]) -> list[SubmitOutcome]:
        """Submit many tasks in one transaction; one outcome each, in order."""
        message = submit_message(submissions)
        if message is None:
            return []
        delay = FIRST_BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                return outcomes(await self._store.call(message, SubmitReply))
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
        await self._limiter.call(flow.remove_group_weight(group), Ok)

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
        return await self._tasks.lookup(generate_dedup_key(task_type, dedup_data(data)))

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
            self._context, events, topics, timeout, configure=curve_configure(self.security, events)
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
