"""The operator's commands: ``cancel``, ``pause``/``resume``, ``history``, ``ping`` of every
executor host, and failures that say what is wrong within 2 s (nothing listening, a wrong run
directory, a refused CURVE key) instead of a request timing out in silence."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.client import RequestClient
from bus.clock import SystemClock
from bus.endpoints import tcp
from bus.hosting import ActorThread
from bus.kinds_run import GetHosts, HostsReply
from bus.security import CurveSecurity, generate_keys, start_authenticator
from taskmill.cli import main
from taskmill.deploy import DeploymentConfig
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import actor_threads, deployed, free_port

FAST_S = 2.0
"""How soon a command that cannot reach the deployment must say so."""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # unix socket paths stay short
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_deployment_environment(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> None:
    for var in ("TRANSPORT", "HOST", "PORT", "DATABASE", "APP", "INSECURE", "CURVE_DIR"):
        monkeypatch.delenv(f"TASKMILL_{var}", raising=False)
    monkeypatch.setenv("TASKMILL_RUN_DIR", str(short_dir / "default-run"))


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[DeploymentConfig]:
    with actor_threads(tmp_path) as cfg:
        yield cfg


def timed(argv: list[str]) -> tuple[int, float]:
    started = time.monotonic()
    code = main(argv)
    return code, time.monotonic() - started


def sleepy(key: str) -> TaskSubmission:
    return TaskSubmission("sleepy", key=key).payload_json({"seconds": 60, "steps": 600})


# -- cancel, pause, resume, history --------------------------------------------------------------


def test_cancel_takes_several_ids_and_says_which_were_no_task(
    deployment: DeploymentConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(deployment) as client:
        ids = [o.id for o in client.submit_batch([sleepy("a"), sleepy("b")])]
        assert (
            main(["cancel", str(ids[0]), str(ids[1]), "999", "--run-dir", deployment.run_dir]) == 1
        )
        assert capsys.readouterr().out == (
            f"cancelled #{ids[0]}\ncancelled #{ids[1]}\n#999: no active task has this id\n"
        )
        for task_id in ids:
            assert task_id is not None
            assert client.wait_result(task_id, timeout=10).status.value == "cancelled"
        with pytest.raises(SystemExit):
            main(["cancel", "0", "--run-dir", deployment.run_dir])  # not an id: argparse refuses


def test_pause_holds_every_task_until_resume(
    deployment: DeploymentConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = ["--run-dir", deployment.run_dir]
    assert main(["pause", *run_dir]) == 0
    assert capsys.readouterr().out == "paused: no task starts until `taskmill resume`\n"
    with Client(deployment) as client:
        [outcome] = client.submit_batch([TaskSubmission("noop", key="held")])
        assert outcome.id is not None
        assert main(["status", "--json", *run_dir]) == 0
        snapshot = json.loads(capsys.readouterr().out)
        assert snapshot["is_paused"] is True and snapshot["pending_count"] == 1
        assert main(["resume", *run_dir]) == 0
        assert capsys.readouterr().out == "resumed\n"
        assert client.wait_result(outcome.id, timeout=10).status.value == "completed"


def test_history_filters_by_status_and_type_and_pages(
    deployment: DeploymentConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = ["--run-dir", deployment.run_dir]
    with Client(deployment) as client:
        outcomes = client.submit_batch(
            [TaskSubmission("echo", key=f"e{i}").payload_json(i) for i in range(3)]
            + [TaskSubmission("nobody", key="n")]  # no executor: it fails
        )
        for outcome in outcomes:
            assert outcome.id is not None
            client.wait_result(outcome.id, timeout=10)
    assert main(["history", "--json", *run_dir]) == 0
    everything = json.loads(capsys.readouterr().out)
    assert sorted(r["task_type"] for r in everything) == ["echo", "echo", "echo", "nobody"]
    assert main(["history", "--status", "failed", "--json", *run_dir]) == 0
    [failed] = json.loads(capsys.readouterr().out)
    assert failed["task_type"] == "nobody" and "no executor" in failed["last_error"]
    assert main(["history", "--type", "echo", "--limit", "2", "--json", *run_dir]) == 0
    newest = [r["task_id"] for r in json.loads(capsys.readouterr().out)]
    assert main(["history", "--type", "echo", "--offset", "2", "--json", *run_dir]) == 0
    rest = [r["task_id"] for r in json.loads(capsys.readouterr().out)]
    assert len(newest) == 2 and len(rest) == 1 and set(newest).isdisjoint(rest)
    assert main(["history", "--status", "failed", *run_dir]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"#{failed['task_id']} nobody failed ") and "no executor" in line
    with pytest.raises(SystemExit):
        main(["history", "--status", "lost"])  # not a history status: argparse refuses it


# -- ping every executor host ------------------------------------------------------------------


def hosts_known(dispatcher: str, count: int) -> None:
    """Ask the Dispatcher until ``count`` hosts said hello (a host answers its own control
    endpoint before its hello has reached the Dispatcher)."""
    context: zmq.Context[Any] = zmq.Context()
    client = RequestClient(context, dispatcher, timeout=5)
    try:
        for _ in range(200):
            if len(client.call(GetHosts(), HostsReply).hosts) >= count:
                return
            threading.Event().wait(0.05)
        raise AssertionError(f"the dispatcher never knew {count} hosts")
    finally:
        client.close()
        context.destroy(linger=0)


@pytest.mark.system
@pytest.mark.timeout(90)
def test_ping_lists_every_executor_host_without_its_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with deployed(tmp_path) as deployment:
        deployment.start_actors(workers=("w1", "w2"))
        run_dir = ["--run-dir", str(deployment.run_dir)]
        hosts_known(deployment.topology.dispatcher, 2)
        assert main(["ping", "worker", *run_dir]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[:4] for line in lines] == [
            ["worker", "w1", "pong", "from"],
            ["worker", "w2", "pong", "from"],
        ]
        assert all("capacity 16, 0 running" in line for line in lines)
        assert main(["ping", *run_dir]) == 0
        out = capsys.readouterr().out
        assert {line.split()[0] for line in out.splitlines()} == {
            "store", "dispatcher", "monitor", "limiter", "events", "worker"
        }  # fmt: skip
        assert "worker w2" in out
        deployment.stop(next(p for p in deployment.procs if p.role == "limiter"))
        code, took = timed(["ping", *run_dir])
        assert code == 1 and took < FAST_S
        assert "limiter     nothing listening at" in capsys.readouterr().out


# -- failing fast, saying why ------------------------------------------------------------------


def test_a_stopped_deployment_is_said_within_2_seconds(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = short_dir / "run"
    run_dir.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)  # a socket file its process left behind
    stale.bind(str(run_dir / "dispatcher.sock"))
    stale.close()
    for argv, actor in (
        (["submit", "noop"], "store"),
        (["history"], "store"),
        (["cancel", "1"], "dispatcher"),
        (["pause"], "dispatcher"),
        (["watch"], "events"),
    ):
        code, took = timed([*argv, "--run-dir", str(run_dir)])
        err = capsys.readouterr().err
        assert code == 1 and took < FAST_S, (argv, took)
        assert (
            f"nothing listening at ipc://{run_dir}/{actor}.sock (the {actor} actor is not running)"
            in err
        )
    code, took = timed(["ping", "--run-dir", str(run_dir)])
    assert code == 1 and took < FAST_S
    out = capsys.readouterr().out
    assert "store       nothing listening at" in out
    assert "worker      no executor host" in out


def test_a_wrong_run_directory_is_said_and_not_made(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = short_dir / "no-such-run"
    for argv in (["submit", "noop"], ["ping"], ["stats", "store"], ["resume"]):
        code, took = timed([*argv, "--run-dir", str(wrong)])
        assert code == 2 and took < FAST_S
        assert f"no run directory {wrong}: a wrong --run-dir" in capsys.readouterr().err
    assert not wrong.exists()


@pytest.fixture
def curve_store(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A Store on tcp with CURVE; the keys know two clients, of which the servers accept one."""
    keys = generate_keys(tmp_path / "keys", clients=("client", "stranger"))
    (keys / "authorized" / "stranger.key").unlink()
    context: zmq.Context[Any] = zmq.Context()
    auth = start_authenticator(context, keys / "authorized")
    port = free_port()
    store = StoreActor(
        lambda: StoreDB(str(tmp_path / "t.db"), clock=SystemClock()), tcp("127.0.0.1", port)
    )
    security = CurveSecurity.from_directory(keys)
    control = tcp("127.0.0.1", free_port())
    thread = ActorThread(store, context, control, security=security).start()
    try:
        yield port, keys
    finally:
        thread.stop()
        auth.stop()
        context.destroy(linger=0)


def test_a_refused_curve_key_is_said_within_2_seconds(
    curve_store: tuple[int, Path], short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port, keys = curve_store
    tcp_args = ["--transport", "tcp", "--host", "127.0.0.1", "--port", str(port)]
    tcp_args += ["--curve-dir", str(keys), "--run-dir", str(short_dir / "run")]
    code, took = timed(["history", *tcp_args, "--client-key", "stranger"])
    err = capsys.readouterr().err
    assert code == 1 and took < FAST_S
    assert f"tcp://127.0.0.1:{port} refused this client's CURVE key" in err
    assert "'stranger'" in err
    assert main(["history", *tcp_args]) == 0  # the listed key is answered
    code, took = timed(["history", *tcp_args[:-4], "--insecure", "--run-dir", str(short_dir)])
    assert code == 1 and took < FAST_S
    assert "CURVE on one side only" in capsys.readouterr().err
