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
    Counts,
    CountsReply,
    DeadLetter,
    GetResult,
    GetTask,
    History,
    HistoryReply,
    HistoryStats,
    ListTasks,
    Lookup,
    LookupReply,
    Ok,
    Prune,
    RetryDeadLetter,
    SubmitReply,
    TaskReply,
    TasksReply,
    ThroughputReply,
    TypeStatsReply,
)
from bus.kinds_run import RunningTask
from taskmill.progress import estimate_progress
from taskmill.records import (
    EstimatedProgress,
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

    async def counts(self) -> CountsReply:
        return await self._store.call(Counts(), CountsReply)

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

    async def history(self, limit: int = 50, offset: int = 0) -> list[TaskHistoryRecord]:
        """Terminal runs, newest first."""
        return await self._history(History(limit, offset))

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


async def estimates(store: TaskStore, running: Sequence[RunningTask]) -> list[EstimatedProgress]:
    """Progress estimates for running tasks, from their reports and their types' mean duration."""
    types = sorted({r.task.task_type for r in running})
    stats = await asyncio.gather(*(store.history_stats(t) for t in types))
    return progress_estimates(running, dict(zip(types, stats, strict=True)), datetime.now(UTC))


def progress_estimates(
    running: Sequence[RunningTask], stats: Mapping[str, TypeStats], now: datetime
) -> list[EstimatedProgress]:
    """The estimates of semantics.md for ``running``, given each type's history statistics."""
    out = []
    for r in running:
        s = stats[r.task.task_type]
        reported = None
        if r.progress is not None:
            reported = (r.progress.percent, ms_to_datetime(r.progress.reported_at_ms))
        out.append(
            estimate_progress(
                TaskRecord.from_row(r.task),
                ms_to_datetime(r.started_at_ms),
                reported,
                s.avg_duration_ms / 1000 if s.count else None,
                now,
            )
        )
    return out
