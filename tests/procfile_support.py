"""Running a deployment's actors as separate OS processes, for the system tests.

``Deployment`` starts ``python -m taskmill <command>`` processes with the deployment in their
environment (``TASKMILL_*``), waits for each actor to answer PING over its control endpoint,
reads a process's output line by line with a timeout, and stops everything it started: SIGTERM
first (in the embedded shutdown order), SIGKILL for whatever is still running after a timeout.
Nothing here sleeps to wait.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import zmq

from bus.client import await_pong
from bus.hosting import ActorThread
from bus.topology import Topology
from taskmill.deploy import DeploymentConfig
from taskmill.processes import build, build_worker
from tests.system_app import app

REPO = Path(__file__).resolve().parent.parent
STOP_ORDER = ("worker", "dispatcher", "monitor", "limiter", "events", "store")


def free_port() -> int:
    """A tcp port of the loopback interface free right now (checked, not reserved)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def actor_threads(tmp_path: Path) -> Iterator[DeploymentConfig]:
    """Every actor of ``tests.system_app`` built as the processes build them (one worker,
    ``t1``), run as threads of this process on ipc sockets; the deployment's configuration."""
    base = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp"))  # short: unix socket paths
    cfg = DeploymentConfig(run_dir=str(base / "run"), database=str(tmp_path / "t.db"))
    spec = app().spec
    context: zmq.Context[Any] = zmq.Context()
    threads: list[ActorThread] = []
    try:
        processes = [build(name, spec, cfg) for name in ("store", "events", "limiter", "monitor")]
        processes += [build("dispatcher", spec, cfg), build_worker(spec, cfg, host_id="t1")]
        for process in processes:
            threads.append(ActorThread(process.actor, context, process.control).start())
        yield cfg
    finally:
        for thread in reversed(threads):
            thread.stop()
        context.destroy(linger=0)
        shutil.rmtree(base, ignore_errors=True)


class Lines:
    """The lines a pipe produces, read by a thread, for waiting on with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        finally:
            self._queue.put(None)
            stream.close()

    def join(self, timeout: float) -> None:
        """Wait for the end of the stream (the process has exited)."""
        self._thread.join(timeout)

    def next(self, deadline: float) -> str | None:
        """The next line; None at the end of the stream. ``TimeoutError`` past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no line before the deadline")
        try:
            line = self._queue.get(timeout=remaining)
        except queue.Empty:
            raise TimeoutError("no line before the deadline") from None
        if line is not None:
            self.lines.append(line)
        return line

    def until(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Read until a line satisfies ``predicate``; that line."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(deadline)
            if line is None:
                raise EOFError(f"stream ended; read: {self.lines[-20:]}")
            if predicate(line):
                return line


class Proc:
    """One started process: its role, the Popen, and its output."""

    def __init__(
        self, role: str, popen: subprocess.Popen[str], log: Path | None, *, group: bool = False
    ) -> None:
        self.role = role
        self.group = group
        self.popen = popen
        self.log = log
        self.stdout = Lines(popen.stdout) if popen.stdout is not None else None
        self.stderr = Lines(popen.stderr) if popen.stderr is not None else None

    def log_tail(self, n: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


class Deployment:
    """Actor processes of one deployment on ipc sockets in a short run directory."""

    def __init__(self, tmp_path: Path, app: str = "tests.system_app:app") -> None:
        # A unix socket path must stay under ~100 bytes: pytest's tmp_path can be longer.
        self.run_dir = Path(tempfile.mkdtemp(prefix="tm", dir="/tmp")) / "run"
        self.tmp_path = tmp_path
        self.database = tmp_path / "taskmill.db"
        self.topology = Topology.ipc(self.run_dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
        pythonpath = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            TASKMILL_RUN_DIR=str(self.run_dir),
            TASKMILL_DATABASE=str(self.database),
            TASKMILL_APP=app,
        )
        self.env = env
        self.procs: list[Proc] = []
        self.context: zmq.Context[Any] = zmq.Context()

    # -- starting ----------------------------------------------------------------------------

    def start(self, role: str, *args: str, pipe: bool = False) -> Proc:
        """Start ``python -m taskmill <args>``; output to a log file unless ``pipe``."""
        argv = [sys.executable, "-m", "taskmill", *args]
        return self.spawn(role, argv, pipe=pipe)

    def spawn(
        self, role: str, argv: list[str], *, pipe: bool = False, new_session: bool = False
    ) -> Proc:
        """Start ``argv``; ``new_session``: in a process group of its own, killed as a whole."""
        log = None
        options: dict[str, Any] = {
            "cwd": REPO,
            "env": self.env,
            "text": True,
            "start_new_session": new_session,
        }
        if pipe:
            popen = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
            )
        else:
            log = self.tmp_path / f"{role}-{len(self.procs)}.log"
            with log.open("w") as out:
                popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **options)
        proc = Proc(role, popen, log, group=new_session)
        self.procs.append(proc)
        return proc

    def start_actors(self, workers: tuple[str, ...] = ("w1", "w2")) -> dict[str, Proc]:
        """Every actor, one process each, and one worker per host id; ready when returned."""
        procs = {a: self.start(a, a) for a in ("store", "events", "limiter", "monitor")}
        procs["dispatcher"] = self.start("dispatcher", "dispatcher")
        for host_id in workers:
            procs[host_id] = self.start("worker", "worker", "--host-id", host_id)
        for name, proc in procs.items():
            self.wait_ready(proc, self.control(name))
        return procs

    def control(self, name: str) -> str:
        if name in STOP_ORDER:
            endpoint: str = getattr(self.topology, f"{name}_control")
            return endpoint
        return self.topology.host_control(name)

    def wait_ready(self, proc: Proc, control: str, timeout: float = 15.0) -> None:
        """Wait for the actor's PONG (re-asking every half second while its process lives)."""
        failure = await_pong(self.context, control, timeout=timeout, exited=proc.popen.poll)
        if failure is not None:
            raise AssertionError(f"{proc.role} {failure}:\n{proc.log_tail()}")

    # -- stopping ----------------------------------------------------------------------------

    def stop(self, proc: Proc, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                return proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
        if proc.group:  # whatever the leader left behind in its group goes too
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, signal.SIGKILL)
        code = proc.popen.wait()
        for lines in (proc.stdout, proc.stderr):
            if lines is not None:
                lines.join(timeout)
        return code

    def stop_all(self) -> dict[str, int]:
        """Stop every process, clients and actors in the embedded shutdown order."""
        order = {role: i for i, role in enumerate(STOP_ORDER)}
        codes: dict[str, int] = {}
        for proc in sorted(self.procs, key=lambda p: order.get(p.role, -1)):
            codes[f"{proc.role}:{proc.popen.pid}"] = self.stop(proc)
        return codes

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            self.context.destroy(linger=0)
            shutil.rmtree(self.run_dir.parent, ignore_errors=True)

    def logs(self) -> Iterator[str]:
        for proc in self.procs:
            if proc.log is not None:
                yield f"--- {proc.role} ({proc.log.name})\n{proc.log_tail()}"


@contextmanager
def deployed(tmp_path: Path, app: str = "tests.system_app:app") -> Iterator[Deployment]:
    """A ``Deployment`` of ``app``, closed afterwards; its processes' logs are printed then,
    which pytest shows when the test failed."""
    deployment = Deployment(tmp_path, app)
    try:
        yield deployment
    finally:
        deployment.close()
        for text in deployment.logs():
            print(text)
