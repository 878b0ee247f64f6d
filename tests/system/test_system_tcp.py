"""The deployment over tcp with CURVE: actor processes on 127.0.0.1, a client with the listed key
gets everything done, a client with another key gets nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.errors import ActorUnavailable
from bus.security import generate_keys
from taskmill.deploy import DeploymentConfig
from taskmill.records import HistoryStatus
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import Deployment

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


def free_base_port(span: int = 20) -> int:
    """A base port with ``span`` free ports after it (checked, not reserved)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + span > 65535:
            continue
        try:
            holders = []
            for port in range(base, base + span):
                s = socket.socket()
                holders.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in holders:
                s.close()
        return base
    raise RuntimeError("no run of free ports")


@pytest.fixture
def tcp_deployment(tmp_path: Path) -> Iterator[tuple[Deployment, DeploymentConfig]]:
    keys = generate_keys(tmp_path / "keys")
    deployment = Deployment(tmp_path)
    port = free_base_port()
    deployment.env.update(
        TASKMILL_TRANSPORT="tcp",
        TASKMILL_HOST="127.0.0.1",
        TASKMILL_PORT=str(port),
        TASKMILL_CURVE_DIR=str(keys),
    )
    cfg = DeploymentConfig(
        run_dir=str(deployment.run_dir),
        transport="tcp",
        base_port=port,
        curve_dir=str(keys),
        database=str(deployment.database),
    )
    deployment.topology = cfg.topology()
    try:
        yield deployment, cfg
    finally:
        deployment.close()
        for text in deployment.logs():
            print(text)


def test_curve_clients_with_the_listed_key_run_tasks_and_others_get_nothing(
    tcp_deployment: tuple[Deployment, DeploymentConfig], tmp_path: Path
) -> None:
    deployment, cfg = tcp_deployment
    deployment.start_actors(workers=("w1",))
    assert cfg.topology().store.startswith("tcp://127.0.0.1:")

    with Client(cfg) as client, client.subscribe() as events:
        outcomes = client.submit_batch([TaskSubmission("noop", key=str(i)) for i in range(50)])
        assert all(o.is_inserted() for o in outcomes)
        completed: set[int] = set()
        while len(completed) < 50:
            event = events.recv(timeout=10)
            assert event is not None, "events stopped before every task completed"
            if event.type == "completed":
                completed.add(event.task_id)  # type: ignore[attr-defined]
        history = client.history(limit=100)
    assert len(history) == 50 and {h.status for h in history} == {HistoryStatus.COMPLETED}

    stranger = generate_keys(tmp_path / "stranger")
    # The stranger knows the server's public key but holds a client key nobody listed.
    (stranger / "server.key").write_bytes((Path(cfg.curve_dir or "") / "server.key").read_bytes())
    (stranger / "server.key_secret").unlink()
    intruder = cfg.with_(curve_dir=str(stranger))
    with Client(intruder, timeout=1.0, retries=0) as client, pytest.raises(ActorUnavailable):
        client.submit(TaskSubmission("noop", key="intruder"))

    plain = cfg.with_(curve_dir=None, insecure=True)
    with Client(plain, timeout=1.0, retries=0) as client, pytest.raises(ActorUnavailable):
        client.submit(TaskSubmission("noop", key="plain"))

    with Client(cfg) as client:
        assert client.lookup("noop", b"intruder").location == "not_found"
        assert client.lookup("noop", b"plain").location == "not_found"
    log = "\n".join(deployment.logs())
    assert "refused a CURVE connection" in log


def test_a_parent_spawns_its_child_over_curve(
    tcp_deployment: tuple[Deployment, DeploymentConfig],
) -> None:
    # The executor host submits children over its own connection to the Store: over tcp that
    # one must present the deployment's CURVE keys like every other.
    deployment, cfg = tcp_deployment
    deployment.start_actors(workers=("w1",))
    with Client(cfg) as client, client.subscribe() as events:
        parent = client.submit(TaskSubmission("parent", key="p"))
        while True:
            event = events.recv(timeout=20)
            assert event is not None, "the parent never finished"
            if event.type in ("completed", "failed") and event.task_id == parent.id:  # type: ignore[attr-defined]
                break
        history = client.history(limit=10)
    assert {(h.task_type, h.status) for h in history} == {
        ("parent", HistoryStatus.COMPLETED),
        ("noop", HistoryStatus.COMPLETED),
    }, [(h.task_type, h.status, h.last_error) for h in history]
