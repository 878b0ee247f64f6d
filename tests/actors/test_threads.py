"""Where an embedded scheduler runs executors, and noticing an executor that blocks its loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.host.lag import LagWatch
from bus.clock import FakeClock
from bus.endpoints import inproc, new_namespace
from bus.hosting import ActorThread
from bus.runtime import Actor, ActorLoop
from taskmill import TaskContext, TaskSubmission
from tests.scheduler_support import EventRecorder, builder


async def _thread_running(tmp_path: Path, work: Any, *, separate: bool | None = None) -> str:
    """The name of the thread ``work`` ran in, in a real embedded scheduler."""
    seen: list[str] = []

    def record(ctx: TaskContext) -> None:
        seen.append(threading.current_thread().name)

    b = builder(tmp_path, work=work(record))
    if separate is not None:
        b.executor_thread(separate)
    scheduler = await b.build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("work"))
        await events.wait_count("completed", 1)
        await events.close()
    return seen[0]


def _async(record: Any) -> Any:
    async def work(ctx: TaskContext) -> None:
        record(ctx)

    return work


def _plain(record: Any) -> Any:
    def work(ctx: TaskContext) -> None:  # blocking work belongs here
        record(ctx)

    return work


async def test_async_executors_share_the_scheduler_thread_by_default(tmp_path: Path) -> None:
    assert await _thread_running(tmp_path, _async) == "taskmill-actors"


async def test_executor_thread_gives_the_executors_a_thread_of_their_own(tmp_path: Path) -> None:
    assert await _thread_running(tmp_path, _async, separate=True) == "taskmill-worker"


@pytest.mark.parametrize("separate", [False, True])
async def test_plain_def_executors_run_in_worker_threads_either_way(
    tmp_path: Path, separate: bool
) -> None:
    name = await _thread_running(tmp_path, _plain, separate=separate)
    assert name not in ("taskmill-actors", "taskmill-worker", "MainThread")


def test_a_timer_running_late_is_counted_and_logged_once_per_quiet_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    watch = LagWatch(clock, interval=0.25, threshold=0.5, quiet_s=60.0)
    watch.arm()  # as start() does
    clock.advance(0.25)
    with caplog.at_level(logging.WARNING, logger="taskmill.worker"):
        watch.tick()
        assert watch.last_late_s == 0.0  # on time
        clock.advance(0.25 + 0.8)  # something held the loop for 0.8 s
        watch.tick()
        assert watch.last_late_s == pytest.approx(0.8)
        clock.advance(0.25 + 0.6)
        watch.tick()
    assert (watch.blocked, watch.longest_s) == (2, pytest.approx(0.8))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "held for 0.80s" in warnings[0]
    assert "plain `def` executor" in warnings[0]
    clock.advance(60.25)
    with caplog.at_level(logging.WARNING, logger="taskmill.worker"):
        watch.tick()  # late again after the quiet period: logged again
    assert len(caplog.records) == 2


def test_a_loop_that_keeps_time_is_never_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    watch = LagWatch(clock, interval=0.25, threshold=0.5)
    watch.arm()
    with caplog.at_level(logging.WARNING, logger="taskmill.worker"):
        for _ in range(100):
            clock.advance(0.25 + 0.4)  # late, but under the threshold
            watch.tick()
    assert watch.blocked == 0 and not caplog.records


class _Crashing(Actor):
    """An actor whose handler raises on the first message: a bug in a handler."""

    name = "crashing"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def setup(self, loop: ActorLoop) -> None:
        sock = loop.socket(zmq.PULL)
        loop.bind(sock, self.endpoint)
        loop.add_reader(sock, self.explode)

    def explode(self, batch: list[list[bytes]]) -> None:
        raise RuntimeError("bug in a handler")


class _AsyncMember(Actor):
    name = "async-member"
    uses_asyncio = True

    def setup(self, loop: ActorLoop) -> None:
        pass


def test_a_crash_in_a_group_driven_by_asyncio_is_not_swallowed() -> None:
    context: zmq.Context[Any] = zmq.Context()
    ns = new_namespace()
    try:
        inbox = inproc(ns, "inbox")
        members = [(_Crashing(inbox), inproc(ns, "c1")), (_AsyncMember(), inproc(ns, "c2"))]
        thread = ActorThread(members, context, name="group").start()
        # The crash comes once start() has returned (a crash from the first turn of the loop
        # could beat start() to its check, and be raised there instead).
        push = context.socket(zmq.PUSH)
        push.connect(inbox)
        push.send(b"boom")
        with pytest.raises(RuntimeError, match="bug in a handler"):
            thread.stop(timeout=5)
        assert not thread.alive
    finally:
        context.destroy(linger=0)


async def test_closing_does_not_wait_for_an_executor_blocked_in_a_thread(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    async def work(ctx: TaskContext) -> None:
        started.set()
        await asyncio.to_thread(release.wait)  # a blocking call, moved off the loop as advised

    scheduler = await builder(tmp_path, work=work).build()
    try:
        async with scheduler:
            await scheduler.submit(TaskSubmission("work"))
            assert await asyncio.to_thread(started.wait, 10)
        # The actors stopped (the Store closed its database) though the thread still blocks.
        assert "taskmill-actors" not in [t.name for t in threading.enumerate()]
        assert not release.is_set()
    finally:
        release.set()
