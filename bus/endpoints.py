"""Endpoint addresses for the three transports, and the socket options that go with them.

* ``inproc://<namespace>-<name>`` — embedded mode: every actor a thread of one process.
* ``ipc://<run dir>/<name>.sock`` — one process per actor on one machine; the run directory is
  created with mode 0700 so only its owner can connect.
* ``tcp://<host>:<port>`` — executor hosts and clients on other machines.
"""

from __future__ import annotations

import fcntl
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


def private_dirs(directory: str | Path) -> None:
    """Create ``directory`` and its missing parents with mode 0700 whatever the umask. An
    existing one is left as it is (it may be the user's own)."""
    directory = Path(directory)
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        os.chmod(created, 0o700)


def ensure_run_dir(path: str | Path) -> Path:
    """Create the ipc run directory with mode 0700 (tightening an existing one), and its
    missing parents (the deployment's ``.taskmill/``, which may hold the database) too."""
    run_dir = Path(path)
    private_dirs(run_dir)
    mode = stat.S_IMODE(os.stat(run_dir).st_mode)
    if mode != 0o700:
        os.chmod(run_dir, 0o700)
    return run_dir


def transport(endpoint: str) -> str:
    return endpoint.split("://", 1)[0]


class EndpointInUse(Exception):
    """Another live process holds the lock of an ipc endpoint (``lock_endpoint``)."""

    def __init__(self, lock_path: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{holder} already serves it (lock {lock_path})")
        self.lock_path = lock_path
        self.pid = pid


def lock_endpoint(endpoint: str) -> int | None:
    """Lock an ipc endpoint for this process: ``<socket file>.lock``, held until it exits.

    Binding an ipc endpoint replaces the socket file of the process already bound there, which
    then gets nothing more, not even the requests meant to stop it: a second copy of an actor
    must not bind at all. The lock is an ``flock`` on a file holding the holder's pid; the OS
    releases it when the process ends, however it ends. Returns the lock's descriptor (keep it
    open), or None for an endpoint that is not ipc (a taken tcp port refuses a bind by itself).
    Raises ``EndpointInUse`` when another process holds it.
    """
    if transport(endpoint) != "ipc":
        return None
    path = Path(endpoint.split("://", 1)[1] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise EndpointInUse(path, int(text) if text.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
