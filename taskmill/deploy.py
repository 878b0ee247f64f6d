"""One deployment's configuration, and loading the application it runs.

A deployment (the Procfile processes, the clients and the CLI commands that talk to them) is
described by one ``DeploymentConfig``: where the sockets are (an ipc run directory, or a tcp host
and base port), the database, the Prometheus port, a worker's capacity and the application
(``module:attribute``). It is read from a TOML file, then ``TASKMILL_*`` environment variables,
then command-line flags, each overriding the one before. Relative paths are relative to the
directory the process starts in, so every process of one deployment starts in the same one (a
Procfile runner does that).

``load_app`` turns ``module:attribute`` into the application's ``SchedulerBuilder``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.endpoints import ipc
from bus.errors import TaskmillError
from bus.security import CurveSecurity
from bus.topology import Topology
from taskmill.builder import SchedulerBuilder

__all__ = ["ENV_VARS", "ConfigError", "DeploymentConfig", "load_app"]

TRANSPORTS = ("ipc", "tcp")

ENV_VARS: dict[str, str] = {
    "TASKMILL_RUN_DIR": "run_dir",
    "TASKMILL_TRANSPORT": "transport",
    "TASKMILL_HOST": "host",
    "TASKMILL_PORT": "base_port",
    "TASKMILL_DATABASE": "database",
    "TASKMILL_APP": "app",
    "TASKMILL_INSECURE": "insecure",
    "TASKMILL_METRICS_PORT": "metrics_port",
    "TASKMILL_CAPACITY": "capacity",
    "TASKMILL_CURVE_DIR": "curve_dir",
    "TASKMILL_CLIENT_KEY": "client_key",
}
"""Each environment variable and the setting it gives."""

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class ConfigError(TaskmillError, ValueError):
    """A deployment setting or an application reference that cannot be used."""


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """Where a deployment's actors listen, and what they run.

    ``transport`` ``"ipc"`` puts every socket in ``run_dir`` (created with mode 0700);
    ``"tcp"`` uses ``host`` and consecutive ports from ``base_port`` with CURVE authentication
    and encryption (keys in ``curve_dir``, made by ``taskmill keys``: servers accept only the
    client keys in ``curve_dir/authorized``, clients present ``curve_dir/<client_key>``), or
    plain tcp with an explicit ``insecure``. Control endpoints stay local (ipc in ``run_dir``)
    on every transport. ``database`` overrides the application's store path; ``metrics_port``
    its Prometheus port; ``capacity`` is how many tasks a worker runs at once (default: the
    application's ``max_concurrency``).
    """

    run_dir: str = ".taskmill/run"
    transport: str = "ipc"
    host: str = "127.0.0.1"
    base_port: int = 5550
    database: str | None = None
    insecure: bool = False
    metrics_port: int | None = None
    capacity: int | None = None
    app: str | None = None
    curve_dir: str | None = None
    client_key: str = "client"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(
                f"transport must be one of {', '.join(TRANSPORTS)}: {self.transport!r}"
            )
        if not self.run_dir:
            raise ConfigError("run_dir must not be empty")
        if not 1 <= self.base_port <= 65535 - len(dataclasses.fields(Topology)):
            raise ConfigError(f"base_port out of range: {self.base_port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port out of range: {self.metrics_port}")
        if self.capacity is not None and self.capacity < 1:
            raise ConfigError(f"capacity must be at least 1: {self.capacity}")

    @classmethod
    def load(
        cls,
        file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> DeploymentConfig:
        """The configuration from ``file`` (TOML), then ``env`` (default ``os.environ``), then
        ``overrides`` (command-line flags; ``None`` values are not given), later ones winning."""
        values: dict[str, Any] = {}
        if file is not None:
            values.update(_from_toml(Path(file)))
        values.update(_from_env(os.environ if env is None else env))
        for name, value in (overrides or {}).items():
            if name not in _FIELDS:
                raise ConfigError(f"unknown setting {name!r}")
            if value is not None:
                values[name] = value
        return cls(**values)

    def topology(self) -> Topology:
        """Every endpoint of this deployment (creating the ipc run directory, mode 0700)."""
        try:
            # Every path is checked before the run directory is created.
            for f in dataclasses.fields(Topology):
                ipc(self.run_dir, f.name.replace("_", "-"))
        except ValueError as exc:
            raise ConfigError(f"{exc}: choose a shorter run_dir") from None
        local = Topology.ipc(self.run_dir)
        if self.transport == "ipc":
            return local
        if self.curve_dir is None and not self.insecure:
            raise ConfigError(
                "tcp needs CURVE keys (curve_dir, made by `taskmill keys DIR`) or, for plain "
                "unauthenticated tcp, an explicit --insecure (TASKMILL_INSECURE=1, insecure = true)"
            )
        remote = Topology.tcp(self.host, self.base_port)
        controls = {
            f.name: getattr(local, f.name)
            for f in dataclasses.fields(Topology)
            if f.name.endswith("_control")
        }
        return remote.with_(**controls)

    def security(self) -> CurveSecurity | None:
        """The CURVE settings of this process's sockets (tcp with ``curve_dir``), else None."""
        if self.transport != "tcp" or self.curve_dir is None:
            return None
        try:
            return CurveSecurity.from_directory(self.curve_dir, client=self.client_key)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load CURVE keys from {self.curve_dir}: {exc}") from None

    def authorized_keys(self) -> Path | None:
        """The directory of client public keys the servers of this deployment accept."""
        if self.security() is None:
            return None
        assert self.curve_dir is not None
        return Path(self.curve_dir) / "authorized"

    def with_(self, **changes: Any) -> DeploymentConfig:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


_FIELDS: dict[str, dataclasses.Field[Any]] = {
    f.name: f for f in dataclasses.fields(DeploymentConfig)
}
_TYPES: dict[str, type] = {
    "run_dir": str,
    "transport": str,
    "host": str,
    "base_port": int,
    "database": str,
    "insecure": bool,
    "metrics_port": int,
    "capacity": int,
    "app": str,
    "curve_dir": str,
    "client_key": str,
}

_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false"}


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = _TYPES.get(name)
        if kind is None:
            known = ", ".join(sorted(_TYPES))
            raise ConfigError(f"{path}: unknown setting {name!r} (known: {known})")
        # bool is an int: a port of `true` is refused, not taken as 1.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{path}: {name} must be {_KIND_NAMES[kind]}, got {value!r}")
        values[name] = value
    return values


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, name in ENV_VARS.items():
        raw = env.get(var)
        if raw is None:
            continue
        kind = _TYPES[name]
        if kind is bool:
            text = raw.strip().lower()
            if text not in _TRUE + _FALSE:
                raise ConfigError(f"{var} must be one of 1/0, true/false, yes/no, on/off: {raw!r}")
            values[name] = text in _TRUE
        elif kind is int:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
        elif raw:
            values[name] = raw
    return values


def load_app(reference: str, *, app_dir: str | Path | None = None) -> SchedulerBuilder:
    """The application named ``module:attribute`` (a ``SchedulerBuilder``, or a function called
    without arguments that returns one); ``attribute`` may be dotted. ``app_dir`` is put first
    on ``sys.path`` (the CLI passes the current directory, as ``python -m`` would).
    ``ConfigError`` says what is wrong otherwise."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"an application is named module:attribute, got {reference!r}")
    if app_dir is not None:
        path = os.fspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} (application {reference}): {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{reference}: {part!r} not found") from None
    if isinstance(obj, SchedulerBuilder):
        return obj
    if not callable(obj):
        raise ConfigError(
            f"{reference} is of type {type(obj).__name__!r}, not a SchedulerBuilder "
            "or a function returning one"
        )
    try:
        inspect.signature(obj).bind()
    except TypeError:
        raise ConfigError(f"{reference} needs arguments; it must be callable without any") from None
    except ValueError:
        pass  # no signature to inspect (a builtin): just call it
    result = obj()
    if not isinstance(result, SchedulerBuilder):
        raise ConfigError(
            f"{reference}() returned a {type(result).__name__!r}, not a SchedulerBuilder"
        )
    return result
