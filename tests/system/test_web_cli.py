"""``taskmill web`` against a running deployment (an embedded scheduler on ipc sockets), and the
controls the dashboard added to ``Client``."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from scheduler_support import EventRecorder, Latches, builder

from taskmill import Client, RetryPolicy, Scheduler, TaskContext, TaskError, TaskSubmission
from taskmill.cli import main

pytestmark = pytest.mark.system


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A run directory short enough for ipc socket paths."""
    base = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))
    yield base / "run"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def scheduler(tmp_path: Path, run_dir: Path, latches: Latches) -> AsyncIterator[Scheduler]:
    async def boom(ctx: TaskContext) -> None:
        raise TaskError("no route to host", retryable=True)

    b = builder(tmp_path, hold=latches.run, boom=boom).run_dir(run_dir)
    async with await b.retry_policy("boom", RetryPolicy.none()).build() as s:
        yield s


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}


async def test_taskmill_web_serves_a_deployment_until_sigterm(
    scheduler: Scheduler, run_dir: Path
) -> None:
    recorder = await EventRecorder.start(scheduler)
    outcome = await scheduler.submit(TaskSubmission("hold", key="x"))
    await recorder.wait_count("dispatched", 1)
    command = [sys.executable, "-m", "taskmill", "web", "--run-dir", str(run_dir)]
    web = subprocess.Popen(
        [*command, "--web-port", "0"], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert web.stdout is not None
        line = await asyncio.to_thread(web.stdout.readline)
        assert line.startswith("taskmill web: serving http://127.0.0.1:"), line
        url = line.split("serving ", 1)[1].strip()
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            state = (await http.get("/api/state")).json()
            assert [t["id"] for t in state["running"]] == [outcome.id]
            cancel = await http.post(f"/api/tasks/{outcome.id}/cancel", headers={"X-Taskmill": "1"})
            assert cancel.json() == {"cancelled": True}
        assert outcome.id is not None
        assert (await scheduler.wait_result(outcome.id, timeout=10)).status == "cancelled"
        web.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(web.wait, 15) == 0
    finally:
        if web.poll() is None:
            web.kill()
            web.wait()
        if web.stdout is not None:
            web.stdout.close()
    await recorder.close()


def test_taskmill_web_refuses_another_address_without_a_token(
    run_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TASKMILL_WEB_TOKEN", raising=False)
    assert main(["web", "--run-dir", str(run_dir), "--bind", "0.0.0.0"]) == 2
    assert "serves '0.0.0.0' only with a token" in capsys.readouterr().err


async def test_the_client_pauses_resumes_and_retries_a_dead_letter(scheduler: Scheduler) -> None:
    recorder = await EventRecorder.start(scheduler)
    await scheduler.submit(TaskSubmission("boom", key="b"))
    await recorder.wait_count("dead_lettered", 1)
    [dead] = await scheduler.store().dead_letter_tasks()

    def use_client() -> tuple[bool, bool, str]:
        with Client(scheduler.topology) as client:
            client.pause_all()
            paused = client.snapshot().is_paused
            client.resume_all()
            resumed = not client.snapshot().is_paused
            return paused, resumed, client.retry_dead_letter(dead.id).kind.value

    assert await asyncio.to_thread(use_client) == (True, True, "inserted")
    await recorder.wait_count("dead_lettered", 2)  # it ran again
    await recorder.close()
