"""Group concurrency in a real embedded scheduler (the GroupLimiter as the gate's last step)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from taskmill import TaskContext, TaskSubmission
from tests.scheduler_support import Concurrency, EventRecorder, Latch, builder


def in_group(group: str | None, key: str) -> TaskSubmission:
    return TaskSubmission("upload", key=key, group=group)


async def test_a_group_limit_is_never_exceeded_and_raising_it_lets_more_run(
    tmp_path: Path,
) -> None:
    gauges: defaultdict[str, Concurrency] = defaultdict(Concurrency)
    latch = Latch()

    async def upload(ctx: TaskContext) -> None:
        with gauges[ctx.record.group_key or "-"]:
            ctx.progress.report(0.0, "in")
            await latch.wait(ctx)

    scheduler = await (
        builder(tmp_path, upload=upload).max_concurrency(8).group_concurrency("s3://a", 2).build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([in_group("s3://a", f"a{i}") for i in range(6)])
        await events.wait_count("progress", 2)
        assert gauges["s3://a"].peak == 2
        # Ungrouped work and other groups keep flowing while s3://a is saturated.
        await scheduler.submit_batch([in_group(None, "free"), in_group("s3://b", "b0")])
        await events.wait_count("progress", 4)
        assert {e.label for e in events.of("progress")} >= {"free", "b0"}
        assert gauges["s3://a"].peak == 2
        await scheduler.set_group_limit("s3://a", 4)
        await events.wait_count("progress", 6)
        assert gauges["s3://a"].peak == 4
        latch.release()
        await events.wait_count("completed", 8)
        assert gauges["s3://a"].peak == 4
        await events.close()


async def test_default_group_concurrency_and_zero_blocking_a_group(tmp_path: Path) -> None:
    gauges: defaultdict[str, Concurrency] = defaultdict(Concurrency)
    latch = Latch()

    async def upload(ctx: TaskContext) -> None:
        with gauges[ctx.record.group_key or "-"]:
            ctx.progress.report(0.0)
            await latch.wait(ctx)

    scheduler = await (
        builder(tmp_path, upload=upload)
        .max_concurrency(8)
        .default_group_concurrency(1)
        .group_concurrency("blocked", 0)
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        subs = [in_group(g, f"{g}{i}") for g in ("x", "y", "blocked") for i in range(3)]
        await scheduler.submit_batch(subs)
        await events.wait_count("progress", 2)
        assert {e.label[0] for e in events.of("progress")} == {"x", "y"}
        assert gauges["x"].peak == gauges["y"].peak == 1
        await scheduler.remove_group_limit("blocked")  # falls back to the default, 1
        await events.wait_count("progress", 3)
        assert gauges["blocked"].peak == 1
        await scheduler.set_default_group_concurrency(0)  # unlimited now
        await events.wait_count("progress", 8)  # 8 = max_concurrency
        limits = await scheduler.group_limits()
        assert (limits.default, limits.overrides) == (0, {})
        latch.release()
        await events.wait_count("completed", 9)
        await events.close()


async def test_held_groups_keep_priority_order_among_admitted_tasks(tmp_path: Path) -> None:
    order: list[str] = []

    async def upload(ctx: TaskContext) -> None:
        order.append(ctx.record.label)

    scheduler = await (
        builder(tmp_path, upload=upload).max_concurrency(1).group_concurrency("off", 0).build()
    )
    await scheduler.submit_batch(
        [
            TaskSubmission("upload", key="held", group="off", priority=0),
            TaskSubmission("upload", key="second", priority=128),
            TaskSubmission("upload", key="first", priority=64),
        ]
    )
    events = await EventRecorder.start(scheduler)  # live before dispatching starts
    async with scheduler:
        await events.wait_count("completed", 2)
        await events.close()
    assert order == ["first", "second"]
