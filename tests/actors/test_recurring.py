"""Recurring tasks in a real embedded scheduler: the public builder methods, the events, the
controls and the listing.

Nothing sleeps: the tests wait for events. Intervals are a tenth of a second where a task must
run again, and an hour where it must not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actors.publisher.actor import EventPublisher
from bus.events import Completed
from taskmill import (
    CronSchedule,
    RecurringCompleted,
    RecurringSchedule,
    RecurringScheduleInfo,
    TaskContext,
    TaskSubmission,
)
from taskmill.events import event_from_wire, event_to_wire
from tests.scheduler_support import EventRecorder, Latch, builder


async def tick(ctx: TaskContext) -> Any:
    return ctx.record.id


async def test_an_interval_task_runs_again_until_max_executions(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, tick=tick).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        first = await scheduler.submit(
            TaskSubmission("tick", key="k").recurring(0.1, max_executions=3)
        )
        done = await events.wait_count("recurring_completed", 3)
        assert [(e.execution_count, e.next_run is None) for e in done] == [
            (1, False),
            (2, False),
            (3, True),
        ]
        assert done[0].task_id == first.id
        assert len({e.task_id for e in done}) == 3  # each run is a task of its own
        completed = [e.task_id for e in events.of("completed")]
        assert completed == [e.task_id for e in done]  # each RecurringCompleted after Completed
        assert await scheduler.store().recurring_schedules() == []
        history = await scheduler.store().history_by_type("tick")
        assert len(history) == 3 and len({h.key for h in history}) == 1
        await events.close()


async def test_the_schedule_is_listed_paused_resumed_and_cancelled(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, tick=tick).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        first = await scheduler.submit(TaskSubmission("tick", label="hourly").recurring(3600.0))
        [done] = await events.wait_count("recurring_completed", 1)
        [info] = await scheduler.store().recurring_schedules()
        assert isinstance(info, RecurringScheduleInfo)
        assert (info.task_id, info.task_type, info.label, info.interval, info.cron) == (
            first.id,
            "tick",
            "hourly",
            3600.0,
            None,
        )
        assert (info.execution_count, info.max_executions, info.paused) == (1, None, False)
        assert info.next_run == done.next_run
        assert info.next_run is not None and info.next_run > datetime.now(UTC) + timedelta(
            minutes=59
        )
        [waiting] = await scheduler.store().scheduled_tasks()
        assert waiting.run_after == info.next_run  # the record says when it is due
        assert await scheduler.pause_recurring(first.id)
        assert (await scheduler.store().recurring_schedules())[0].paused
        assert await scheduler.resume_recurring(first.id)
        assert await scheduler.cancel_recurring(first.id)
        await events.wait_for(lambda _: bool(events.of("cancelled", waiting.id)))
        assert await scheduler.store().recurring_schedules() == []
        assert not await scheduler.cancel_recurring(first.id)
        assert not await scheduler.pause_recurring(12345)
        await events.close()


async def test_a_paused_schedule_finishes_its_run_and_resumes_with_the_next(
    tmp_path: Path,
) -> None:
    latch = Latch()

    async def held(ctx: TaskContext) -> None:
        await latch.wait(ctx)

    scheduler = await builder(tmp_path, held=held).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        first = await scheduler.submit(TaskSubmission("held").recurring(0.05))
        await events.wait_for(lambda _: bool(events.of("dispatched", first.id)))
        assert await scheduler.pause_recurring(first.id)
        latch.release()
        [done] = await events.wait_count("recurring_completed", 1)
        assert (done.execution_count, done.next_run) == (1, None)  # paused: nothing follows
        assert await scheduler.store().scheduled_count() == 0
        assert await scheduler.resume_recurring(first.id)
        second = await events.wait_count("recurring_completed", 2)
        assert second[1].execution_count == 2 and second[1].task_id != first.id
        await scheduler.cancel_recurring(first.id)
        await events.close()


async def test_a_cron_task_first_runs_at_the_next_matching_minute(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, tick=tick).build()
    async with scheduler:
        before = datetime.now(UTC)
        await scheduler.submit(TaskSubmission("tick", cron=CronSchedule("0 0 1 1 *")))
        [info] = await scheduler.store().recurring_schedules()
        assert info.cron == "0 0 1 1 *" and info.interval is None
        assert info.next_run == datetime(before.year + 1, 1, 1, tzinfo=UTC)


def test_bad_schedules_fail_at_once() -> None:
    with pytest.raises(ValueError, match="cron"):
        TaskSubmission("t").cron("not a cron")
    with pytest.raises(ValueError, match="five fields"):
        TaskSubmission("t").cron("* * * * * *")
    with pytest.raises(ValueError):
        TaskSubmission("t").recurring(0)
    with pytest.raises(ValueError):
        RecurringSchedule(1.0, max_executions=0)
    with pytest.raises(ValueError, match="parent"):
        TaskSubmission("t", parent_id=1).recurring(1.0)
    with pytest.raises(ValueError, match="not both"):
        TaskSubmission("t", recurring=RecurringSchedule(1.0), cron=CronSchedule("* * * * *"))
    child = TaskSubmission("t").recurring(1.0)
    child.parent_id = 7  # as spawn_child sets it
    with pytest.raises(ValueError, match="parent"):
        child.to_wire()


def test_keywords_and_builder_methods_are_the_same_submission() -> None:
    assert TaskSubmission("t", recurring=RecurringSchedule(5.0, 1.0, 3)) == TaskSubmission(
        "t"
    ).recurring(5.0, initial_delay=1.0, max_executions=3)
    assert TaskSubmission("t", cron=CronSchedule("*/5 * * * *")) == TaskSubmission("t").cron(
        "*/5 * * * *"
    )
    wire = TaskSubmission("t").recurring(5.0, initial_delay=2.0).to_wire(now_ms=1_000)
    assert wire.due_at_ms == 3_000 and wire.recurring is not None
    assert wire.recurring.interval_s == 5.0


def test_recurring_completed_travels_with_its_next_run() -> None:
    when = datetime(2027, 1, 1, tzinfo=UTC)
    event = RecurringCompleted(1, "t", "k" * 64, "l", execution_count=2, next_run=when)
    wire = event_to_wire(event)
    assert wire.data["next_run"] == int(when.timestamp() * 1000)
    assert event_from_wire(wire.type, wire.data) == event


def test_recurring_completions_are_counted_by_task_type() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    ids = (1, "sync", "k", "l")
    publisher.on_events(
        [Completed(*ids), RecurringCompleted(*ids, execution_count=1, next_run_ms=5)]
    )
    value = publisher.metrics.registry.get_sample_value
    assert value("taskmill_recurring_completed_total", {"task_type": "sync"}) == 1
    assert value("taskmill_tasks_completed_total", {"task_type": "sync"}) == 1
