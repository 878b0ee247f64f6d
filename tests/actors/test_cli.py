"""The ``taskmill`` command: its parser, its configuration, its errors, and the user commands
against a running deployment (actor threads on ipc sockets); what ``watch`` and ``status`` print.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill.cli import build_parser, config_from_args, main
from taskmill.commands import parse_priority
from taskmill.deploy import DeploymentConfig
from taskmill.events import (
    Completed,
    Dispatched,
    Failed,
    HostResources,
    Progress,
    Resources,
)
from taskmill.priority import Priority
from taskmill.records import EstimatedProgress, TaskRecord, TaskStatus
from taskmill.snapshot import SchedulerSnapshot
from taskmill.watch import WatchView, format_snapshot
from tests.procfile_support import actor_threads

ACTOR_COMMANDS = ("store", "dispatcher", "monitor", "limiter", "worker", "events")
USER_COMMANDS = (
    "submit", "result", "recurring", "status", "watch", "ping", "stats", "keys", "demo", "web",
    "rate-limits",
)  # fmt: skip
OPERATION_COMMANDS = ("cancel", "pause", "resume", "history")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_deployment_environment(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> None:
    # Nothing from the environment; the default run directory would be in the current one.
    for var in ("TRANSPORT", "HOST", "PORT", "DATABASE", "APP", "INSECURE"):
        monkeypatch.delenv(f"TASKMILL_{var}", raising=False)
    monkeypatch.setenv("TASKMILL_RUN_DIR", str(short_dir / "default-run"))


# -- the parser --------------------------------------------------------------------------------


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    listed = set(re.findall(r"^ {4}([\w-]+) ", out, re.M))
    assert listed == set(ACTOR_COMMANDS) | set(USER_COMMANDS) | set(OPERATION_COMMANDS)


@pytest.mark.parametrize("command", ACTOR_COMMANDS + USER_COMMANDS + OPERATION_COMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: taskmill {command}" in capsys.readouterr().out


def test_actor_commands_take_their_own_options() -> None:
    parser = build_parser()
    worker = parser.parse_args(["worker", "--app", "m:a", "--host-id", "w1", "--capacity", "3"])
    assert (worker.app, worker.host_id, worker.capacity) == ("m:a", "w1", 3)
    events = parser.parse_args(["events", "--metrics-port", "9464"])
    assert events.metrics_port == 9464
    with pytest.raises(SystemExit):
        parser.parse_args(["store", "--capacity", "3"])  # a worker's option only


def test_flags_override_the_environment_and_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "taskmill.toml"
    file.write_text('run_dir = "file-run"\ndatabase = "file.db"\napp = "file:app"\nbase_port = 1\n')
    monkeypatch.delenv("TASKMILL_RUN_DIR")
    monkeypatch.setenv("TASKMILL_DATABASE", "env.db")
    monkeypatch.setenv("TASKMILL_PORT", "2000")
    args = build_parser().parse_args(
        ["store", "--config", str(file), "--port", "3000", "--insecure", "--transport", "tcp"]
    )
    cfg = config_from_args(args)
    assert cfg == DeploymentConfig(
        run_dir="file-run",
        database="env.db",
        app="file:app",
        base_port=3000,
        insecure=True,
        transport="tcp",
    )


@pytest.mark.parametrize(
    ("text", "priority"),
    [("0", Priority(0)), ("200", Priority(200)), ("high", Priority.HIGH), ("IDLE", Priority.IDLE)],
)
def test_priorities_by_number_or_tier_name(text: str, priority: Priority) -> None:
    assert parse_priority(text) == priority


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "t", "--priority", "urgent"],
        ["submit", "t", "--priority", "300"],
        ["submit", "t", "--payload-json", "{nope"],
        ["worker", "--capacity", "many"],
        ["submit", ""],
        ["submit", "t", "--retries", "-5"],
        ["submit", "t", "--timeout", "-1"],
        ["submit", "t", "--timeout", "nan"],
    ],
)
def test_bad_arguments_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["submit", "t", "--key", "\udc80"], "key is not valid text"),
        (["submit", "t", "--label", "a\ud800b"], "label is not valid text"),
        (["submit", "t", "--label", "x" * 1025], "label is 1025 characters long; the limit"),
        (["submit", "t", "--group", "g" * 257], "group is 257 characters long; the limit is 256"),
    ],
)
def test_a_submission_the_builder_refuses_is_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any connection: no deployment needed, and no traceback.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskmill submit: ") and message in err and err.count("\n") == 1


# -- errors of configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["store"], "no application given"),
        (["store", "--app", "no_such_module_here:app"], "cannot import 'no_such_module_here'"),
        (["dispatcher", "--app", "tests.system_app:nothing"], "'nothing' not found"),
        (["status", "--transport", "tcp"], "--insecure"),
        (["status", "--config", "/nonexistent/taskmill.toml"], "cannot read config file"),
        (["stats", "scheduler"], "unknown actor 'scheduler'"),
        (["stats", "worker"], "needs its host id"),
    ],
)
def test_configuration_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"taskmill {argv[0]}: ") and message in err


def test_ping_reports_actors_that_do_not_answer(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ping", "store", "events", "--run-dir", str(short_dir), "--timeout", "0.1"]) == 1
    out = capsys.readouterr().out
    assert f"store       nothing listening at ipc://{short_dir}/store-control.sock" in out
    assert "events" in out


# -- user commands against a running deployment ------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[str]:
    with actor_threads(tmp_path) as cfg:
        yield cfg.run_dir


def test_submit_prints_the_outcome(run_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit", "sleepy", "--key", "k", "--label", "L", "--run-dir", run_dir,
                 "--payload-json", '{"seconds": 30, "steps": 600}', "--priority", "high",
                 "--group", "g"]) == 0  # fmt: skip
    assert capsys.readouterr().out == "inserted #1\n"
    assert main(["submit", "noop", "--key", "j", "--json", "--run-dir", run_dir]) == 0
    assert json.loads(capsys.readouterr().out) == {"kind": "inserted", "id": 2}


def test_result_prints_a_finished_task_and_waits_for_one(
    run_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["result", "1", "--run-dir", run_dir]) == 1
    assert "task #1 has not finished" in capsys.readouterr().err
    assert main(["submit", "echo", "--payload-json", '{"n": 1}', "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out == "inserted #1\n"
    assert main(["result", "1", "--wait", "10", "--run-dir", run_dir]) == 0
    assert capsys.readouterr().out == '#1 echo completed\nresult: {"n": 1}\n'
    assert main(["result", "1", "--json", "--run-dir", run_dir]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["status"], record["task_id"]) == ("completed", 1)
    assert main(["result", "2", "--wait", "0.2", "--run-dir", run_dir]) == 1
    assert "task #2 has not finished after 0.2s" in capsys.readouterr().err


def test_status_and_stats(run_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json", "--run-dir", run_dir]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["max_concurrency"] == 16 and snapshot["pending_count"] == 0
    assert set(snapshot) == set(SchedulerSnapshot().to_dict())
    assert main(["status", "--run-dir", run_dir]) == 0
    assert "dispatching, max concurrency 16" in capsys.readouterr().out

    assert main(["stats", "dispatcher", "--json", "--run-dir", run_dir]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["name"] == "dispatcher" and stats["counters"]["max_concurrency"] == 16
    assert main(["stats", "worker", "--host-id", "t1", "--run-dir", run_dir]) == 0
    out = capsys.readouterr().out
    assert out.startswith("worker\n") and re.search(r"^  running\s+0$", out, re.M)
    assert main(["ping", "--run-dir", run_dir]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6  # every actor, the host t1 too


# -- what watch and status print ---------------------------------------------------------------


def _event(cls: type, task_id: int = 1, **fields: object) -> object:
    return cls(task_id=task_id, task_type="upload", key="k" * 64, label=f"file-{task_id}", **fields)


def test_watch_prints_a_line_per_lifecycle_event_off_a_terminal() -> None:
    out = io.StringIO()
    view = WatchView(out, tty=False)
    for event in (
        _event(Dispatched),
        _event(Progress, percent=0.5),
        Resources(cpu=0.5, pressure=0.1),
        HostResources(host="far", cpu=0.5),  # every heartbeat: no line
        _event(Failed, error="boom", will_retry=True),
        _event(Completed, 2),
    ):
        view.apply(event)  # type: ignore[arg-type]
        view.draw()
    lines = out.getvalue().splitlines()
    assert [line.split(maxsplit=2)[2] for line in lines] == [
        "dispatched #1 upload  file-1",
        "failed     #1 upload  file-1: boom (will retry)",
        "completed  #2 upload  file-2",
    ]
    assert "\033" not in out.getvalue()


def test_watch_draws_progress_bars_on_a_terminal() -> None:
    out = io.StringIO()
    view = WatchView(out, tty=True)
    view.apply(_event(Dispatched))  # type: ignore[arg-type]
    view.apply(_event(Progress, percent=0.5))  # type: ignore[arg-type]
    view.apply(Resources(cpu=0.25, pressure=0.1))
    view.draw(force=True)
    text = out.getvalue()
    assert "running 1" in text and "cpu 25%  pressure 0.10" in text
    assert "████████████░░░░░░░░░░░░  50.0%" in text
    view.apply(_event(Completed))  # type: ignore[arg-type]
    view.draw(force=True)
    assert out.getvalue().rstrip().endswith("\033[1mrunning 0\033[0m  cpu 25%  pressure 0.10\033[K")


def test_status_text_shows_counts_pressure_and_progress() -> None:
    task = TaskRecord(7, "upload", "k" * 64, "photo.jpg", Priority.NORMAL, TaskStatus.RUNNING)
    snapshot = SchedulerSnapshot(
        running=[task],
        pending_count=3,
        waiting_count=1,
        progress=[EstimatedProgress(7, "upload", task.key, "photo.jpg", 0.25, None, 0.25)],
        pressure=0.4,
        pressure_breakdown=[("api-load", 0.4)],
        max_concurrency=4,
        is_paused=True,
        resources={"cpu": 0.5, "disk_read_bps": 2e6, "net_tx_bps": 1.5e6},
        host_resources={"far": {"cpu": 0.1, "disk_write_bps": 9.5e6}},
    )
    text = format_snapshot(snapshot)
    assert text.splitlines()[0] == "taskmill  paused, max concurrency 4"
    assert "running 1   pending 3   paused 0   waiting 1" in text
    assert "pressure 0.40   (api-load 0.40)" in text
    assert "cpu 50%   disk read 2.0 MB/s, write 0.0 MB/s   net rx 0.0 MB/s, tx 1.5 MB/s" in text
    assert "host far: cpu 10%   disk read 0.0 MB/s, write 9.5 MB/s   net rx 0.0" in text
    assert re.search(r"#7\s+upload\s+photo\.jpg\s+██████░+  25\.0%", text)
