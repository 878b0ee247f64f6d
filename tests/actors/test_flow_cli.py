"""``taskmill pause --group``, ``resume --group`` and ``rate-limits`` against a running
deployment (actor threads on ipc sockets)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill.cli import main
from tests.procfile_support import actor_threads


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for var in ("TRANSPORT", "HOST", "PORT", "DATABASE", "APP", "INSECURE", "RUN_DIR"):
        monkeypatch.delenv(f"TASKMILL_{var}", raising=False)
    with actor_threads(tmp_path) as cfg:
        yield cfg.run_dir


def test_pause_resume_and_rate_limits(run_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rate-limits", "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out == "no rate limits\n"
    assert main(["pause", "--group", "s3", "--until", "600", "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out == "group 's3' paused for 600 s\n"
    assert main(["rate-limits", "--json", "--run-dir", run_dir]) == 0
    data = json.loads(capsys.readouterr().out)
    [paused] = data["paused_groups"]
    assert (paused["group"], paused["paused_task_count"]) == ("s3", 0)
    assert paused["resume_at"] is not None
    assert main(["rate-limits", "--run-dir", run_dir]) == 0
    assert "group 's3' paused until " in capsys.readouterr().out
    assert main(["resume", "--group", "s3", "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out == "group 's3' resumed\n"
    assert main(["rate-limits", "--json", "--run-dir", run_dir]) == 0
    assert json.loads(capsys.readouterr().out) == {"rate_limits": [], "paused_groups": []}


@pytest.mark.parametrize(
    "argv",
    [
        ["pause", "--group", "g", "--until", "-1"],
        ["pause", "--group", "g", "--until", "soon"],
    ],
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "usage: taskmill" in capsys.readouterr().err


def test_an_end_to_a_pause_needs_a_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pause`` alone pauses the whole scheduler, which has no ``--until``."""
    assert main(["pause", "--until", "5", "--run-dir", str(tmp_path)]) == 2
    assert "--until goes with --group" in capsys.readouterr().err
