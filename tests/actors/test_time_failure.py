"""Delayed tasks, retry delays, dead letter, results and time limits in a real embedded scheduler.

Nothing sleeps: the tests wait for events or for ``wait_result``. Delays are a fraction of a
second where a task must actually run after one, and an hour where it must not run at all.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bus.errors import InvalidRequest
from taskmill import (
    DeadLettered,
    Failed,
    HistoryStatus,
    RetryPolicy,
    TaskContext,
    TaskError,
    TaskStatus,
    TaskSubmission,
)
from tests.scheduler_support import EventRecorder, Latch, builder


async def echo(ctx: TaskContext) -> Any:
    return ctx.payload()


async def test_a_task_due_later_waits_while_others_run(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, echo=echo).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        later = await scheduler.submit(TaskSubmission("echo", key="later").run_after(3600.0))
        now = await scheduler.submit(TaskSubmission("echo", key="now"))
        await events.wait_for(lambda _: bool(events.of("completed", now.id)))
        assert events.types_for(later.id) == []
        record = await scheduler.store().task_by_id(later.id)
        assert record is not None and record.status is TaskStatus.PENDING
        snapshot = await scheduler.snapshot()
        assert (snapshot.scheduled_count, snapshot.pending_count) == (1, 0)
        store = scheduler.store()
        assert [r.id for r in await store.scheduled_tasks()] == [later.id]
        assert (await store.pending_tasks(), await store.scheduled_count()) == ([], 1)
        await events.close()


async def test_a_delayed_task_starts_once_due(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, echo=echo).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        submitted = datetime.now(UTC)
        outcome = await scheduler.submit(TaskSubmission("echo").run_after(0.3))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.COMPLETED
        [dispatched] = events.of("dispatched", outcome.id)
        assert dispatched.at >= submitted + timedelta(seconds=0.3)
        await events.close()


async def test_run_at_a_past_instant_runs_at_once(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, echo=echo).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("echo").run_at(datetime(2000, 1, 1)))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.COMPLETED


async def test_wait_result_hands_back_what_the_executor_returned(tmp_path: Path) -> None:
    async def raw(ctx: TaskContext) -> bytes:
        return b"\x89PNG"

    scheduler = await builder(tmp_path, echo=echo, raw=raw).build()
    async with scheduler:
        job = await scheduler.submit(TaskSubmission("echo").payload_json({"n": [1, 2]}))
        image = await scheduler.submit(TaskSubmission("raw"))
        record = await scheduler.wait_result(job.id, timeout=10.0)
        assert (record.status, record.result_json()) == (HistoryStatus.COMPLETED, {"n": [1, 2]})
        assert (await scheduler.wait_result(image.id, timeout=10.0)).result == b"\x89PNG"
        [row] = await scheduler.store().history_by_key(record.key)
        assert row.result == b'{"n":[1,2]}'


async def test_wait_result_times_out_while_the_task_runs(tmp_path: Path) -> None:
    latch = Latch()

    async def held(ctx: TaskContext) -> str:
        await latch.wait(ctx)
        return "done"

    scheduler = await builder(tmp_path, held=held).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("held"))
        with pytest.raises(TimeoutError):
            await scheduler.wait_result(outcome.id, timeout=0.3)
        waiting = asyncio.ensure_future(scheduler.wait_result(outcome.id, timeout=10.0))
        latch.release()
        assert (await waiting).result_json() == "done"


async def test_a_result_that_cannot_be_stored_fails_the_task(tmp_path: Path) -> None:
    async def odd(ctx: TaskContext) -> object:
        return {1, 2}

    scheduler = await builder(tmp_path, odd=odd).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("odd"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.FAILED and record.result is None
        assert record.last_error is not None and record.last_error.startswith("result: ")


async def test_a_retry_waits_the_delay_the_task_error_asks_for(tmp_path: Path) -> None:
    attempts: list[int] = []

    async def throttled(ctx: TaskContext) -> str:
        attempts.append(ctx.record.retry_count)
        if len(attempts) == 1:
            raise TaskError("429", retryable=True, retry_after=0.4)
        return "ok"

    scheduler = await builder(tmp_path, throttled=throttled).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("throttled"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.COMPLETED and attempts == [0, 1]
        [failed] = events.of("failed", outcome.id)
        assert (failed.will_retry, failed.retry_after) == (True, 0.4)
        _, second = events.of("dispatched", outcome.id)
        assert second.at - failed.at >= timedelta(seconds=0.4)
        await events.close()


async def test_the_policy_delays_retries(tmp_path: Path) -> None:
    async def flaky(ctx: TaskContext) -> None:
        if ctx.record.retry_count < 2:
            raise TaskError.retryable("reset")

    scheduler = await (
        builder(tmp_path, flaky=flaky)
        .retry_policy("flaky", RetryPolicy.linear(0.2, increment=0.1, max_retries=5))
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("flaky"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.COMPLETED
        failures = events.of("failed", outcome.id)
        assert [f.retry_after for f in failures] == [0.2, pytest.approx(0.3)]
        await events.close()


class Flaky:
    """Fails retryably until told to recover, then returns "recovered"."""

    def __init__(self) -> None:
        self.failing = True

    async def __call__(self, ctx: TaskContext) -> str:
        if self.failing:
            raise TaskError.retryable("connection reset")
        return "recovered"


def _one_retry(tmp_path: Path, flaky: Flaky) -> Any:
    return builder(tmp_path, flaky=flaky).default_retry_policy(
        RetryPolicy.constant(0.0, max_retries=1)
    )


async def test_exhausted_retries_go_to_the_dead_letter(tmp_path: Path) -> None:
    scheduler = await _one_retry(tmp_path, Flaky()).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("flaky", key="job"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert (record.status, record.retry_count) == (HistoryStatus.DEAD_LETTER, 1)
        await events.wait_for(lambda _: bool(events.of("dead_lettered", outcome.id)))
        [dead] = events.of("dead_lettered", outcome.id)
        assert dead == DeadLettered(
            task_id=outcome.id, task_type="flaky", key=record.key, label="job",
            error="connection reset", retry_count=1,
        )  # fmt: skip
        # v1 subscribers still see the last failure, as not retried.
        assert [f.will_retry for f in events.of("failed", outcome.id)] == [True, False]
        store = scheduler.store()
        assert [r.id for r in await store.dead_letter_tasks()] == [record.id]
        assert await store.failed_tasks() == []
        await events.close()


async def test_a_dead_lettered_task_can_be_submitted_again(tmp_path: Path) -> None:
    flaky = Flaky()
    scheduler = await _one_retry(tmp_path, flaky).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("flaky", key="job"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.DEAD_LETTER
        flaky.failing = False
        again = await scheduler.retry_dead_letter(record.id)
        assert again.is_inserted()
        store = scheduler.store()
        assert await store.dead_letter_tasks() == []
        done = await scheduler.wait_result(again.id, timeout=10.0)
        assert (done.status, done.retry_count, done.result_json()) == (
            HistoryStatus.COMPLETED, 0, "recovered",
        )  # fmt: skip
        with pytest.raises(InvalidRequest):
            await scheduler.retry_dead_letter(done.id)  # not a dead-letter row


async def test_a_submission_can_forbid_retries(tmp_path: Path) -> None:
    async def flaky(ctx: TaskContext) -> None:
        raise TaskError.retryable("reset")

    scheduler = await builder(tmp_path, flaky=flaky).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("flaky").retry(RetryPolicy.none()))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert (record.status, record.retry_count) == (HistoryStatus.DEAD_LETTER, 0)


async def test_a_run_past_its_time_limit_fails_retryably(tmp_path: Path) -> None:
    async def slow(ctx: TaskContext) -> None:
        await ctx.token.wait()

    scheduler = await builder(tmp_path, slow=slow).task_timeout("slow", 0.2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("slow"))
        await events.wait_for(lambda _: bool(events.of("failed", outcome.id)))
        failed: Failed = events.of("failed", outcome.id)[0]
        assert (failed.error, failed.will_retry) == ("timed out after 0.2s", True)
        await scheduler.cancel(outcome.id)
        await events.close()


async def test_a_timed_out_task_without_retries_is_dead_lettered(tmp_path: Path) -> None:
    async def slow(ctx: TaskContext) -> None:
        await ctx.token.wait()

    scheduler = await builder(tmp_path, slow=slow).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("slow").timeout(0.2).max_retries(0))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert (record.status, record.last_error) == (
            HistoryStatus.DEAD_LETTER, "timed out after 0.2s",
        )  # fmt: skip
