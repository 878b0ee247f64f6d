"""The Procfile deployment: every actor its own OS process on ipc sockets, as `honcho` runs them.

The actors are started with ``python -m taskmill <actor>`` and the deployment in ``TASKMILL_*``
environment variables; tasks come from a separate client process, events are followed by a
separate ``taskmill watch --json`` process. Every process is stopped in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill.processes import ACTORS
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import REPO, Deployment, deployed

pytestmark = [pytest.mark.system, pytest.mark.timeout(40)]

TASKS = 200


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def _run(deployment: Deployment, *args: str, timeout: float = 15.0) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "taskmill", *args],
        cwd=REPO,
        env=deployment.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_tasks_from_a_client_process_all_complete_and_a_subscriber_process_sees_them(
    deployment: Deployment,
) -> None:
    deployment.start_actors(workers=("w1", "w2"))
    watcher = deployment.start("watch", "watch", "--json", pipe=True)
    assert watcher.stderr is not None and watcher.stdout is not None
    watcher.stderr.until(lambda line: line.startswith("watching "), timeout=15)

    client = deployment.spawn("client", [sys.executable, "-m", "tests.system_client", str(TASKS)])
    assert client.popen.wait(20) == 0, client.log_tail()
    assert client.log is not None
    submitted = json.loads(client.log.read_text().splitlines()[-1])
    assert submitted["kinds"] == {"inserted": TASKS}
    ids = set(submitted["ids"])
    assert len(ids) == TASKS

    completed: set[int] = set()
    failures: list[dict[str, object]] = []

    def all_done(line: str) -> bool:
        event = json.loads(line)
        if event["type"] == "completed":
            completed.add(event["task_id"])
        elif event["type"] == "failed":
            failures.append(event)
        return completed >= ids

    watcher.stdout.until(all_done, timeout=20)
    assert completed == ids
    assert failures == []

    with Client(deployment.topology) as client_here:
        history = client_here.history(limit=2 * TASKS)
        snapshot = client_here.snapshot()
    assert sorted(h.task_id for h in history) == sorted(ids)
    assert {h.status for h in history} == {"completed"}
    assert snapshot.running == [] and snapshot.pending_count == 0

    status = json.loads(_run(deployment, "status", "--json"))
    assert status["pending_count"] == 0
    assert status["running"] == []
    assert status["max_concurrency"] == 16
    assert status["is_paused"] is False

    # The work was shared by the two executor hosts' processes, every task run once.
    ran = 0
    for host_id in ("w1", "w2"):
        stats = json.loads(_run(deployment, "stats", "worker", "--host-id", host_id, "--json"))
        assert stats["name"] == "worker"
        ran += stats["counters"]["ok"]
    assert ran == TASKS

    # SIGTERM stops every actor cleanly: exit status 0.
    codes = deployment.stop_all()
    actor_codes = {k: v for k, v in codes.items() if not k.startswith(("client", "watch"))}
    assert set(actor_codes.values()) == {0}, codes


def test_ping_answers_for_every_actor_and_submit_and_status_work_from_the_command_line(
    deployment: Deployment,
) -> None:
    deployment.start_actors(workers=("w1",))
    out = _run(deployment, "ping")
    for actor in ("store", "dispatcher", "monitor", "limiter", "events"):
        assert re.search(rf"^{actor}\s+pong from {actor}", out, re.M), out
    assert "pong from worker" in _run(deployment, "ping", "worker", "--host-id", "w1")

    watcher = deployment.start("watch", "watch", "--json", pipe=True)
    assert watcher.stderr is not None and watcher.stdout is not None
    watcher.stderr.until(lambda line: line.startswith("watching "), timeout=15)
    outcome = json.loads(_run(deployment, "submit", "noop", "--key", "cli", "--json"))
    assert outcome["kind"] == "inserted"
    assert _run(deployment, "submit", "noop", "--key", "cli", "--priority", "high") in (
        "duplicate\n",  # still active
        f"inserted #{outcome['id'] + 1}\n",  # already completed: a new run
    )
    watcher.stdout.until(
        lambda line: (
            json.loads(line)["type"] == "completed" and json.loads(line)["task_id"] == outcome["id"]
        ),
        timeout=15,
    )
    text = _run(deployment, "status")
    assert "max concurrency 16" in text and "pending" in text


def test_an_actor_that_crashes_exits_non_zero(deployment: Deployment, tmp_path: Path) -> None:
    deployment.env["TASKMILL_DATABASE"] = str(tmp_path)  # a directory: the Store cannot open it
    store = deployment.start("store", "store")
    assert store.popen.wait(15) == 1
    assert "cannot open the task database" in store.log_tail()


@pytest.mark.parametrize("actor", ["store", "limiter"])
def test_a_second_copy_of_an_actor_on_the_same_run_directory_exits_and_leaves_the_first_alone(
    deployment: Deployment, actor: str
) -> None:
    first = deployment.start(actor, actor)
    deployment.wait_ready(first, deployment.control(actor))
    second = deployment.start(actor, actor)
    assert second.popen.wait(15) == 2
    log = second.log_tail()
    assert f"{actor}: not started: another {actor} runs on this run directory" in log
    assert f"process {first.popen.pid} already serves it" in log
    assert "Traceback" not in log
    # The first copy still owns its endpoints, so the stop meant for it reaches it.
    deployment.wait_ready(first, deployment.control(actor))
    assert deployment.stop(first) == 0
    assert f"{actor}: stopped" in first.log_tail()
    # Once it is gone, another copy starts.
    third = deployment.start(actor, actor)
    deployment.wait_ready(third, deployment.control(actor))


def test_the_procfile_runs_every_actor_from_the_example_configuration() -> None:
    lines = (REPO / "Procfile").read_text().splitlines()
    entries = dict(
        line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert set(entries) == {*ACTORS, "web"}  # the dashboard: a client, not an actor
    for name, command in entries.items():
        assert command.split()[:2] == ["taskmill", name]
        assert "--config examples/taskmill.toml" in command
    config = (REPO / "examples" / "taskmill.toml").read_text()
    assert 'app = "examples.multipart_upload:app"' in config


@pytest.mark.skipif(shutil.which("honcho") is None, reason="honcho is not installed")
def test_honcho_starts_the_procfile_deployment_with_scaled_workers(
    deployment: Deployment, tmp_path: Path
) -> None:
    # `taskmill` may not be installed as a command here: a shim on PATH runs this interpreter.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "taskmill"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m taskmill "$@"\n')
    shim.chmod(0o755)
    deployment.env["PATH"] = f"{bin_dir}{os.pathsep}{deployment.env['PATH']}"
    deployment.env["TASKMILL_METRICS_PORT"] = "0"
    deployment.env["TASKMILL_WEB_PORT"] = "0"  # the dashboard: any free port
    del deployment.env["TASKMILL_APP"]  # the example application, from examples/taskmill.toml
    honcho = deployment.spawn(
        "honcho",
        ["honcho", "start", "-f", str(REPO / "Procfile"), "-c", "worker=2"],
        new_session=True,  # so that its children can be killed with it, whatever happens
    )
    for actor in ("store", "events", "limiter", "monitor", "dispatcher"):
        deployment.wait_ready(honcho, deployment.control(actor), timeout=20)
    with Client(deployment.topology) as client:
        outcome = client.submit(
            # One part upload: parts need no other process's state (a whole upload's
            # finalize would, with more than one worker).
            TaskSubmission("upload-part", key="p1").payload_json(
                {"bucket": "b", "key": "k", "part": {"etag": "e", "number": 1, "size": 10}}
            )
        )
        assert outcome.is_inserted()
        with client.subscribe() as events:
            lookup = client.lookup("upload-part", "p1")
            while lookup.location != "history":
                event = events.recv(timeout=15)
                assert event is not None, "no event within 15 s"
                lookup = client.lookup("upload-part", "p1")
        assert lookup.record is not None and lookup.record.status == "completed"
    assert deployment.stop(honcho) in (0, -15, 143)
