"""The two deployments a shape runs against, behind one small interface.

* ``embedded`` — ``Scheduler.builder().store_path(tmp/"bench.db")...build()``: every actor a
  thread of this process over inproc.
* ``procfile`` — the Procfile deployment: ``python -m taskmill store|events|limiter|monitor|
  dispatcher|worker``, one process each, over ipc sockets in a short run directory, configured
  by the ``TASKMILL_*`` environment (README "Running as separate processes"); this process
  submits with ``taskmill.AsyncClient`` and observes with its event subscription.

Both use a file-backed database in the shape's temporary directory with the default durability
(WAL, ``synchronous=NORMAL``): nothing here configures the Store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import zmq

from bench.app import CONCURRENCY_ENV, STAMPS_ENV, builder
from bench.common import REPO, peak_rss_mb, vm_hwm_mb
from bus.client import RequestClient, await_pong
from bus.kinds import CountsReply, Ok
from bus.kinds_run import SetMaxConcurrency
from bus.topology import Topology
from taskmill import (
    AsyncClient,
    DeploymentConfig,
    EventSubscription,
    Scheduler,
    SubmitOutcome,
    TaskSubmission,
)

ACTORS = ("store", "events", "limiter", "monitor", "dispatcher", "worker")
STOP_ORDER = ("worker", "dispatcher", "monitor", "limiter", "events", "store")
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
WORKER_ID = "bench-w1"


class Target(Protocol):
    """What a shape needs from a deployment."""

    mode: str

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome: ...

    async def submit_batch(self, submissions: Sequence[TaskSubmission]) -> list[SubmitOutcome]: ...

    async def subscribe(self) -> EventSubscription: ...

    async def counts(self) -> CountsReply: ...

    async def start(self) -> None:
        """Begin dispatching (a Procfile Dispatcher dispatches from its start: no-op)."""

    def rss_mb(self) -> dict[str, float]:
        """Peak RSS of every process involved, MB."""


class _Submitting:
    """The calls the shapes make that a ``Scheduler`` and an ``AsyncClient`` answer alike."""

    api: Scheduler | AsyncClient

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome:
        return await self.api.submit(submission)

    async def submit_batch(self, submissions: Sequence[TaskSubmission]) -> list[SubmitOutcome]:
        return await self.api.submit_batch(submissions)

    async def subscribe(self) -> EventSubscription:
        return await self.api.subscribe()

    async def counts(self) -> CountsReply:
        return await self.api.store().counts()


class Embedded(_Submitting):
    mode = "embedded"

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = self.api = scheduler
        self.started = False

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self.scheduler.__aenter__()

    def rss_mb(self) -> dict[str, float]:
        return {"process": peak_rss_mb()}


@asynccontextmanager
async def embedded(work: Path, concurrency: int) -> AsyncIterator[Embedded]:
    scheduler = await builder(concurrency).store_path(work / "bench.db").build()
    target = Embedded(scheduler)
    try:
        yield target
    finally:
        await scheduler.close()


class Procfile(_Submitting):
    mode = "procfile"

    def __init__(
        self,
        client: AsyncClient,
        processes: dict[str, subprocess.Popen[bytes]],
        dispatcher: RequestClient,
        concurrency: int,
        deferred: bool,
        topology: Topology,
    ) -> None:
        self.client = self.api = client
        self.processes = processes
        self.topology = topology
        """Where each actor listens (its control endpoint answers ``Stats``)."""
        self._dispatcher = dispatcher
        self._concurrency = concurrency
        self._deferred = deferred

    async def start(self) -> None:
        # A deferred deployment started with max_concurrency 0 (the Dispatcher dispatches from
        # its start): raising it is this deployment's "run".
        if self._deferred:
            self._deferred = False
            self._dispatcher.call(SetMaxConcurrency(self._concurrency), Ok)

    def rss_mb(self) -> dict[str, float]:
        rss = {"producer": peak_rss_mb()}
        for name, popen in self.processes.items():
            value = vm_hwm_mb(popen.pid)
            if value is not None:
                rss[name] = value
        return rss


def _actor_env(run_dir: Path, database: Path, concurrency: int, deferred: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    pythonpath = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    env.update(
        PYTHONPATH=os.pathsep.join(pythonpath),
        PYTHONUNBUFFERED="1",
        TASKMILL_RUN_DIR=str(run_dir),
        TASKMILL_DATABASE=str(database),
        TASKMILL_APP="bench.app:app",
        TASKMILL_CAPACITY=str(concurrency),
        **{CONCURRENCY_ENV: "0" if deferred else str(concurrency)},
    )
    stamps = os.environ.get(STAMPS_ENV)
    if stamps:
        env[STAMPS_ENV] = stamps
    return env


def _wait_ready(
    context: zmq.Context[Any], popen: subprocess.Popen[bytes], control: str, log: Path
) -> None:
    """Until the actor answers PING on its control endpoint (re-asked every half second)."""
    failure = await_pong(context, control, timeout=READY_TIMEOUT_S, exited=popen.poll)
    if failure is not None:
        raise RuntimeError(f"{control}: {failure}\n{_tail(log)}")


def _tail(log: Path, n: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    return ""


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    """SIGTERM in the embedded shutdown order, SIGKILL whatever outlives ``STOP_TIMEOUT_S``."""
    codes: dict[str, int] = {}
    for name in STOP_ORDER:
        popen = processes.get(name)
        if popen is None:
            continue
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                popen.kill()
        codes[name] = popen.wait()
    return codes


def control(topology: Topology, actor: str) -> str:
    """The control endpoint of one of ``ACTORS`` (the worker's by its host id)."""
    if actor == "worker":
        return topology.host_control(WORKER_ID)
    endpoint: str = getattr(topology, f"{actor}_control")
    return endpoint


@asynccontextmanager
async def procfile(work: Path, concurrency: int, deferred: bool) -> AsyncIterator[Procfile]:
    # A unix socket path must stay under ~100 bytes: keep the run directory short.
    base = Path(tempfile.mkdtemp(prefix="tmb", dir="/tmp"))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    context: zmq.Context[Any] = zmq.Context()
    client: AsyncClient | None = None
    dispatcher: RequestClient | None = None
    try:
        run_dir = base / "run"
        env = _actor_env(run_dir, work / "bench.db", concurrency, deferred)
        cfg = DeploymentConfig(run_dir=str(run_dir))
        topology = cfg.topology()
        dispatcher = RequestClient(context, topology.dispatcher)
        for name in ACTORS:
            argv = [sys.executable, "-m", "taskmill", name]
            if name == "worker":
                argv += ["--host-id", WORKER_ID]
            log = work / f"{name}.log"
            with log.open("wb") as out:
                processes[name] = subprocess.Popen(
                    argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            _wait_ready(context, processes[name], control(topology, name), log)
        client = AsyncClient(cfg, context=context)
        yield Procfile(client, processes, dispatcher, concurrency, deferred, topology)
    finally:
        if client is not None:
            await client.close()
        if dispatcher is not None:
            dispatcher.close()
        codes = _stop(processes)
        context.destroy(linger=0)
        shutil.rmtree(base, ignore_errors=True)
        failed = {name: code for name, code in codes.items() if code != 0}
        if failed:
            logs = "\n".join(f"--- {n}\n{_tail(work / f'{n}.log')}" for n in failed)
            print(f"procfile: actors exited non-zero: {failed}\n{logs}", file=sys.stderr)


def target(
    mode: str, work: Path, concurrency: int, *, deferred: bool = False
) -> contextlib.AbstractAsyncContextManager[Any]:
    """The deployment ``mode`` for one shape. ``deferred``: it does not dispatch until
    ``start()`` (embedded: not running yet; Procfile: max_concurrency 0 until then)."""
    if mode == "embedded":
        return embedded(work, concurrency)
    if mode == "procfile":
        return procfile(work, concurrency, deferred)
    raise ValueError(f"unknown mode {mode!r}")
