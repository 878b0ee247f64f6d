"""Running tasks in a real embedded scheduler: events, retries, failures, concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from taskmill import (
    HistoryStatus,
    Priority,
    TaskContext,
    TaskError,
    TaskSubmission,
)
from tests.scheduler_support import Concurrency, EventRecorder, Latch, builder


async def test_a_task_runs_with_dispatched_progress_completed_events(tmp_path: Path) -> None:
    async def work(ctx: TaskContext) -> None:
        ctx.progress.report(0.25, "a quarter")
        ctx.progress.report_fraction(3, 4)
        ctx.record_read_bytes(100)
        ctx.record_read_bytes(23)
        ctx.record_net_tx_bytes(7)

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("work", key="one", label="first"))
        await events.wait_count("completed", 1)
        types = events.types_for(outcome.id)
        assert types[0] == "dispatched" and types[-1] == "completed"
        assert set(types[1:-1]) <= {"progress"}
        completed = events.of("completed")[0]
        assert (completed.task_type, completed.label) == ("work", "first")
        [row] = await scheduler.store().history()
        assert row.status == HistoryStatus.COMPLETED
        assert (row.actual_read_bytes, row.actual_net_tx_bytes) == (123, 7)
        await events.close()


async def test_progress_events_carry_the_reported_values(tmp_path: Path) -> None:
    latch = Latch()

    async def work(ctx: TaskContext) -> None:
        ctx.progress.report(1.7, "clamped")
        await latch.wait(ctx)

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("work"))
        [progress] = await events.wait_count("progress", 1)
        assert (progress.percent, progress.message) == (1.0, "clamped")
        [estimate] = await scheduler.estimated_progress()
        assert estimate.reported_percent == 1.0
        latch.release()
        await events.wait_count("completed", 1)
        await events.close()


async def test_retryable_errors_retry_at_most_max_retries_times(tmp_path: Path) -> None:
    attempts: list[int] = []

    async def flaky(ctx: TaskContext) -> None:
        attempts.append(ctx.record.retry_count)
        raise TaskError.retryable("try again")

    scheduler = await builder(tmp_path, flaky=flaky).max_retries(2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("flaky"))
        # The last event of the task: waiting for the last failed one instead races with it.
        await events.wait_count("dead_lettered", 1)
        assert attempts == [0, 1, 2]
        assert events.types_for(outcome.id) == [
            "dispatched",
            "failed",
            "dispatched",
            "failed",
            "dispatched",
            "failed",
            "dead_lettered",
        ]
        assert [e.will_retry for e in events.of("failed")] == [True, True, False]
        assert await scheduler.store().failed_tasks() == []  # out of retries: a dead letter
        [row] = await scheduler.store().history()
        assert (row.status, row.last_error, row.retry_count, row.task_id) == (
            "dead_letter",
            "try again",
            2,
            outcome.id,
        )
        await events.close()


@pytest.mark.parametrize(
    ("error", "message"),
    [(TaskError("nope"), "nope"), (ValueError("bad value"), "ValueError: bad value")],
)
async def test_permanent_errors_fail_at_once(
    tmp_path: Path, error: Exception, message: str
) -> None:
    calls = 0

    def broken(ctx: TaskContext) -> None:  # a plain function: runs in a worker thread
        nonlocal calls
        calls += 1
        raise error

    scheduler = await builder(tmp_path, broken=broken).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("broken"))
        [failed] = await events.wait_count("failed", 1)
        assert (failed.error, failed.will_retry, calls) == (message, False, 1)
        assert (await scheduler.store().history())[0].last_error == message
        await events.close()


async def test_a_type_without_executor_fails_with_the_stated_message(tmp_path: Path) -> None:
    async def other(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, other=other).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("mystery"))
        [failed] = await events.wait_count("failed", 1)
        assert failed.error == "no executor registered for type 'mystery'"
        assert failed.will_retry is False
        await events.close()


async def test_an_executor_returning_what_json_cannot_encode_fails_for_good(
    tmp_path: Path,
) -> None:
    async def odd(ctx: TaskContext) -> object:
        return {"unexpected": object()}

    scheduler = await builder(tmp_path, odd=odd).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("odd"))
        [failed] = await events.wait_count("failed", 1)
        assert failed.error.startswith("result: cannot encode result as JSON")
        assert not failed.will_retry
        await events.close()


async def test_max_concurrency_bounds_running_tasks_and_changes_at_runtime(
    tmp_path: Path,
) -> None:
    gauge = Concurrency()
    latch = Latch()

    async def work(ctx: TaskContext) -> None:
        with gauge:
            ctx.progress.report(0.0, "inside")
            await latch.wait(ctx)

    scheduler = await builder(tmp_path, work=work).max_concurrency(2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([TaskSubmission("work", key=str(i)) for i in range(6)])
        await events.wait_count("progress", 2)
        assert len(await scheduler.active_tasks()) == 2
        assert gauge.peak == 2
        await scheduler.set_max_concurrency(4)
        assert await scheduler.max_concurrency() == 4
        await events.wait_count("progress", 4)
        assert gauge.peak == 4
        latch.release()
        await events.wait_count("completed", 6)
        assert gauge.peak == 4
        await events.close()


async def test_queue_order_is_priority_then_fifo(tmp_path: Path) -> None:
    order: list[str] = []

    async def work(ctx: TaskContext) -> None:
        order.append(ctx.record.label)

    scheduler = await builder(tmp_path, work=work).max_concurrency(1).build()
    subs = [
        TaskSubmission("work", key="n1", priority=Priority.NORMAL),
        TaskSubmission("work", key="i1", priority=Priority.IDLE),
        TaskSubmission("work", key="h1", priority=Priority.HIGH),
        TaskSubmission("work", key="n2", priority=Priority.NORMAL),
        TaskSubmission("work", key="h2", priority=Priority.HIGH),
    ]
    await scheduler.submit_batch(subs)  # before run: all queued when dispatch starts
    events = await EventRecorder.start(scheduler)  # live before dispatching starts
    async with scheduler:
        await events.wait_count("completed", 5)
        await events.close()
    assert order == ["h1", "h2", "n1", "n2", "i1"]


async def test_snapshot_reports_queue_and_running_tasks(tmp_path: Path) -> None:
    latch = Latch()

    async def work(ctx: TaskContext) -> None:
        ctx.progress.report(0.5)
        await latch.wait(ctx)

    scheduler = await builder(tmp_path, work=work).max_concurrency(1).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([TaskSubmission("work", key=str(i)) for i in range(3)])
        await events.wait_count("progress", 1)
        snap = await scheduler.snapshot()
        assert [r.label for r in snap.running] == ["0"]
        assert (snap.pending_count, snap.max_concurrency, snap.is_paused) == (2, 1, False)
        assert snap.progress[0].percent == 0.5
        assert snap.to_dict()["pending_count"] == 2
        latch.release()
        await events.wait_count("completed", 3)
        await events.close()


async def test_sync_executors_run_in_threads_without_blocking_async_ones(tmp_path: Path) -> None:
    latch = Latch()
    seen: list[str] = []

    def blocking(ctx: TaskContext) -> None:
        assert latch._event.wait(10)
        seen.append("sync")

    async def quick(ctx: TaskContext) -> None:
        seen.append("async")
        latch.release()

    scheduler = await builder(tmp_path, blocking=blocking, quick=quick).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("blocking"))
        await events.wait_count("dispatched", 1)
        await scheduler.submit(TaskSubmission("quick"))
        await events.wait_count("completed", 2)
        assert seen == ["async", "sync"]
        await events.close()


async def test_executor_sees_app_state_by_type(tmp_path: Path) -> None:
    class Services:
        def __init__(self, name: str) -> None:
            self.name = name

    class Late:
        pass

    found: list[object] = []

    async def work(ctx: TaskContext) -> None:
        services = ctx.state(Services)
        found.append(services.name if services else None)
        found.append(ctx.state(Late))

    scheduler = await builder(tmp_path, work=work).app_state(Services("db-pool")).build()
    late = Late()
    async with scheduler:
        await scheduler.register_state(late)
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("work"))
        await events.wait_count("completed", 1)
        await events.close()
    assert found == ["db-pool", late]


async def test_many_tasks_flow_through(tmp_path: Path) -> None:
    async def noop(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, noop=noop).max_concurrency(4).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([TaskSubmission("noop", key=str(i)) for i in range(500)])
        await events.wait_count("completed", 500, timeout=30)
        assert len(await scheduler.store().history(limit=1000)) == 500
        await events.close()
    assert asyncio.get_running_loop().is_running()


async def test_an_executor_calling_sys_exit_fails_its_task_not_the_host(tmp_path: Path) -> None:
    def exits(ctx: TaskContext) -> None:
        raise SystemExit(2)

    async def fine(ctx: TaskContext) -> None:
        ctx.record_write_bytes(2**70)  # a runaway counter is clamped, not a poisoned result

    scheduler = await builder(tmp_path, exits=exits, fine=fine).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("exits"))
        [failed] = await events.wait_count("failed", 1)
        assert (failed.error, failed.will_retry) == ("SystemExit: 2", False)
        await scheduler.submit(TaskSubmission("fine"))
        await events.wait_count("completed", 1)  # the host still runs tasks
        row = next(h for h in await scheduler.store().history() if h.task_type == "fine")
        assert row.actual_write_bytes == 2**63 - 1
        await events.close()
