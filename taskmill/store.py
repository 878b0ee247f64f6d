"""``TaskStore``: queries of the Store actor, as coroutines returning public records."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from bus.client import AsyncRequester
from bus.kinds import (
    AvgThroughput,
    Children,
    CountByTag,
    Counts,
    CountsReply,
    DeadLetter,
    Dependencies,
    Depth,
    DepthReply,
    GetResult,
    GetTask,
    History,
    HistoryReply,
    HistoryStats,
    IdsReply,
    ListTasks,
    Lookup,
    LookupReply,
    Ok,
    PauseRecurring,
    Prune,
    RecurringReply,
    RecurringSchedules,
    ResumeRecurring,
    RetryDeadLetter,
    SubmitReply,
    TagCountsReply,
    TaskIdsByTags,
    TaskReply,
    TasksReply,
    ThroughputReply,
    TypeStatsReply,
)
from bus.kinds_run import RunningTask
from taskmill.progress import estimate_progress
from taskmill.records import (
    EstimatedProgress,
    QueueDepth,
    RecurringScheduleInfo,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskRecord,
    TypeStats,
    ms_to_datetime,
)

__all__ = ["TaskStore"]

Paged = TypeVar("Paged", bound=History | DeadLetter | ListTasks)
"""A query the Store answers page by page."""


def rest_of(query: Paged, reply: HistoryReply | TasksReply) -> Paged | None:
    """The request for what ``reply`` left out of ``query`` (the Store keeps each reply within a
    frame and says where the rest start), or None when it answered the whole query."""
    got = len(reply.rows if isinstance(reply, HistoryReply) else reply.tasks)
    if reply.next_offset is None or not got or got >= query.limit:
        return None
    return dataclasses.replace(query, limit=query.limit - got, offset=reply.next_offset)


class TaskStore:
    """A client of the Store actor. Every query is a coroutine."""

    def __init__(self, requester: AsyncRequester) -> None:
        self._store = requester

    async def task_by_id(self, task_id: int) -> TaskRecord | None:
        row = (await self._store.call(GetTask(id=task_id), TaskReply)).task
        return TaskRecord.from_row(row) if row is not None else None

    async def task_by_key(self, key: str) -> TaskRecord | None:
        row = (await self._store.call(GetTask(key=key), TaskReply)).task
        return TaskRecord.from_row(row) if row is not None else None

    async def _tasks(self, status: str, limit: int) -> list[TaskRecord]:
        """The tasks of ``status``, page after page (tasks may change status between two
        pages: a list is a view of a moving queue)."""
        records: list[TaskRecord] = []
        page: ListTasks | None = ListTasks(status, limit)
        while page is not None:
            reply = await self._store.call(page, TasksReply)
            records += [TaskRecord.from_row(r) for r in reply.tasks]
            page = rest_of(page, reply)
        return records

    async def pending_tasks(self, limit: int = 100) -> list[TaskRecord]:
        return await self._tasks("pending", limit)

    async def scheduled_tasks(self, limit: int = 100) -> list[TaskRecord]:
        """Tasks not due yet, the soonest first (their records say ``pending``)."""
        return await self._tasks("scheduled", limit)

    async def running_tasks(self, limit: int = 1000) -> list[TaskRecord]:
        return await self._tasks("running", limit)

    async def paused_tasks(self, limit: int = 1000) -> list[TaskRecord]:
        return await self._tasks("paused", limit)

    async def blocked_tasks(self, limit: int = 1000) -> list[TaskRecord]:
        """Tasks waiting for their dependencies, in queue order."""
        return await self._tasks("blocked", limit)

    async def blocked_count(self) -> int:
        """Tasks waiting for their dependencies."""
        return (await self.counts()).blocked

    async def task_dependencies(self, task_id: int) -> list[int]:
        """The ids of the active tasks ``task_id`` still waits for (a completed dependency is
        no longer listed)."""
        return (await self._store.call(Dependencies(task_id), IdsReply)).ids

    async def task_dependents(self, task_id: int) -> list[int]:
        """The ids of the blocked tasks waiting for ``task_id``."""
        return (await self._store.call(Dependencies(task_id, dependents=True), IdsReply)).ids

    async def counts(self) -> CountsReply:
        return await self._store.call(Counts(), CountsReply)

    async def queue_depth(self) -> list[QueueDepth]:
        """Pending tasks by priority and group, the most urgent first (groups by name, the
        ungrouped first)."""
        rows = (await self._store.call(Depth(), DepthReply)).rows
        return [QueueDepth.from_wire(r) for r in rows]

    async def children(self, parent_id: int, limit: int = 100) -> list[TaskRecord]:
        """The active children of ``parent_id``, oldest first (finished ones are in history,
        with ``parent_id`` set)."""
        return [
            TaskRecord.from_row(r)
            for r in (await self._store.call(Children(parent_id, limit), TasksReply)).tasks
        ]

    async def pending_count(self) -> int:
        return (await self.counts()).pending

    async def running_count(self) -> int:
        return (await self.counts()).running

    async def paused_count(self) -> int:
        return (await self.counts()).paused

    async def waiting_count(self) -> int:
        return (await self.counts()).waiting

    async def scheduled_count(self) -> int:
        """Tasks not due yet (a future ``run_after``, or a retry waiting out its delay)."""
        return (await self.counts()).scheduled

    async def _history(self, query: History | DeadLetter) -> list[TaskHistoryRecord]:
        records: list[TaskHistoryRecord] = []
        page: History | DeadLetter | None = query
        while page is not None:
            reply = await self._store.call(page, HistoryReply)
            records += [TaskHistoryRecord.from_row(r) for r in reply.rows]
            page = rest_of(page, reply)
        return records

    async def history(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        task_type: str | None = None,
        status: str | None = None,
    ) -> list[TaskHistoryRecord]:
        """Terminal runs, newest first; only those of ``task_type`` and/or ``status`` (a
        ``HistoryStatus`` value) when given."""
        return await self._history(History(limit, offset, task_type=task_type, status=status))

    async def history_by_type(self, task_type: str, limit: int = 50) -> list[TaskHistoryRecord]:
        return await self._history(History(limit, 0, task_type=task_type))

    async def history_by_key(self, key: str) -> list[TaskHistoryRecord]:
        return await self._history(History(1000, 0, key=key))

    async def failed_tasks(self, limit: int = 50) -> list[TaskHistoryRecord]:
        return await self._history(History(limit, 0, status="failed"))

    async def dead_letter_tasks(self, limit: int = 50, offset: int = 0) -> list[TaskHistoryRecord]:
        """Tasks whose retryable failures used up their retries, newest first."""
        return await self._history(DeadLetter(limit, offset))

    async def retry_dead_letter(self, history_id: int) -> SubmitOutcome:
        """Submit a dead-lettered task again (retry count 0) and drop its dead-letter row;
        ``duplicate`` when an active task has its key. ``InvalidRequest`` for an id that is no
        dead-letter row."""
        reply = await self._store.call(RetryDeadLetter(history_id), SubmitReply)
        return SubmitOutcome.from_wire(reply.outcomes[0])

    async def result(self, task_id: int) -> TaskHistoryRecord | None:
        """The task's newest terminal history row (any status, with its ``result``), or None
        while it has none."""
        rows = (await self._store.call(GetResult(task_id), HistoryReply)).rows
        return TaskHistoryRecord.from_row(rows[0]) if rows else None

    async def recurring_schedules(self) -> list[RecurringScheduleInfo]:
        """Every recurring schedule, by id (see ``RecurringScheduleInfo``)."""
        reply = await self._store.call(RecurringSchedules(), RecurringReply)
        return [RecurringScheduleInfo.from_row(r) for r in reply.schedules]

    async def pause_recurring(self, task_id: int) -> bool:
        """Insert no next instance of the schedule ``task_id`` names until it is resumed (an
        instance already there still runs); False when there is no such schedule."""
        return bool((await self._store.call(PauseRecurring(task_id), Ok)).value)

    async def resume_recurring(self, task_id: int) -> bool:
        """Resume the schedule; when none of its instances is active, the next is inserted at
        once (due when it would have been, or now). False when there is no such schedule."""
        return bool((await self._store.call(ResumeRecurring(task_id), SubmitReply)).outcomes)

    async def history_stats(self, task_type: str) -> TypeStats:
        return TypeStats.from_reply(await self._store.call(HistoryStats(task_type), TypeStatsReply))

    async def avg_throughput(self, task_type: str, n: int = 20) -> tuple[float, float]:
        """Mean (read, write) bytes/s over the ``n`` newest completed runs with a duration."""
        reply = await self._store.call(AvgThroughput(task_type, n), ThroughputReply)
        return reply.read_bytes_per_sec, reply.write_bytes_per_sec

    async def prune_history_by_count(self, keep: int) -> int:
        return int((await self._store.call(Prune(keep=keep), Ok)).value)

    async def prune_history_by_age(self, days: float) -> int:
        return int((await self._store.call(Prune(days=days), Ok)).value)

    async def lookup(self, key: str) -> TaskLookup:
        return TaskLookup.from_reply(await self._store.call(Lookup(key), LookupReply))

    async def task_ids_by_tags(
        self, tags: Mapping[str, str], status: str | None = None
    ) -> list[int]:
        """Ids of the active tasks having every one of ``tags`` (and ``status``: a
        ``TaskStatus``, when given), in id order."""
        return (await self._store.call(tag_query(tags, status), IdsReply)).ids

    async def count_by_tag(self, key: str) -> dict[str, int]:
        """How many active tasks have each value of tag ``key``, the most used value first."""
        return dict((await self._store.call(CountByTag(key), TagCountsReply)).counts)

    async def tag_values(self, key: str) -> list[str]:
        """The values of tag ``key`` among the active tasks, the most used first."""
        return list(await self.count_by_tag(key))


def cancelled_ids(reply: Ok) -> list[int]:
    """The ids a bulk cancel (``dispatcher.cancel_where``) answered with."""
    return [int(task_id) for task_id in reply.value or []]


def tag_query(tags: Mapping[str, str], status: str | None) -> TaskIdsByTags:
    """The Store request of ``task_ids_by_tags``."""
    if not isinstance(tags, Mapping) or not tags:
        raise ValueError("give at least one tag to look for, as {key: value}")
    return TaskIdsByTags(dict(tags), None if status is None else str(status))


async def estimates(store: TaskStore, running: Sequence[RunningTask]) -> list[EstimatedProgress]:
    """Progress estimates for running tasks, from their reports and their types' mean duration."""
    types = sorted({r.task.task_type for r in running})
    stats = await asyncio.gather(*(store.history_stats(t) for t in types))
    return progress_estimates(running, dict(zip(types, stats, strict=True)), datetime.now(UTC))


def progress_estimates(
    running: Sequence[RunningTask], stats: Mapping[str, TypeStats], now: datetime
) -> list[EstimatedProgress]:
    """The estimates of docs/semantics.md for ``running``, given each type's history statistics."""
    out = []
    for r in running:
        s = stats[r.task.task_type]
        reported = None
        if r.progress is not None:
            reported = (r.progress.percent, ms_to_datetime(r.progress.reported_at_ms))
        estimate = estimate_progress(
            TaskRecord.from_row(r.task),
            ms_to_datetime(r.started_at_ms),
            reported,
            s.avg_duration_ms / 1000 if s.count else None,
            now,
        )
        if r.progress is not None and r.progress.bytes_done is not None:
            estimate = dataclasses.replace(
                estimate,
                bytes_done=r.progress.bytes_done,
                bytes_total=r.progress.bytes_total,
                throughput_bps=r.progress.throughput_bps,
                eta_s=r.progress.eta_s,
            )
        out.append(estimate)
    return out
