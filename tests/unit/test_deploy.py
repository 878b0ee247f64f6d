"""The deployment configuration (file < environment < flags), ``load_app``, and the builders of
each actor process (no sockets: building an actor opens nothing)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.dispatcher.actor import Dispatcher
from actors.dispatcher.gate import READING_KEYS
from actors.host.actor import ExecutorHost
from actors.limiter.actor import GroupLimiter
from actors.monitor.actor import ResourceMonitor
from actors.publisher.actor import EventPublisher
from actors.store.actor import StoreActor
from taskmill.builder import SchedulerBuilder
from taskmill.cli import build_parser
from taskmill.deploy import ConfigError, DeploymentConfig, load_app
from taskmill.processes import (
    ACTORS,
    app_spec,
    build,
    build_worker,
    control_endpoint,
)
from tests.system_app import app


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Short, for unix socket paths.
    base = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))
    yield base / "run"
    shutil.rmtree(base, ignore_errors=True)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taskmill.toml"
    path.write_text(text)
    return path


# -- precedence --------------------------------------------------------------------------------


def test_defaults_with_nothing_given() -> None:
    cfg = DeploymentConfig.load(env={})
    assert cfg == DeploymentConfig()
    assert (cfg.run_dir, cfg.transport, cfg.host, cfg.base_port) == (
        ".taskmill/run",
        "ipc",
        "127.0.0.1",
        5550,
    )
    assert (cfg.database, cfg.app, cfg.metrics_port, cfg.capacity) == (None, None, None, None)
    assert cfg.insecure is False


@pytest.mark.parametrize(
    ("name", "toml", "var", "env", "flag", "expected_env", "expected_flag"),
    [
        ("run_dir", '"from-file"', "TASKMILL_RUN_DIR", "from-env", "from-flag", None, None),
        ("transport", '"ipc"', "TASKMILL_TRANSPORT", "tcp", "ipc", None, None),
        ("host", '"10.0.0.1"', "TASKMILL_HOST", "10.0.0.2", "10.0.0.3", None, None),
        ("base_port", "6000", "TASKMILL_PORT", "6100", 6200, 6100, None),
        ("database", '"file.db"', "TASKMILL_DATABASE", "env.db", "flag.db", None, None),
        ("app", '"a.file:app"', "TASKMILL_APP", "a.env:app", "a.flag:app", None, None),
        ("insecure", "false", "TASKMILL_INSECURE", "yes", False, True, None),
        ("metrics_port", "9000", "TASKMILL_METRICS_PORT", "9001", 9002, 9001, None),
        ("capacity", "2", "TASKMILL_CAPACITY", "3", 4, 3, None),
    ],
)
def test_flags_win_over_the_environment_which_wins_over_the_file(
    tmp_path: Path,
    name: str,
    toml: str,
    var: str,
    env: str,
    flag: object,
    expected_env: object,
    expected_flag: object,
) -> None:
    file = _toml(tmp_path, f"{name} = {toml}\n")
    from_file = DeploymentConfig.load(file, env={})
    from_env = DeploymentConfig.load(file, env={var: env})
    from_flag = DeploymentConfig.load(file, env={var: env}, overrides={name: flag})
    assert getattr(from_file, name) != getattr(from_env, name)
    assert getattr(from_env, name) == (env if expected_env is None else expected_env)
    assert getattr(from_flag, name) == (flag if expected_flag is None else expected_flag)
    # A flag left unset (None) does not override anything.
    assert DeploymentConfig.load(file, env={var: env}, overrides={name: None}) == from_env


def test_the_process_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMILL_RUN_DIR", "/tmp/elsewhere")
    assert DeploymentConfig.load().run_dir == "/tmp/elsewhere"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("off", False)],
)
def test_insecure_from_the_environment(value: str, expected: bool) -> None:
    assert DeploymentConfig.load(env={"TASKMILL_INSECURE": value}).insecure is expected


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 'blue'\n", "unknown setting 'colour'"),
        ("base_port = '5550'\n", "base_port must be an integer"),
        ("base_port = true\n", "base_port must be an integer"),
        ("insecure = 1\n", "insecure must be true or false"),
        ("app = \n", "not valid TOML"),
        ("transport = 'udp'\n", "transport must be one of ipc, tcp"),
        ("capacity = 0\n", "capacity must be at least 1"),
        ("base_port = 70000\n", "base_port out of range"),
    ],
)
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeploymentConfig.load(_toml(tmp_path, text), env={})


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        DeploymentConfig.load(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("TASKMILL_PORT", "lots", "TASKMILL_PORT must be an integer"),
        ("TASKMILL_INSECURE", "maybe", "TASKMILL_INSECURE must be one of"),
        ("TASKMILL_TRANSPORT", "udp", "transport must be one of"),
    ],
)
def test_a_bad_variable_says_which(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DeploymentConfig.load(env={var: value})


def test_an_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        DeploymentConfig.load(env={}, overrides={"colour": "blue"})


# -- topology ----------------------------------------------------------------------------------


def test_tcp_needs_insecure_until_curve() -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        DeploymentConfig(transport="tcp").topology()
    topology = DeploymentConfig(transport="tcp", insecure=True, base_port=7000).topology()
    assert topology.store == "tcp://127.0.0.1:7000"
    assert topology.dispatcher.startswith("tcp://127.0.0.1:70")


def test_ipc_sockets_live_in_a_private_run_directory(run_dir: Path) -> None:
    topology = DeploymentConfig(run_dir=str(run_dir)).topology()
    assert topology.store == f"ipc://{run_dir}/store.sock"
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700


def test_a_run_directory_too_long_for_unix_sockets_is_a_config_error(tmp_path: Path) -> None:
    run_dir = tmp_path / ("x" * 120)
    with pytest.raises(ConfigError, match="shorter run_dir"):
        DeploymentConfig(run_dir=str(run_dir)).topology()
    assert not run_dir.exists()  # refused before anything was created


# -- load_app ----------------------------------------------------------------------------------


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module ``tm_app_<n>`` in ``tmp_path`` (not yet on sys.path) with every kind of attr."""
    name = f"tm_app_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        "from taskmill import SchedulerBuilder\n"
        "builder = SchedulerBuilder().store_path('x.db')\n"
        "def make():\n    return SchedulerBuilder().store_path('made.db')\n"
        "def needs(path):\n    return SchedulerBuilder()\n"
        "def wrong():\n    return 42\n"
        "class Holder:\n    builder = builder\n"
        "number = 7\n"
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_load_app_takes_a_builder_or_a_function_returning_one(
    app_module: str, tmp_path: Path
) -> None:
    builder = load_app(f"{app_module}:builder", app_dir=tmp_path)
    assert isinstance(builder, SchedulerBuilder) and builder.spec.store_path == "x.db"
    assert load_app(f"{app_module}:make").spec.store_path == "made.db"
    assert load_app(f"{app_module}:Holder.builder") is builder


def test_load_app_imports_from_app_dir_only_when_asked(app_module: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot import '{app_module}'"):
        load_app(f"{app_module}:builder")
    assert load_app(f"{app_module}:builder", app_dir=tmp_path) is not None


@pytest.mark.parametrize(
    ("attribute", "message"),
    [
        ("nothing", "'nothing' not found"),
        ("number", "is of type 'int', not a SchedulerBuilder or a function returning one"),
        ("needs", "needs arguments"),
        ("wrong", r"wrong\(\) returned a 'int', not a SchedulerBuilder"),
    ],
)
def test_load_app_says_what_is_wrong(
    app_module: str, tmp_path: Path, attribute: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_app(f"{app_module}:{attribute}", app_dir=tmp_path)


@pytest.mark.parametrize("reference", ["tests.system_app", "tests.system_app:", ":app", ""])
def test_load_app_needs_module_colon_attribute(reference: str) -> None:
    with pytest.raises(ConfigError, match="module:attribute"):
        load_app(reference)


def test_the_system_test_application_loads() -> None:
    assert set(load_app("tests.system_app:app").spec.executors) == {
        "noop", "sleepy", "parent", "echo", "careful",
    }  # fmt: skip


# -- building one actor per process ------------------------------------------------------------


def test_the_database_and_metrics_port_of_the_deployment_override_the_app(tmp_path: Path) -> None:
    spec = app().spec
    assert app_spec(spec, DeploymentConfig()) is spec
    changed = app_spec(spec, DeploymentConfig(database=str(tmp_path / "d.db"), metrics_port=0))
    assert changed.store_path == str(tmp_path / "d.db") and changed.metrics_port == 0
    assert spec.store_path == "system-app.db"  # the application's own spec is left alone


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("store", StoreActor),
        ("dispatcher", Dispatcher),
        ("monitor", ResourceMonitor),
        ("limiter", GroupLimiter),
        ("events", EventPublisher),
    ],
)
def test_each_process_builds_the_actor_class_of_the_embedded_mode(
    run_dir: Path, name: str, cls: type
) -> None:
    cfg = DeploymentConfig(run_dir=str(run_dir))
    process = build(name, app().spec, cfg)
    assert isinstance(process.actor, cls)
    assert process.control == control_endpoint(cfg.topology(), name)
    assert process.control == f"ipc://{run_dir}/{name}-control.sock"
    assert (process.before_stop is not None) == (name == "dispatcher")


def test_a_worker_hosts_every_executor_of_the_app(run_dir: Path) -> None:
    spec = app().spec
    process = build_worker(spec, DeploymentConfig(run_dir=str(run_dir)), host_id="w7")
    host = process.actor
    assert isinstance(host, ExecutorHost)
    try:
        assert set(host.runners) == {"noop", "sleepy", "parent", "echo", "careful"}
        assert set(host.cancel_hooks) == {"careful"}  # the one executor with an on_cancel
        assert host.settings.host_id == "w7"
        assert host.settings.capacity == spec.max_concurrency
        assert process.control == f"ipc://{run_dir}/worker-w7-control.sock"
    finally:
        host.pool.shutdown()
    other = build_worker(spec, DeploymentConfig(run_dir=str(run_dir), capacity=3))
    assert isinstance(other.actor, ExecutorHost)
    other.actor.pool.shutdown()
    assert other.actor.settings.capacity == 3
    assert other.actor.settings.host_id.endswith(f"-{os.getpid()}")


def test_a_worker_samples_its_own_machine_over_tcp_with_monitoring_on(run_dir: Path) -> None:
    """A worker over tcp may be on another machine than the monitor: it reports its readings
    by default; over ipc it shares the monitor's machine and does not, unless told to."""
    monitored = dataclasses.replace(app().spec, monitoring=True)
    tcp = DeploymentConfig(transport="tcp", insecure=True)
    ipc = DeploymentConfig(run_dir=str(run_dir))
    cases = [
        (monitored, tcp, None, True),
        (app().spec, tcp, None, False),  # no IO budget to judge
        (monitored, ipc, None, False),
        (monitored, ipc, True, True),
        (monitored, tcp, False, False),
    ]
    for spec, cfg, flag, samples in cases:
        host = build_worker(spec, cfg, host_id="w", sample_resources=flag).actor
        assert isinstance(host, ExecutorHost)
        host.pool.shutdown()
        assert (host.read_machine is not None) == samples, (cfg.transport, flag)
        if samples:
            assert host.read_machine is not None
            readings = host.read_machine()
            assert tuple(readings) == READING_KEYS
    args = build_parser().parse_args(["worker", "--no-sample-resources"])
    assert args.sample_resources is False
    assert build_parser().parse_args(["worker"]).sample_resources is None


def test_every_actor_is_known_and_others_are_refused(run_dir: Path) -> None:
    assert set(ACTORS) == {"store", "dispatcher", "monitor", "limiter", "worker", "events"}
    topology = DeploymentConfig(run_dir=str(run_dir)).topology()
    with pytest.raises(ValueError, match="unknown actor"):
        build("scheduler", app().spec, DeploymentConfig(run_dir=str(run_dir)))
    with pytest.raises(ValueError, match="host id"):
        control_endpoint(topology, "worker")
    with pytest.raises(ValueError, match="unknown actor"):
        control_endpoint(topology, "nobody")
