"""Child tasks, finalize and fail-fast in a real embedded scheduler."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from taskmill import (
    HistoryStatus,
    Priority,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskSubmission,
)
from tests.scheduler_support import EventRecorder, Latch, builder


class Parent(TaskExecutor):
    def __init__(self, children: int, *, fail_fast: bool = True) -> None:
        self.children = children
        self.fail_fast = fail_fast
        self.finalized: list[int] = []
        self.finalize_latch: Latch | None = None

    async def execute(self, ctx: TaskContext) -> None:
        await ctx.spawn_children(
            [
                TaskSubmission("part", key=f"{ctx.record.id}-{i}", label=f"part {i}").payload_json(
                    {"n": i}
                )
                for i in range(self.children)
            ]
        )

    async def finalize(self, ctx: TaskContext) -> None:
        self.finalized.append(ctx.record.id)
        if self.finalize_latch is not None:
            await self.finalize_latch.wait(ctx)


async def test_a_parent_finalizes_once_after_all_children(tmp_path: Path) -> None:
    parent = Parent(3)
    parts: list[int] = []
    latch = Latch()

    async def part(ctx: TaskContext) -> None:
        parts.append(ctx.payload()["n"])
        await latch.wait(ctx)

    scheduler = await builder(tmp_path, parent=parent, part=part).max_concurrency(2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent", key="upload"))
        [waiting] = await events.wait_count("waiting", 1)
        assert (waiting.task_id, waiting.children_count) == (outcome.id, 3)
        # The waiting parent frees its slot: both slots go to children.
        await events.wait_for(lambda evs: len(parts) == 2 or len(events.of("dispatched")) >= 3)
        assert await scheduler.store().waiting_count() == 1
        assert parent.finalized == []
        latch.release()
        await events.wait_for(
            lambda evs: any(
                e.type == "completed" and getattr(e, "task_id", None) == outcome.id for e in evs
            )
        )
        assert parent.finalized == [outcome.id]
        assert events.types_for(outcome.id) == ["dispatched", "waiting", "dispatched", "completed"]
        assert sorted(parts) == [0, 1, 2]
        history = await scheduler.store().history(limit=10)
        assert sorted(h.status for h in history) == [HistoryStatus.COMPLETED] * 4
        children = [h for h in history if h.parent_id == outcome.id]
        assert len(children) == 3
        await events.close()


async def test_fail_fast_fires_the_tokens_of_running_siblings(tmp_path: Path) -> None:
    parent = Parent(3)
    fired: list[str] = []
    both = threading.Event()
    go = Latch()
    never = Latch()

    async def part(ctx: TaskContext) -> None:
        if ctx.payload()["n"] == 2:
            await go.wait()
            raise TaskError("bad part")
        ctx.progress.report(0.1)
        if not await never.wait(ctx):
            fired.append(ctx.record.label)
            if len(fired) == 2:
                both.set()

    scheduler = await builder(tmp_path, parent=parent, part=part).max_concurrency(4).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent", key="job"))
        await events.wait_count("progress", 2)
        go.release()
        assert await asyncio.to_thread(both.wait, 10)
        cancelled = await events.wait_count("cancelled", 2)
        assert sorted(e.label for e in cancelled) == ["part 0", "part 1"]
        await events.wait_for(
            lambda evs: any(
                e.type == "failed" and getattr(e, "task_id", None) == outcome.id for e in evs
            )
        )
        [parent_failed] = [e for e in events.of("failed") if e.task_id == outcome.id]
        failed_child = next(e for e in events.of("failed") if e.task_id != outcome.id)
        assert parent_failed.error == f"child task {failed_child.task_id} failed: bad part"
        assert parent.finalized == []
        history = await scheduler.store().history(limit=10)
        statuses = sorted((h.label, h.status) for h in history)
        assert statuses == [
            ("job", HistoryStatus.FAILED),
            ("part 0", HistoryStatus.CANCELLED),
            ("part 1", HistoryStatus.CANCELLED),
            ("part 2", HistoryStatus.FAILED),
        ]
        await events.close()


async def test_without_fail_fast_the_parent_fails_after_the_last_child(tmp_path: Path) -> None:
    parent = Parent(3)

    async def part(ctx: TaskContext) -> None:
        if ctx.payload()["n"] != 1:
            raise TaskError(f"part {ctx.payload()['n']} broke")

    scheduler = await builder(tmp_path, parent=parent, part=part).max_concurrency(1).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent", key="job").fail_fast(False))
        await events.wait_for(
            lambda evs: any(
                e.type == "failed" and getattr(e, "task_id", None) == outcome.id for e in evs
            )
        )
        [failed] = [e for e in events.of("failed") if e.task_id == outcome.id]
        assert failed.error == "2 child task(s) failed"
        assert len(events.of("completed")) == 1  # the one good part, before the parent failed
        assert not events.of("cancelled")
        assert parent.finalized == []
        await events.close()


async def test_a_task_without_children_never_waits_nor_finalizes(tmp_path: Path) -> None:
    parent = Parent(0)
    scheduler = await builder(tmp_path, parent=parent).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent"))
        await events.wait_count("completed", 1)
        assert events.types_for(outcome.id) == ["dispatched", "completed"]
        assert parent.finalized == []
        await events.close()


async def test_cancelling_a_waiting_parent_cancels_its_children(tmp_path: Path) -> None:
    parent = Parent(2)
    never = Latch()

    async def part(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        await never.wait(ctx)

    scheduler = await builder(tmp_path, parent=parent, part=part).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent"))
        await events.wait_count("progress", 2)
        assert await scheduler.cancel(outcome.id)
        cancelled = await events.wait_count("cancelled", 3)
        assert cancelled[-1].task_id == outcome.id  # children first, then the parent
        assert await scheduler.store().waiting_count() == 0
        assert await scheduler.store().running_count() == 0
        await events.close()


async def test_a_finalize_interrupted_by_a_crash_runs_after_restart(tmp_path: Path) -> None:
    parent = Parent(2)
    parent.finalize_latch = Latch()

    async def part(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, parent=parent, part=part).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent"))
        await events.wait_for(lambda evs: events.types_for(outcome.id).count("dispatched") == 2)
    # Shut down hard while finalize runs; restart with the same database.
    assert parent.finalized == [outcome.id]
    parent.finalize_latch.release()
    again = await builder(tmp_path, parent=parent, part=part).build()
    events = await EventRecorder.start(again)  # live before dispatching starts
    async with again:
        await events.wait_count("completed", 1)
        history = await again.store().history(limit=10)
        assert [h.status for h in history if h.task_id == outcome.id] == [HistoryStatus.COMPLETED]
        assert sum(1 for h in history if h.parent_id == outcome.id) == 2
    assert parent.finalized == [outcome.id, outcome.id]


async def test_an_urgent_child_never_preempts_its_parent(tmp_path: Path) -> None:
    finalized: list[int] = []

    class UrgentParent(TaskExecutor):
        async def execute(self, ctx: TaskContext) -> None:
            await ctx.spawn_child(
                TaskSubmission("part", key=f"urgent-{ctx.record.id}").priority(Priority.REALTIME)
            )
            ctx.progress.report(0.5, "spawned")  # still running after the spawn

        async def finalize(self, ctx: TaskContext) -> None:
            finalized.append(ctx.record.id)

    async def part(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, parent=UrgentParent(), part=part).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("parent", priority=Priority.BACKGROUND))
        await events.wait_for(lambda evs: events.types_for(outcome.id)[-1:] == ["completed"])
        assert "preempted" not in events.types_for(outcome.id)
        assert finalized == [outcome.id]
        await events.close()
