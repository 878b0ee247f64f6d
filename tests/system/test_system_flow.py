"""Bulk cancel in the Procfile deployment: ``taskmill cancel --group`` stops running tasks in a
worker process, whose executors' ``on_cancel`` run there."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import REPO, Deployment, deployed

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def wait_events(
    events: EventSubscriber, done: Callable[[list[Any]], bool], timeout: float = 20.0
) -> list[Any]:
    """The events received until ``done`` says so (task events: ``Any`` for their fields)."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        left = deadline - time.monotonic()
        assert left > 0, f"events so far: {[(e.type, getattr(e, 'label', '')) for e in seen]}"
        event = events.recv(left)
        if event is not None:
            seen.append(event)
    return seen


def test_cancel_group_from_the_command_line_stops_running_tasks_in_a_worker(
    deployment: Deployment,
) -> None:
    deployment.start_actors(workers=("w1",))
    with Client(deployment.topology) as client, client.subscribe() as events:
        subs = [
            TaskSubmission("careful", key=f"c{i}", group="g", tags={"batch": "7"}) for i in range(3)
        ]
        outcomes = client.submit_batch([*subs, TaskSubmission("careful", key="other")])
        ids = [o.id for o in outcomes]
        assert client.task_ids_by_tags({"batch": "7"}) == ids[:3]
        assert client.count_by_tag("batch") == {"7": 3}
        assert client.tag_values("batch") == ["7"]
        wait_events(
            events, lambda seen: len({e.task_id for e in seen if e.type == "dispatched"}) == 4
        )

        result = subprocess.run(
            [sys.executable, "-m", "taskmill", "cancel", "--group", "g", "--json"],
            cwd=REPO,
            env=deployment.env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == ids[:3]

        cleaned = {f"cleaned-{i}" for i in ids[:3]}
        seen = wait_events(
            events,
            lambda seen: {e.label for e in seen if e.type == "completed"} >= cleaned,
        )
        assert {e.task_id for e in seen if e.type == "cancelled"} == set(ids[:3])
        assert [client.result(i or 0) for i in ids[:3]] == [
            client.wait_result(i or 0, timeout=10) for i in ids[:3]
        ]
        assert {client.wait_result(i or 0, timeout=10).status for i in ids[:3]} == {"cancelled"}
        # The other task runs on; a cancel by type takes it.
        assert client.cancel_type("careful") == [ids[3]]
