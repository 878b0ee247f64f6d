"""Backpressure and IO budgets in a real embedded scheduler, with a fake sampler and sources."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taskmill import (
    Priority,
    Resources,
    ResourceSnapshot,
    SamplerConfig,
    SchedulerEvent,
    TaskContext,
    TaskSubmission,
    ThrottlePolicy,
)
from tests.scheduler_support import EventRecorder, Latches, builder

FAST = SamplerConfig(interval=0.05, ewma_alpha=1.0)  # no smoothing: readings follow at once


class Knob:
    """A pressure source the test turns (read from the monitor's thread)."""

    def __init__(self) -> None:
        self.value = 0.0

    def pressure(self) -> float:
        return self.value

    def name(self) -> str:
        return "knob"


class FakeSampler:
    def __init__(self) -> None:
        self.snapshot = ResourceSnapshot()

    def sample(self) -> ResourceSnapshot:
        return self.snapshot


def resources(
    predicate: Callable[[Resources], bool],
) -> Callable[[list[SchedulerEvent]], bool]:
    def match(events: list[SchedulerEvent]) -> bool:
        return any(isinstance(e, Resources) and predicate(e) for e in events)

    return match


async def two_more_readings(events: EventRecorder) -> None:
    """Wait until the monitor published twice more: the Dispatcher has seen the same readings
    since, and had cycles (each submission and completion runs one) to dispatch held work."""
    seen = sum(isinstance(e, Resources) for e in events.events)
    await events.wait_for(lambda evs: sum(isinstance(e, Resources) for e in evs) >= seen + 2)


def sub(key: str, priority: int) -> TaskSubmission:
    return TaskSubmission("work", key=key, priority=priority)


async def noop(ctx: TaskContext) -> None:
    return None


async def test_pressure_holds_background_above_half_and_normal_above_three_quarters(
    tmp_path: Path,
) -> None:
    knob = Knob()
    scheduler = await (
        builder(tmp_path, work=noop).pressure_source(knob).sampler_config(FAST).build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        knob.value = 0.8
        await events.wait_for(resources(lambda r: r.pressure == 0.8))
        await scheduler.submit_batch(
            [sub("bg", Priority.BACKGROUND), sub("normal", Priority.NORMAL), sub("high", 64)]
        )
        await events.wait_count("completed", 1)
        await two_more_readings(events)
        assert [e.label for e in events.of("completed")] == ["high"]
        assert await scheduler.store().pending_count() == 2
        snap = await scheduler.snapshot()
        assert snap.pressure == 0.8 and ("knob", 0.8) in snap.pressure_breakdown
        knob.value = 0.6  # NORMAL may run now, BACKGROUND not yet
        await events.wait_count("completed", 2)
        await two_more_readings(events)
        assert events.of("completed")[1].label == "normal"
        assert await scheduler.store().pending_count() == 1
        knob.value = 0.5  # not above 0.5: BACKGROUND runs
        await events.wait_count("completed", 3)
        assert events.of("completed")[2].label == "bg"
        await events.close()


async def test_an_empty_throttle_policy_holds_nothing_at_full_pressure(tmp_path: Path) -> None:
    knob = Knob()
    knob.value = 1.0
    scheduler = await (
        builder(tmp_path, work=noop)
        .pressure_source(knob)
        .sampler_config(FAST)
        .throttle_policy(ThrottlePolicy([]))
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await events.wait_for(resources(lambda r: r.pressure == 1.0))
        await scheduler.submit_batch([sub("bg", Priority.BACKGROUND), sub("idle", Priority.IDLE)])
        await events.wait_count("completed", 2)
        assert (await scheduler.snapshot()).pressure == 1.0
        await events.close()


async def test_work_held_by_pressure_starts_once_the_monitor_stops(tmp_path: Path) -> None:
    """A monitor that dies while pressure is high must not stall the deployment: its last
    reading expires after three sampling intervals and the held work starts. (Intervals long
    enough that a loaded machine cannot hold a live monitor's thread back for three of them.)"""
    knob = Knob()
    knob.value = 0.9
    scheduler = await (
        builder(tmp_path, work=noop)
        .pressure_source(knob)
        .sampler_config(SamplerConfig(interval=0.3, ewma_alpha=1.0))
        .separate_threads()
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await events.wait_for(resources(lambda r: r.pressure == 0.9))
        await scheduler.submit_batch([sub("normal", Priority.NORMAL), sub("bg", 192)])
        await two_more_readings(events)
        assert await scheduler.store().pending_count() == 2
        await asyncio.to_thread(scheduler._threads["monitor"].stop)
        await events.wait_count("completed", 2)
        assert (await scheduler.snapshot()).pressure == 0.0
        await events.close()


def dispatched(events: EventRecorder, label: str) -> bool:
    return any(e.label == label for e in events.of("dispatched"))


async def test_the_readme_upload_example_starts_on_a_quiet_machine(tmp_path: Path) -> None:
    """Parts declaring the bytes they send all start while the machine sends ~2 B/s: the
    budget is headroom below a capacity, not a share of what happens to be moving."""
    sampler = FakeSampler()
    sampler.snapshot = ResourceSnapshot(net_rx_bytes_per_sec=2.0, net_tx_bytes_per_sec=2.0)
    parts = Latches()
    scheduler = await (
        builder(tmp_path, upload_part=parts.run)
        .resource_sampler(sampler)
        .sampler_config(FAST)
        .max_concurrency(4)
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await events.wait_for(resources(lambda r: r.net_tx_bps == 2.0))
        uploads = [
            TaskSubmission("upload-part", key=f"etag-{n}").expected_net_io(0, 5_000_000)
            for n in range(4)
        ]
        await scheduler.submit_batch(uploads)
        await events.wait_count("dispatched", 4)
        for n in range(4):
            parts[f"etag-{n}"].release()
        await events.wait_count("completed", 4)
        await events.close()


@pytest.mark.parametrize("axis", ["disk", "network"])
async def test_a_configured_capacity_holds_a_second_big_task_while_the_first_runs(
    tmp_path: Path, axis: str
) -> None:
    """10 MB/s configured, nothing moving: 20 MB of headroom, so two 15 MB tasks run one after
    the other, and a task declaring no bytes passes meanwhile. (A held task ends the cycle:
    the light one passes because it is more urgent, not by skipping the held one.)"""
    runs = Latches()
    b = builder(tmp_path, work=runs.run).resource_sampler(FakeSampler()).sampler_config(FAST)
    limited = (
        b.disk_bandwidth(1_000_000_000, 10_000_000) if axis == "disk" else b.bandwidth_limit(10**7)
    )

    def big(key: str) -> TaskSubmission:
        submission = TaskSubmission("work", key=key)
        if axis == "disk":
            return submission.expected_io(0, 15_000_000)
        return submission.expected_net_io(15_000_000, 0)

    scheduler = await limited.build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(big("first"))
        await events.wait_for(lambda evs: dispatched(events, "first"))
        await scheduler.submit_batch([big("second"), sub("light", Priority.HIGH)])
        await events.wait_for(lambda evs: dispatched(events, "light"))
        runs["light"].release()
        await events.wait_count("completed", 1)
        await two_more_readings(events)
        assert not dispatched(events, "second")
        runs["first"].release()
        await events.wait_for(lambda evs: dispatched(events, "second"))
        runs["second"].release()
        await events.wait_count("completed", 3)
        await events.close()


async def test_learned_io_applies_from_the_run_after_the_fifth_completed_one(
    tmp_path: Path,
) -> None:
    """Runs of `copy` declare nothing but read 1 MB each. Once five have completed, the sixth
    counts as 1 MB: beside a running reader it exceeds the 200 KB budget and waits for it."""
    runs = Latches()

    async def copy(ctx: TaskContext) -> None:
        ctx.record_read_bytes(1_000_000)

    scheduler = await (
        builder(tmp_path, block=runs.run, copy=copy)
        .resource_sampler(FakeSampler())
        .sampler_config(FAST)
        .disk_bandwidth(100_000, 10**9)
        .max_concurrency(2)
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        reader = TaskSubmission("block", key="reader", priority=Priority.HIGH).expected_io(1, 0)
        await scheduler.submit(reader)
        await events.wait_for(lambda evs: dispatched(events, "reader"))
        # One slot left: the copies run one after the other.
        await scheduler.submit_batch([TaskSubmission("copy", key=f"copy-{n}") for n in range(6)])
        await events.wait_count("completed", 5)
        await two_more_readings(events)
        assert not dispatched(events, "copy-5")
        runs["reader"].release()
        await events.wait_count("completed", 7)
        order = [e.label for e in events.events if e.type in ("dispatched", "completed")]
        assert order.index("copy-5") > order.index("reader", order.index("copy-4"))
        await events.close()


async def test_a_reading_from_another_process_holds_work_until_it_expires(
    tmp_path: Path,
) -> None:
    scheduler = await (
        builder(tmp_path, work=noop)
        .run_dir(tmp_path / "run")
        .sampler_config(SamplerConfig(interval=0.1))
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        endpoint = scheduler.topology.pressure
        code = (
            "import sys; from taskmill import publish_pressure; "
            "sys.exit(0 if publish_pressure(sys.argv[1], 'web-app', 0.9) else 1)"
        )
        subprocess.run([sys.executable, "-c", code, endpoint], check=True, timeout=30)
        await events.wait_for(resources(lambda r: ("web-app", 0.9) in r.breakdown))
        await scheduler.submit(sub("bg", Priority.BACKGROUND))
        # Held while the reading is fresh; 3 intervals later it expires and the task runs.
        await events.wait_count("completed", 1)
        kinds = [
            ("held" if e.pressure > 0 else "free") if isinstance(e, Resources) else e.type
            for e in events.events
        ]
        first_held = kinds.index("held")
        expiry = kinds.index("free", first_held)
        assert expiry < kinds.index("dispatched"), kinds  # it ran only after the expiry
        await events.close()


async def test_taskmill_status_shows_live_readings_of_the_real_sampler(tmp_path: Path) -> None:
    """The platform (psutil) sampler, and `taskmill status` from another process."""
    import json
    import shutil
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))
    try:
        scheduler = await (
            builder(tmp_path, work=noop).run_dir(short / "run").with_resource_monitoring().build()
        )
        async with scheduler:
            events = await EventRecorder.start(scheduler)
            await events.wait_for(resources(lambda r: True), timeout=10)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "taskmill",
                    "status",
                    "--json",
                    "--run-dir",
                    str(short / "run"),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            status = json.loads(done.stdout)
            readings = status["resources"]
            assert set(readings) == {
                "cpu",
                "disk_read_bps",
                "disk_write_bps",
                "net_rx_bps",
                "net_tx_bps",
            }
            assert 0.0 <= readings["cpu"] <= 1.0
            assert all(value >= 0 for value in readings.values())
            text = subprocess.run(
                [sys.executable, "-m", "taskmill", "status", "--run-dir", str(short / "run")],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            assert "cpu" in text.lower()
            await events.close()
    finally:
        shutil.rmtree(short, ignore_errors=True)
