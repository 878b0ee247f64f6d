"""Faults an embedded scheduler survives: a killed process, bad executors, bad frames."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import zmq

from bus.protocol import PROTOCOL
from taskmill import HistoryStatus, TaskContext, TaskHistoryRecord, TaskRecord, TaskSubmission
from taskmill.subscription import EventSubscription
from tests.scheduler_support import EventRecorder, Latch, builder


class CrashApp:
    """``python -m tests.crash_app`` on ``database``, run with its ipc sockets in a short
    temporary directory; killed (if need be) and cleaned up when the block ends."""

    def __init__(self, database: Path, *args: str) -> None:
        self.short = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # short ipc paths
        self.run_dir = self.short / "run"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_app", str(database), str(self.run_dir), *args],
            stdout=subprocess.PIPE,
            text=True,
        )

    async def line(self) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        return await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 30)

    async def __aenter__(self) -> CrashApp:
        assert (await self.line()).strip() == "ready"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.short, ignore_errors=True)


async def test_sigkill_mid_run_then_restart_completes_every_task_exactly_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tasks.db"
    setup = await builder(tmp_path).store_path(database).build()
    await setup.submit_batch([TaskSubmission("work", key=f"t{i}") for i in range(60)])
    await setup.close()

    async with CrashApp(database) as app:
        context: zmq.Context[Any] = zmq.Context()
        try:
            sub = await EventSubscription.open(context, f"ipc://{app.run_dir}/events.sock")
            recorder = EventRecorder(sub)
            await recorder.wait_count("completed", 10, timeout=30)
            await app.kill()  # mid-run: tasks are running right now
            await recorder.close()
        finally:
            context.destroy(linger=0)

    async def work(ctx: TaskContext) -> None:
        return None

    again = await builder(tmp_path, work=work).store_path(database).build()
    events = await EventRecorder.start(again)  # live before dispatching starts
    remaining = 60 - len(await again.store().history(limit=1000))  # before any completes
    async with again:
        await events.wait_count("completed", remaining, timeout=30)
        history = await again.store().history(limit=1000)
        keys = sorted(h.label for h in history if h.status == HistoryStatus.COMPLETED)
        assert keys == sorted(f"t{i}" for i in range(60))  # each exactly once
        assert await again.store().pending_count() == 0
        assert await again.store().running_count() == 0
        await events.close()


async def test_sigkill_while_submitting_loses_no_acknowledged_submission(tmp_path: Path) -> None:
    # The durability rule the benchmarks run under: a submit is acknowledged only once its
    # transaction is committed, so killing the process right after any acknowledgement (with
    # tasks running and completing meanwhile) loses none of them.
    database = tmp_path / "tasks.db"
    acked: dict[str, int] = {}
    async with CrashApp(database, "--submit") as app:
        while len(acked) < 300:
            word, key, task_id = (await app.line()).split()
            assert word == "acked"
            acked[key] = int(task_id)
        await app.kill()  # submits, runs and completions all in flight

    again = await builder(tmp_path).store_path(database).build()
    try:
        lost = []
        for key, task_id in acked.items():
            found = await again.task_lookup("work", key.encode())
            if not found.found or found.record is None or _task_id(found.record) != task_id:
                lost.append(key)
        assert lost == []
    finally:
        await again.close()


def _task_id(record: TaskRecord | TaskHistoryRecord) -> int:
    """The id of the task an active record or a history record is about."""
    return record.task_id if isinstance(record, TaskHistoryRecord) else record.id


async def test_an_executor_that_ignores_cancellation_does_not_stall_dispatch(
    tmp_path: Path,
) -> None:
    started = Latch()

    async def stubborn(ctx: TaskContext) -> None:
        started.release()
        await asyncio.Event().wait()  # never returns, ignores its token

    async def quick(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, stubborn=stubborn, quick=quick).max_concurrency(1).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("stubborn"))
        await events.wait_count("dispatched", 1)
        await scheduler.submit(TaskSubmission("quick"))
        assert await scheduler.cancel(outcome.id)
        await events.wait_count("cancelled", 1)
        # Its slot is free at once: the next task runs although the executor still hangs.
        await events.wait_count("completed", 1)
        assert events.of("completed")[0].task_type == "quick"
        await events.close()


async def test_garbage_on_the_dispatcher_sockets_changes_nothing(tmp_path: Path) -> None:
    async def work(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, work=work).build()
    async with scheduler:
        context = scheduler._context
        topology = scheduler.topology
        garbage = [
            [b"not a frame"],
            [PROTOCOL, b"dispatcher.cancel", b"1", b"\xc1"],
            [PROTOCOL, b"no.such.kind", b"2", b"\x80"],
            [b"TMP9", b"dispatcher.state", b"3", b"\x80"],
        ]
        for endpoint in (topology.dispatcher, topology.hosts):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            for frames in garbage:
                sock.send_multipart(frames)
            if endpoint == topology.dispatcher:  # requests get an error reply each
                replies = []
                for _ in garbage:
                    assert await asyncio.to_thread(sock.poll, 5000)
                    replies.append(sock.recv_multipart())
                assert all(reply[1] == b"error" for reply in replies)
            sock.close()
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("work"))
        await events.wait_count("completed", 1)
        assert not (await scheduler.is_paused())
        await events.close()
