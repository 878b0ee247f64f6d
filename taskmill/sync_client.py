"""``Client``: a running deployment's blocking client (scripts, the CLI, threads).

The same calls as ``AsyncClient``, made one at a time; how it reaches a deployment, and how it
retries a submission safely, is ``taskmill.connection``'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import zmq

from bus.client import RequestClient
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
    GetState,
    PauseAll,
    ResumeAll,
)
from taskmill import flow
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
    RecurringScheduleInfo,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskRecord,
    TypeStats,
)
from taskmill.results import SUBSCRIBE_TIMEOUT_S, TERMINAL_TOPICS, wait_result_blocking
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import (
    cancelled_ids,
    progress_estimates,
    rest_of,
    tag_query,
)
from taskmill.subscription import EventSubscriber
from taskmill.task import generate_dedup_key

__all__ = ["Client"]


class Client(Endpoints[RequestClient]):
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
        super().__init__(RequestClient, target, timeout, retries, context)

    # -- submitting --------------------------------------------------------------------------

    def submit(self, submission: Submittable) -> SubmitOutcome:
        """Submit one task (a ``TaskSubmission`` or a ``TypedTask``); its outcome."""
        return self.submit_batch([submission])[0]

    def submit_batch(self, submissions: Sequence[Submittable]) -> list[SubmitOutcome]:
        """Submit many tasks in one transaction; one outcome each, in order."""
        message = submit_message(submissions)
        if message is None:
            return []
        delay = FIRST_BACKOFF_S
        for attempt in range(self.retries + 1):
            try:
                return outcomes(self._store.call(message, SubmitReply))
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
        return outcomes(self._store.call(RetryDeadLetter(history_id), SubmitReply))[0]

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
        self._limiter.call(flow.remove_group_weight(group), Ok)

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
        key = generate_dedup_key(task_type, dedup_data(data))
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
                configure=curve_configure(self.security, events),
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
            configure=curve_configure(self.security, events),
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
