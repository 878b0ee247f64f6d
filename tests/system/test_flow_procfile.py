"""Flow control in the Procfile deployment: a rate limit set and a group paused while running
survive a restart of every actor process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill import RateLimit, TaskSubmission
from taskmill.sync_client import Client
from tests.procfile_support import Deployment, deployed

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def test_a_runtime_rate_limit_and_a_pause_survive_a_restart(deployment: Deployment) -> None:
    deployment.start_actors(workers=("w1",))
    with Client(deployment.topology, timeout=10.0) as client:
        client.set_rate_limit("echo", RateLimit.per_minute(3).with_burst(2))
        client.pause_group("s3")
    deployment.stop_all()
    deployment.procs.clear()
    deployment.start_actors(workers=("w1",))
    with Client(deployment.topology, timeout=10.0) as client:
        snapshot = client.snapshot()
        assert [(r.scope, r.permits, r.interval, r.burst) for r in snapshot.rate_limits] == [
            ("type:echo", 3, 60.0, 2)
        ]
        assert [p.group for p in snapshot.paused_groups] == ["s3"]
        held = client.submit(TaskSubmission("noop", key="held", group="s3"))
        free = client.submit(TaskSubmission("noop", key="free"))
        assert free.id is not None and held.id is not None
        assert client.wait_result(free.id, timeout=20).status == "completed"
        assert client.result(held.id) is None  # its group is still paused
        client.resume_group("s3")
        assert client.wait_result(held.id, timeout=20).status == "completed"
