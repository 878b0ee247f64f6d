"""Preemption, pause/resume, cancellation and shutdown in a real embedded scheduler."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from actors.host.actor import STOP_GRACE_S
from taskmill import (
    ActorUnavailable,
    CancellationToken,
    HistoryStatus,
    Priority,
    ShutdownMode,
    TaskContext,
    TaskError,
    TaskHistoryRecord,
    TaskStatus,
    TaskSubmission,
)
from tests.scheduler_support import EventRecorder, Latch, builder


def background(key: str) -> TaskSubmission:
    return TaskSubmission("slow", key=key, priority=Priority.BACKGROUND)


async def test_realtime_submission_preempts_less_urgent_running_work(tmp_path: Path) -> None:
    latch = Latch()
    interrupted: list[str] = []
    both = threading.Event()

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1, "started")
        if not await latch.wait(ctx):
            interrupted.append(ctx.record.label)
            if len(interrupted) == 2:
                both.set()
            raise TaskError("interrupted")  # a victim that raises is not failed

    async def urgent(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, slow=slow, urgent=urgent).max_concurrency(4).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([background("a"), background("b")])
        await events.wait_count("progress", 2)
        await scheduler.submit(TaskSubmission("urgent", priority=Priority.REALTIME))
        preempted = await events.wait_count("preempted", 2)
        assert {e.label for e in preempted} == {"a", "b"}
        await events.wait_count("completed", 1)
        assert events.of("completed")[0].task_type == "urgent"
        assert await asyncio.to_thread(both.wait, 10)  # their tokens fired
        assert sorted(interrupted) == ["a", "b"]
        # The victims come back (same ids, retry count untouched) and run to completion.
        latch.release()
        await events.wait_count("completed", 3)
        assert not events.of("failed")
        history = await scheduler.store().history_by_type("slow")
        assert sorted((h.label, h.retry_count) for h in history) == [("a", 0), ("b", 0)]
        await events.close()


async def test_preemption_needs_a_priority_at_or_above_the_threshold(tmp_path: Path) -> None:
    latch = Latch()

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        await latch.wait(ctx)

    scheduler = await builder(tmp_path, slow=slow).preempt_priority(Priority.HIGH).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(background("a"))
        await events.wait_count("progress", 1)
        # NORMAL is below the HIGH threshold: it runs beside "a", preempting nothing.
        await scheduler.submit(TaskSubmission("slow", key="n", priority=Priority.NORMAL))
        await events.wait_count("progress", 2)
        assert events.of("preempted") == []
        # HIGH is at the threshold: every running task strictly less urgent is a victim.
        await scheduler.submit(TaskSubmission("slow", key="h", priority=Priority.HIGH))
        await events.wait_count("preempted", 2)
        assert sorted(e.label for e in events.of("preempted")) == ["a", "n"]
        latch.release()
        await events.wait_count("completed", 3)
        await events.close()


async def test_pause_all_preempts_everything_then_resume_all_runs_it(tmp_path: Path) -> None:
    latch = Latch()

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        if not await latch.wait(ctx):
            raise TaskError("interrupted")

    scheduler = await builder(tmp_path, slow=slow).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([background("a"), background("b")])
        await events.wait_count("progress", 2)
        await scheduler.pause_all()
        assert await scheduler.is_paused()
        await events.wait_count("paused", 1)
        kinds = [e.type for e in events.events if e.type in ("preempted", "paused")]
        assert kinds == ["preempted", "preempted", "paused"]
        assert await scheduler.store().paused_count() == 2
        await scheduler.submit(TaskSubmission("slow", key="c"))
        assert await scheduler.store().pending_count() == 1
        latch.release()
        await scheduler.resume_all()
        await events.wait_count("resumed", 1)
        await events.wait_count("completed", 3)
        assert not await scheduler.is_paused()
        await events.close()


async def test_cancel_a_running_task_fires_its_token_and_records_history(tmp_path: Path) -> None:
    latch = Latch()
    token_fired = threading.Event()

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        if not await latch.wait(ctx):
            token_fired.set()

    scheduler = await builder(tmp_path, slow=slow).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(background("a"))
        await events.wait_count("progress", 1)
        assert await scheduler.cancel(outcome.id) is True
        [event] = await events.wait_count("cancelled", 1)
        assert event.task_id == outcome.id
        assert await asyncio.to_thread(token_fired.wait, 10)
        assert await scheduler.cancel(outcome.id) is False
        [row] = await scheduler.store().history()
        assert (row.status, row.task_id) == (HistoryStatus.CANCELLED, outcome.id)
        assert await scheduler.store().task_by_id(outcome.id) is None
        await events.close()


async def test_cancel_a_pending_task(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path).build()
    outcome = await scheduler.submit(TaskSubmission("never-runs"))
    await scheduler.pause_all()  # before run: nothing is dispatched at all
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        assert await scheduler.cancel(outcome.id)
        await events.wait_count("cancelled", 1)
        assert await scheduler.store().pending_count() == 0
        assert await scheduler.cancel(12345) is False
        await events.close()


async def test_graceful_shutdown_lets_running_tasks_finish(tmp_path: Path) -> None:
    latch = Latch()
    finished: list[str] = []

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        await latch.wait()  # ignores the token: only the drain lets it end
        finished.append(ctx.record.label)

    scheduler = await (
        builder(tmp_path, slow=slow).shutdown_mode(ShutdownMode.graceful(10.0)).build()
    )
    token = CancellationToken()
    events = await EventRecorder.start(scheduler)
    await scheduler.submit(background("a"))
    run = asyncio.create_task(scheduler.run(token))
    await events.wait_count("progress", 1)
    token.cancel()
    latch.release()
    await events.wait_count("completed", 1)
    await run
    assert finished == ["a"]
    reopened = await builder(tmp_path).build()
    [row] = await reopened.store().history()
    assert row.status == HistoryStatus.COMPLETED
    await reopened.close()


async def test_hard_shutdown_cancels_and_the_task_runs_again_after_restart(
    tmp_path: Path,
) -> None:
    latch = Latch()
    fired = threading.Event()
    completed_runs: list[int] = []

    async def slow(ctx: TaskContext) -> None:
        ctx.token.on_cancel(fired.set)
        ctx.progress.report(0.1)
        if await latch.wait(ctx):
            completed_runs.append(ctx.record.id)

    scheduler = await builder(tmp_path, slow=slow).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(background("a"))
        await events.wait_count("progress", 1)
    assert fired.is_set()  # the shutdown cancelled its token
    latch.release()
    again = await builder(tmp_path, slow=slow).build()
    record = await again.store().task_by_id(outcome.id)
    assert record is not None and record.status == TaskStatus.PENDING
    assert record.retry_count == 0
    events = await EventRecorder.start(again)  # live before dispatching starts
    async with again:
        await events.wait_count("completed", 1)
    assert completed_runs == [outcome.id]
    history = await _history_after(tmp_path)
    assert [(h.task_id, h.status) for h in history] == [(outcome.id, HistoryStatus.COMPLETED)]


@pytest.mark.parametrize("own_thread", [False, True], ids=["shared-thread", "executor-thread"])
async def test_hard_shutdown_lets_an_async_executor_stop_on_its_token(
    tmp_path: Path, own_thread: bool
) -> None:
    cleaned_up = threading.Event()

    async def slow(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        await ctx.token.wait()
        # Stopping cleanly takes a moment of its own (here a tenth of a second: say, aborting
        # an upload), well within the grace a hard shutdown gives.
        await asyncio.to_thread(threading.Event().wait, 0.1)
        cleaned_up.set()

    scheduler = await builder(tmp_path, slow=slow).executor_thread(own_thread).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(background("a"))
        await events.wait_count("progress", 1)
        await events.close()
    assert cleaned_up.is_set()


async def test_hard_shutdown_cancels_an_executor_that_ignores_its_token(tmp_path: Path) -> None:
    never = threading.Event()
    outcome: list[str] = []

    async def stubborn(ctx: TaskContext) -> None:
        ctx.progress.report(0.1)
        try:
            await asyncio.to_thread(never.wait, 30)  # ignores the token
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    scheduler = await builder(tmp_path, slow=stubborn).build()
    loop = asyncio.get_running_loop()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(background("a"))
        await events.wait_count("progress", 1)
        await events.close()
        closing = loop.time()
    took = loop.time() - closing
    never.set()  # lets the abandoned worker thread end
    assert outcome == ["cancelled"]
    assert STOP_GRACE_S <= took < STOP_GRACE_S + 5.0  # the grace, then no longer


async def _history_after(tmp_path: Path) -> list[TaskHistoryRecord]:
    scheduler = await builder(tmp_path).build()
    try:
        return await scheduler.store().history()
    finally:
        await scheduler.close()


async def test_close_from_elsewhere_ends_run_and_later_calls_fail_cleanly(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path).build()
    token = CancellationToken()
    run = asyncio.create_task(scheduler.run(token))
    assert not await scheduler.is_paused()  # dispatching: run() has started
    await scheduler.close()  # e.g. from a signal handler, without cancelling the token
    await asyncio.wait_for(run, 10)
    assert not token.is_cancelled()
    with pytest.raises(ActorUnavailable):
        await scheduler.subscribe()
