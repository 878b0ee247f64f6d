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

from taskmill import HistoryStatus, TaskContext, TaskHistoryRecord, TaskRecord, TaskSubmission
from taskmill.subscription import EventSubscription
from tests.scheduler_support import EventRecorder, Latch, builder


async def test_sigkill_mid_run_then_restart_completes_every_task_exactly_once(
    tmp_path: Path,
) -> None:
    database = tmp_path / "tasks.db"
    short = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # short ipc paths
    run_dir = short / "run"
    setup = await builder(tmp_path).store_path(database).build()
    await setup.submit_batch([TaskSubmission("work", key=f"t{i}") for i in range(60)])
    await setup.close()

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_app", str(database), str(run_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        stdout = process.stdout
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)
        assert line.strip() == "ready"
        context: zmq.Context[Any] = zmq.Context()
        try:
            sub = await EventSubscription.open(context, f"ipc://{run_dir}/events.sock")
            recorder = EventRecorder(sub)
            await recorder.wait_count("completed", 10, timeout=30)
            process.send_signal(signal.SIGKILL)  # mid-run: tasks are running right now
            await asyncio.to_thread(process.wait, 30)
            await recorder.close()
        finally:
            context.destroy(linger=0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(short, ignore_errors=True)

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
    short = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # short ipc paths
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crash_app", str(database), str(short / "run"), "--submit"],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: dict[str, int] = {}
    try:
        assert process.stdout is not None
        stdout = process.stdout
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)
        assert line.strip() == "ready"
        while len(acked) < 300:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), 30)
            word, key, task_id = line.split()
            assert word == "acked"
            acked[key] = int(task_id)
        process.send_signal(signal.SIGKILL)  # submits, runs and completions all in flight
        await asyncio.to_thread(process.wait, 30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        shutil.rmtree(short, ignore_errors=True)

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
            [b"TMP1", b"dispatcher.cancel", b"1", b"\xc1"],
            [b"TMP1", b"no.such.kind", b"2", b"\x80"],
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
