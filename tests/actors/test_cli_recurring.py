"""``taskmill recurring``: the schedules of a running deployment, one line (or JSON object) each."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill import TaskSubmission
from taskmill.cli import main
from taskmill.deploy import DeploymentConfig
from taskmill.sync_client import Client
from tests.procfile_support import actor_threads


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[DeploymentConfig]:
    with actor_threads(tmp_path) as config:
        yield config


def test_recurring_lists_the_schedules(
    cfg: DeploymentConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recurring", "--run-dir", cfg.run_dir]) == 0
    assert capsys.readouterr().out == "no recurring schedules\n"
    with Client(cfg) as client:
        hourly = client.submit(
            TaskSubmission("noop", key="h").recurring(3600.0, initial_delay=3600.0)
        )
        daily = client.submit(TaskSubmission("noop", key="d").cron("0 6 * * *", max_executions=3))
        assert client.pause_recurring(daily.id or 0)
    assert main(["recurring", "--run-dir", cfg.run_dir]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith(f"#{hourly.id} noop h every 3600s runs 0 next ")
    assert second.startswith(f"#{daily.id} noop d cron '0 6 * * *' runs 0/3 next ")
    assert second.endswith(" paused")
    assert main(["recurring", "--json", "--run-dir", cfg.run_dir]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(s["task_id"], s["interval"], s["cron"]) for s in listed] == [
        (hourly.id, 3600.0, None),
        (daily.id, None, "0 6 * * *"),
    ]
