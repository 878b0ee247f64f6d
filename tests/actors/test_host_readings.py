"""Readings from where the work runs: an executor host on another machine reports its own
readings, and the IO budget of the tasks sent to it is judged by them.

A real embedded scheduler (ipc) whose monitor reads a fake sampler, and a second executor host
in its own thread and zmq context standing for a worker on another machine; its readings come
from a fake at the sampling edge. Nothing sleeps: the tests wait for events.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.host.actor import ExecutorHost, HostSettings
from bus.client import RequestClient
from bus.hosting import ActorThread
from bus.kinds import Stats, StatsReply
from taskmill import (
    HostResources,
    ResourceSnapshot,
    SamplerConfig,
    Scheduler,
    TaskSubmission,
)
from taskmill.context import make_runner
from tests.scheduler_support import EventRecorder, Latches, builder

FAST = SamplerConfig(interval=0.05, ewma_alpha=1.0)
MB = 1_000_000
IDLE = {"cpu": 0.1, "disk_read_bps": 0.0, "disk_write_bps": 0.0, "net_rx_bps": 0.0}
BUSY = {**IDLE, "disk_write_bps": 9.5 * MB}
"""With 10 MB/s of write capacity, 9.5 MB/s written leaves 2 s x 0.5 MB/s = 1 MB of budget."""


class FakeSampler:
    def __init__(self, snapshot: ResourceSnapshot) -> None:
        self.snapshot = snapshot

    def sample(self) -> ResourceSnapshot:
        return self.snapshot


@pytest.fixture
def run_dir() -> Iterator[Path]:
    short = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # ipc paths must be short
    yield short / "run"
    shutil.rmtree(short, ignore_errors=True)


@asynccontextmanager
async def far_host(
    scheduler: Scheduler, runs: Latches, readings: Callable[[], dict[str, float]]
) -> AsyncIterator[ActorThread]:
    """An executor host for type ``far`` that samples its own machine (``readings``)."""
    topology = scheduler.topology
    settings = HostSettings(
        topology.hosts, topology.store, capacity=4, host_id="far", machine="far-box"
    )
    host = ExecutorHost({"far": make_runner(runs.run)}, settings, read_machine=readings)
    context: zmq.Context[Any] = zmq.Context()
    thread = await asyncio.to_thread(ActorThread(host, context, topology.host_control("far")).start)
    try:
        yield thread
    finally:
        runs.release_all()
        await asyncio.to_thread(thread.stop)
        context.term()


def writer(label: str) -> TaskSubmission:
    return TaskSubmission("far", key=label, label=label).expected_io(0, 8 * MB)


def dispatched(events: EventRecorder, label: str) -> bool:
    return any(e.label == label for e in events.of("dispatched"))


def host_reports(events: EventRecorder) -> int:
    return sum(isinstance(e, HostResources) for e in events.events)


async def two_more_reports(events: EventRecorder) -> None:
    """Two more heartbeats with readings: the Dispatcher had cycles with them since."""
    seen = host_reports(events)
    await events.wait_for(lambda evs: host_reports(events) >= seen + 2)


async def scheduler_with(run_dir: Path, tmp_path: Path, monitor: dict[str, float]) -> Scheduler:
    sampler = FakeSampler(ResourceSnapshot(io_write_bytes_per_sec=monitor["disk_write_bps"]))
    b = builder(tmp_path).run_dir(run_dir).resource_sampler(sampler).sampler_config(FAST)
    return await b.disk_bandwidth(1_000 * MB, 10 * MB).build()


async def test_a_task_sent_to_another_machine_is_judged_by_that_machines_disk(
    tmp_path: Path, run_dir: Path
) -> None:
    """The monitor's machine writes 9.5 MB/s of its 10, the far host's machine nothing: two
    8 MB writers fit the far machine's 20 MB budget and run together there."""
    runs = Latches()
    scheduler = await scheduler_with(run_dir, tmp_path, BUSY)
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        async with far_host(scheduler, runs, lambda: IDLE):
            await events.wait_for(lambda evs: host_reports(events) > 0)
            await scheduler.submit(writer("first"))
            await events.wait_for(lambda evs: dispatched(events, "first"))
            await scheduler.submit(writer("second"))
            await events.wait_for(lambda evs: dispatched(events, "second"))
            snapshot = await scheduler.snapshot()
            assert snapshot.resources["disk_write_bps"] == 9.5 * MB  # the monitor's machine
            assert snapshot.host_resources == {"far": {**IDLE, "net_tx_bps": 0.0}}
            report = next(e for e in events.events if isinstance(e, HostResources))
            assert (report.host, report.machine) == ("far", "far-box")
        await events.close()


async def test_a_busy_far_machine_holds_its_tasks_while_the_monitors_is_idle(
    tmp_path: Path, run_dir: Path
) -> None:
    """The reverse: the far machine writes 9.5 MB/s, so a second writer waits beside the first
    there although the monitor's machine is idle, and starts once the far disk quietens."""
    runs = Latches()
    reported = [BUSY]
    scheduler = await scheduler_with(run_dir, tmp_path, IDLE)
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        async with far_host(scheduler, runs, lambda: reported[-1]):
            await events.wait_for(lambda evs: host_reports(events) > 0)
            await scheduler.submit(writer("first"))
            await events.wait_for(lambda evs: dispatched(events, "first"))
            await scheduler.submit(writer("second"))
            await two_more_reports(events)
            assert not dispatched(events, "second")
            reported.append(IDLE)  # its disk quietened
            await events.wait_for(lambda evs: dispatched(events, "second"))
        await events.close()


async def test_a_host_whose_sampling_fails_still_heartbeats_and_reports_when_it_works_again(
    tmp_path: Path, run_dir: Path
) -> None:
    """A sampler that raises costs that heartbeat its readings (counted in the host's stats),
    never the heartbeat: the host stays known and reports again at the next good sample."""
    calls: list[int] = []

    def flaky() -> dict[str, float]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("no counters yet")
        return IDLE

    scheduler = await scheduler_with(run_dir, tmp_path, IDLE)
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        async with far_host(scheduler, Latches(), flaky) as thread:
            await events.wait_for(lambda evs: host_reports(events) > 0)
            stats = RequestClient(thread.context, thread.control_endpoint, timeout=5.0)
            try:
                counters = stats.call(Stats(), StatsReply).counters
            finally:
                stats.close()
            assert counters["sampler_errors"] == 1 and counters["reconnects"] == 0
            assert "far" in (await scheduler.snapshot()).host_resources
        await events.close()
