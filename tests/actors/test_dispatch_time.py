"""Time in the dispatch path, through a whole embedded scheduler: a task due later starts when
it is due (the Dispatcher sleeping until then, not polling), and a retry waits out its delay.

Submissions go to the Store over the bus as the protocol carries them (``due_at_ms``,
``retry``), so these tests hold the Store and the Dispatcher to the rules whatever the public
API offers on top.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from scheduler_support import EventRecorder, builder

from bus.client import AsyncRequester
from bus.kinds import RetrySpec, Stats, StatsReply, Submission, Submit, SubmitReply
from taskmill import Expired, TaskContext, TaskError, TaskSubmission, TtlFrom, generate_dedup_key

DELAY_MS = 400


def wall_ms() -> int:
    return int(time.time() * 1000)


async def test_a_task_due_later_starts_when_due_and_the_dispatcher_sleeps_till_then(
    tmp_path: Path,
) -> None:
    async def work(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        store = AsyncRequester(scheduler._context, scheduler.topology.store)  # inproc: its context
        try:
            before = (await store.call(Stats(), StatsReply)).counters["requests"]
            due = wall_ms() + DELAY_MS
            key = generate_dedup_key("work", b"later")
            [outcome] = (
                await store.call(
                    Submit([Submission("work", key, "later", due_at_ms=due)]), SubmitReply
                )
            ).outcomes
            [started] = await events.wait_count("dispatched", 1, timeout=10.0)
            assert started.task_id == outcome.id
            assert wall_ms() >= due
            during = (await store.call(Stats(), StatsReply)).counters["requests"] - before
            # The submit, the Stats reads, the claim at the alarm, a safety claim: no polling.
            assert during <= 6
            dispatcher = AsyncRequester(scheduler._context, scheduler.topology.dispatcher)
            try:
                stats = (await dispatcher.call(Stats(), StatsReply)).counters
            finally:
                dispatcher.close()
            assert stats["alarms"] >= 1  # woken by the due time, not found by a poll
            await events.wait_count("completed", 1)
        finally:
            store.close()
            await events.close()


async def test_a_retry_waits_out_its_delay(tmp_path: Path) -> None:
    runs: list[int] = []

    async def flaky(ctx: TaskContext) -> None:
        runs.append(wall_ms())
        if len(runs) == 1:
            raise TaskError.retryable("busy")

    scheduler = await builder(tmp_path, flaky=flaky).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        store = AsyncRequester(scheduler._context, scheduler.topology.store)  # inproc: its context
        try:
            policy = RetrySpec("constant", initial_s=DELAY_MS / 1000)
            key = generate_dedup_key("flaky", b"x")
            await store.call(Submit([Submission("flaky", key, "x", retry=policy)]), SubmitReply)
            [failed] = await events.wait_count("failed", 1)
            assert failed.will_retry
            await events.wait_count("completed", 1)
            assert runs[1] - runs[0] >= DELAY_MS
        finally:
            store.close()
            await events.close()


async def test_a_task_past_its_ttl_expires_at_the_next_claim_with_an_event(
    tmp_path: Path,
) -> None:
    started: list[str] = []

    async def work(ctx: TaskContext) -> None:
        started.append(ctx.record.label)

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        store = AsyncRequester(scheduler._context, scheduler.topology.store)  # inproc: its context
        try:
            # Due in 0.3 s, but its TTL ends at 0.1 s: the claim its due time brings expires it.
            doomed = Submission(
                "work",
                generate_dedup_key("work", b"doomed"),
                "doomed",
                due_at_ms=wall_ms() + 300,
                ttl_s=0.1,
            )
            [outcome] = (await store.call(Submit([doomed]), SubmitReply)).outcomes
            [expired] = await events.wait_count("expired", 1, timeout=10.0)
            assert expired.task_id == outcome.id and expired.age >= 0.1
            assert started == []
            [row] = await scheduler.store().history()
            assert (row.status, row.task_id) == ("expired", outcome.id)
        finally:
            store.close()
            await events.close()


async def test_a_submissions_ttl_expires_it_before_it_runs(tmp_path: Path) -> None:
    async def work(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        try:
            outcome = await scheduler.submit(TaskSubmission("work").run_after(0.3).ttl(0.1))
            [expired] = await events.wait_count("expired", 1, timeout=10.0)
            assert isinstance(expired, Expired) and expired.task_id == outcome.id
            assert events.types_for(outcome.id or 0) == ["expired"]
        finally:
            await events.close()


def test_a_ttl_must_be_a_positive_time() -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            TaskSubmission("work").ttl(bad)
    with pytest.raises(ValueError):
        TaskSubmission("work").ttl(5.0, from_="later")  # type: ignore[arg-type]
    sub = TaskSubmission("work", ttl=timedelta(seconds=5), ttl_from=TtlFrom.FIRST_ATTEMPT)
    wire = sub.to_wire(0)
    assert (wire.ttl_s, wire.ttl_from) == (5.0, "first_attempt")
