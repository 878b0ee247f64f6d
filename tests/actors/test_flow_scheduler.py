"""Flow control in a real embedded scheduler: group pause and resume with their events, rate
limits set while running, the snapshot's view, and bad input."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import pytest

from taskmill import (
    AgingConfig,
    GroupAllocationInfo,
    GroupPaused,
    GroupResumed,
    GroupWeightChanged,
    Priority,
    RateLimit,
    TaskContext,
    TaskStatus,
    TaskSubmission,
    TypedTask,
)
from tests.scheduler_support import EventRecorder, builder


async def work(ctx: TaskContext) -> None:
    """Does nothing."""


def task(key: str, group: str | None = None, task_type: str = "work") -> TaskSubmission:
    return TaskSubmission(task_type, key=key, group=group)


async def test_a_paused_group_waits_while_other_work_runs_and_resumes(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, work=work).max_concurrency(4).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(task("early", "s3"))
        await events.wait_count("completed", 1)
        await scheduler.pause_group("s3")
        [paused] = await events.wait_count("group_paused", 1)
        assert paused == GroupPaused(group="s3", pending_count=0, running_count=0)
        [p1, *_] = await scheduler.submit_batch([task("p1", "s3"), task("p2", "s3"), task("free")])
        await events.wait_count("completed", 2)  # the ungrouped one
        assert {e.label for e in events.of("dispatched")} == {"early", "free"}
        snapshot = await scheduler.snapshot()
        assert [(p.group, p.paused_task_count, p.resume_at) for p in snapshot.paused_groups] == [
            ("s3", 2, None)
        ]
        assert (snapshot.pending_count, snapshot.paused_count) == (0, 2)  # inserted paused
        record = await scheduler.store().task_by_id(p1.id)
        assert record is not None and record.status == TaskStatus.PAUSED
        await scheduler.resume_group("s3")
        [resumed] = await events.wait_count("group_resumed", 1)
        assert resumed == GroupResumed(group="s3", resumed_count=2)
        await events.wait_count("completed", 4)
        assert (await scheduler.snapshot()).paused_groups == []
        await events.close()


async def test_a_pause_with_an_end_resumes_by_itself(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.pause_group("s3", until=timedelta(milliseconds=300))
        [paused] = (await scheduler.snapshot()).paused_groups
        assert paused.resume_at is not None and paused.resume_at > datetime.now(UTC)
        await scheduler.submit(task("p", "s3"))
        [resumed] = await events.wait_count("group_resumed", 1)
        assert resumed.resumed_count == 1
        await events.wait_count("completed", 1)
        assert events.of("group_resumed")[0].at >= paused.resume_at - timedelta(milliseconds=5)
        await events.close()


async def test_a_rate_limit_set_while_running_shows_in_the_snapshot_and_can_be_lifted(
    tmp_path: Path,
) -> None:
    scheduler = await (
        builder(tmp_path, work=work, email=work).rate_limit("email", RateLimit.per_minute(1))
    ).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([task(f"e{i}", task_type="email") for i in range(3)])
        await scheduler.submit(task("other"))
        await events.wait_count("completed", 2)  # one email (the burst), and the other type
        snapshot = await scheduler.snapshot()
        [limit] = snapshot.rate_limits
        assert (limit.scope, limit.permits, limit.interval, limit.burst) == (
            "type:email",
            1,
            60.0,
            1,
        )
        assert limit.available_tokens < 1
        assert snapshot.scheduled_count == 2  # each waits for its token
        await scheduler.set_rate_limit("email", RateLimit.per_second(100))
        await events.wait_count("completed", 4)  # the deferred ones meet the new bucket
        await scheduler.set_group_rate_limit("api", RateLimit.per_second(5).with_burst(2))
        await scheduler.set_rate_limit("email", None)
        assert [r.scope for r in (await scheduler.snapshot()).rate_limits] == ["group:api"]
        dispatched = events.of("dispatched")
        assert {(e.base_priority, e.effective_priority) for e in dispatched} == {(128, 128)}
        await events.close()


async def test_a_group_rate_limit_paces_its_tasks_with_nothing_else_to_wake_the_dispatcher(
    tmp_path: Path,
) -> None:
    """The group waits in the queue for its tokens; the Dispatcher, with no other work and no
    task scheduled, is woken for each."""
    scheduler = await (
        builder(tmp_path, work=work).group_rate_limit("api", RateLimit.per_second(20).with_burst(1))
    ).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([task(f"a{i}", "api") for i in range(5)])
        await events.wait_count("dispatched", 1)
        waiting = await scheduler.snapshot()  # the others wait in the queue, not rescheduled
        assert waiting.pending_count >= 1 and waiting.scheduled_count == 0
        await events.wait_count("completed", 5)
        starts = sorted(e.at for e in events.of("dispatched") if e.at is not None)
        gaps = [b - a for a, b in pairwise(starts)]
        assert min(gaps) >= timedelta(milliseconds=45)  # 20 a second (the clock is ms)
        assert max(gaps) < timedelta(milliseconds=500)  # woken for the token, not by chance
        await events.close()


async def test_weights_and_aging_configure_and_change_while_running(tmp_path: Path) -> None:
    scheduler = await (
        builder(tmp_path, work=work)
        .group_weight("a", 3)
        .default_group_weight(1)
        .group_minimum_slots("b", 1)
        .aging(AgingConfig(grace_period=300.0, interval=60.0, max_effective_priority=Priority.HIGH))
    ).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.set_group_weight("a", 5)
        await scheduler.submit_batch([task(f"a{i}", "a") for i in range(3)] + [task("b0", "b")])
        await events.wait_count("completed", 4)
        await events.close()


@dataclass
class Resize(TypedTask):
    TASK_TYPE: ClassVar[str] = "resize"
    path: str

    def label(self) -> str | None:
        return self.path


async def test_a_child_without_a_priority_of_its_own_keeps_its_aged_parents(
    tmp_path: Path,
) -> None:
    """The parent comes due 0.2 s after its submission; aging (no grace, a level a
    millisecond) has raised it to the cap by then. A child given no priority starts there too;
    one given a priority, or a typed child at an explicit one, keeps it."""

    async def parent(ctx: TaskContext) -> None:
        if ctx.phase == "execute":
            await ctx.spawn_children(
                [
                    TaskSubmission("child", key="inherits"),
                    TaskSubmission("child", key="own", priority=Priority.BACKGROUND),
                    TaskSubmission("child", key="own-normal", priority=Priority.NORMAL),
                    Resize("typed").to_submission(),  # at its type's priority: raised
                    Resize("typed-own").to_submission(Priority.IDLE),
                ]
            )

    scheduler = await (
        builder(tmp_path, parent=parent, child=work)
        .typed_executor(Resize, work)
        .aging(AgingConfig(grace_period=0.0, interval=0.001, max_effective_priority=Priority.HIGH))
    ).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(
            TaskSubmission("parent", key="p", priority=Priority.BACKGROUND).run_after(0.2)
        )
        dispatched = await events.wait_count("dispatched", 7)  # the parent twice
        first = next(e for e in dispatched if e.label == "p")
        assert (first.base_priority, first.effective_priority) == (
            Priority.BACKGROUND,
            Priority.HIGH,
        )
        by_label = {e.label: (e.base_priority, e.effective_priority) for e in dispatched}
        assert by_label["inherits"][0] == Priority.HIGH  # the parent's aged priority
        assert by_label["own"][0] == Priority.BACKGROUND
        assert by_label["own-normal"][0] == Priority.NORMAL
        assert by_label["typed"][0] == Priority.HIGH
        assert by_label["typed-own"][0] == Priority.IDLE
        await events.close()


async def test_weights_and_minimums_change_at_runtime_with_their_events(tmp_path: Path) -> None:
    scheduler = await (
        builder(tmp_path, work=work)
        .group_weight("a", 3)
        .group_weight("b", 2)
        .group_minimum_slots("b", 1)
    ).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.set_group_weight("a", 5)
        await scheduler.set_group_weight("a", 5)  # no change: no event
        await scheduler.remove_group_weight("b")
        await scheduler.set_group_minimum_slots("b", 0)
        await scheduler.set_group_weight("c", 4)
        await scheduler.reset_group_weights()
        changes = await events.wait_count("group_weight_changed", 5)
        assert changes == [
            GroupWeightChanged("a", 3.0, 5.0),
            GroupWeightChanged("b", 2.0, 1.0),
            GroupWeightChanged("c", 1.0, 4.0),
            GroupWeightChanged("a", 5.0, 1.0),
            GroupWeightChanged("c", 4.0, 1.0),
        ]
        await events.close()
    # Kept across a restart, over what the application is built with.
    scheduler = await (
        builder(tmp_path, work=work)
        .group_weight("a", 3)
        .group_minimum_slots("b", 1)
        .group_concurrency("a", 2)
        .aging(AgingConfig(grace_period=300.0, interval=60.0))
    ).build()
    async with scheduler:
        await scheduler.set_group_weight("d", 2)
        await scheduler.pause_all()
        await scheduler.submit_batch([task("a0", "a"), task("d0", "d"), task("d1", "d")])
        snapshot = await scheduler.snapshot()
        assert snapshot.group_allocations == [
            GroupAllocationInfo("d", 2.0, 0, running=0, pending=2, min_slots=None, cap=None)
        ]
        assert snapshot.aging_config == AgingConfig(grace_period=300.0, interval=60.0)
        await scheduler.set_group_minimum_slots("a", 1)
        [a, _] = (await scheduler.snapshot()).group_allocations
        assert a == GroupAllocationInfo("a", 1.0, 0, running=0, pending=1, min_slots=1, cap=2)
        with pytest.raises(ValueError):
            await scheduler.set_group_minimum_slots("b", -1)


async def test_bad_input_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        with pytest.raises(ValueError):
            RateLimit.per_second(-1)
        with pytest.raises(ValueError):
            RateLimit.per_minute(10).with_burst(0)
        with pytest.raises(ValueError):
            await scheduler.set_group_weight("g", 0)
        with pytest.raises(ValueError):
            await scheduler.set_group_weight("g", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await scheduler.remove_group_weight("")
        for n in (True, -1, 2**63, "2"):
            with pytest.raises(ValueError):
                await scheduler.set_group_minimum_slots("g", n)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await scheduler.pause_group("g", until=datetime.now(UTC) - timedelta(seconds=1))
        with pytest.raises(ValueError):
            await scheduler.pause_group("g", until=-1.0)
        with pytest.raises(ValueError):
            await scheduler.pause_group("")
        with pytest.raises(TypeError):
            await scheduler.set_rate_limit("email", 10)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            AgingConfig(interval=0)
        with pytest.raises(ValueError):
            AgingConfig(max_effective_priority=64, urgent_threshold=100)
        snapshot = await scheduler.snapshot()
        assert (snapshot.rate_limits, snapshot.paused_groups) == ([], [])
        assert snapshot.group_allocations == []
        await scheduler.resume_group("never-paused")  # unknown groups are fine
