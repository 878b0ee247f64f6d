"""Endpoint addresses for the three transports, and the socket options that go with them.

* ``inproc://<namespace>-<name>`` — embedded mode: every actor a thread of one process.
* ``ipc://<run dir>/<name>.sock`` — one process per actor on one machine; the run directory is
  created with mode 0700 so only its owner can connect.
* ``tcp://<host>:<port>`` — executor hosts and clients on other machines.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path


def inproc(namespace: str, name: str) -> str:
    return f"inproc://{namespace}-{name}"


def new_namespace() -> str:
    """A fresh inproc namespace, so several embedded schedulers can share one zmq context."""
    return f"taskmill-{uuid.uuid4().hex[:12]}"


def ipc(run_dir: str | Path, name: str) -> str:
    path = Path(run_dir) / f"{name}.sock"
    if len(str(path)) > 100:  # sun_path is ~107 bytes; zmq reports a confusing error past it
        raise ValueError(f"ipc path too long for a unix socket: {path}")
    return f"ipc://{path}"


def tcp(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"


def ensure_run_dir(path: str | Path) -> Path:
    """Create the ipc run directory with mode 0700 (tightening an existing one)."""
    run_dir = Path(path)
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(os.stat(run_dir).st_mode)
    if mode != 0o700:
        os.chmod(run_dir, 0o700)
    return run_dir


def transport(endpoint: str) -> str:
    return endpoint.split("://", 1)[0]
