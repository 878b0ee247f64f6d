"""The fault run: every actor of a Procfile deployment SIGKILLed in turn under mixed load.

``python bench/chaos.py [--quick]`` starts the six processes of a Procfile deployment (store,
events, limiter, monitor, dispatcher, one worker) on ipc sockets in a short temporary run
directory, with this module as the application (``TASKMILL_APP=bench.chaos:app``). A producer
thread submits a steady mix: tasks in two groups with concurrency limits, tasks that fail once
with a retryable error, parents that spawn children, tasks with expected IO, at three priorities.
Meanwhile each actor is killed with SIGKILL and started again, one after the other, and the Store
once more while a large ``submit_batch`` is in flight. Then the producer stops, the deployment
drains, and the run prints:

* acknowledged submissions lost: ids a ``submit_batch`` returned, plus the children parents
  were told were spawned, that never completed;
* completed but never acknowledged: children whose parent's worker was killed after the Store
  took them but before the parent heard so; the parent's next run gets ``duplicate`` outcomes,
  which carry no id. They run and complete all the same;
* completed twice: task ids with more than one completed row in history;
* executed more than once: tasks whose executor ran to its end more than once. Every execution
  appends a line to one file (``O_APPEND``, one ``write`` per line), which outlives any kill. A
  task whose run finished but whose result died with a killed worker runs again: delivery is at
  least once, so this figure is reported, not required to be 0;
* recovery per actor: kill → the actor answering ``ping`` again, and kill → the first task
  completion seen after the restart;
* per group, the most of its tasks running at once (from history), against its limit;
* ``PRAGMA integrity_check`` on the database once every process has stopped.

Everything is bounded (a deadline on each wait), on ipc sockets only, and every process and
directory it made is gone when it returns, even after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO
from bench.targets import STOP_ORDER, _stop, _tail
from bus.client import RequestClient, await_pong
from bus.errors import TaskmillError
from bus.kinds import Counts, CountsReply, History, HistoryReply
from bus.structs import HistoryRow
from bus.topology import Topology
from taskmill import (
    RetentionPolicy,
    Scheduler,
    SchedulerBuilder,
    StoreConfig,
    SubmitOutcome,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskSubmission,
)
from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client

LOG_ENV = "TASKMILL_CHAOS_LOG"
"""The file every execution appends its lines to (set in the actors' environment)."""
WORKER_ID = "chaos-w1"
GROUPS = {"ga": 2, "gb": 3}
"""The groups the mix uses and their concurrency limits (configured, so a restarted
GroupLimiter knows them)."""
CHILDREN = 2
PRIORITIES = (64, 128, 192)
VICTIMS = ("store", "dispatcher", "limiter", "monitor", "events", "worker", "store-mid-batch")
READY_TIMEOUT_S = 20.0
RECOVERY_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 90.0


# -- the application the actor processes run -------------------------------------------------


class ExecutionLog:
    """Appends ``<what> <task id>`` lines to the file named by ``TASKMILL_CHAOS_LOG``: one
    ``write`` on an ``O_APPEND`` descriptor per line, so lines from concurrent runs never
    interleave and every line written before a SIGKILL is kept."""

    def __init__(self) -> None:
        self._fd: int | None = None

    def note(self, what: str, task_id: int) -> None:
        path = os.environ.get(LOG_ENV)
        if not path:
            return
        if self._fd is None:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self._fd, f"{what} {task_id}\n".encode())


EXECUTIONS = ExecutionLog()


async def work(ctx: TaskContext) -> None:
    """Sleeps ``{"s": seconds}``; notes its start and its end."""
    EXECUTIONS.note("start", ctx.record.id)
    await asyncio.sleep(float(ctx.payload()["s"]))
    EXECUTIONS.note("done", ctx.record.id)


async def flaky(ctx: TaskContext) -> None:
    """Fails its first attempt with a retryable error, then works."""
    EXECUTIONS.note("start", ctx.record.id)
    if ctx.record.retry_count == 0:
        raise TaskError.retryable("first attempt fails")
    await asyncio.sleep(float(ctx.payload()["s"]))
    EXECUTIONS.note("done", ctx.record.id)


class Parent(TaskExecutor):
    """Spawns ``CHILDREN`` ``work`` children, keyed by its own id (a re-run spawns the same
    ones: duplicates, not new tasks)."""

    async def execute(self, ctx: TaskContext) -> None:
        EXECUTIONS.note("start", ctx.record.id)
        children = [
            TaskSubmission("work", key=f"{ctx.record.id}/{i}").payload_json({"s": 0.02})
            for i in range(CHILDREN)
        ]
        for outcome in await ctx.spawn_children(children):
            if outcome.id is not None:
                EXECUTIONS.note("child", outcome.id)
        EXECUTIONS.note("done", ctx.record.id)


def app() -> SchedulerBuilder:
    builder = (
        Scheduler.builder()
        .store_path("chaos.db")
        .executor("work", work)
        .executor("flaky", flaky)
        .executor("parent", Parent())
        .max_concurrency(8)
        .max_retries(5)
        # Every row stays in history for the count at the end (the default keeps 10,000).
        .store_config(StoreConfig(retention_policy=RetentionPolicy.max_age_days(1)))
    )
    for group, limit in GROUPS.items():
        builder = builder.group_concurrency(group, limit)
    return builder


def mixed(i: int, run: str) -> TaskSubmission:
    """The ``i``-th task of the mix (``run`` keeps keys apart between runs on one database)."""
    key, priority = f"{run}-{i}", PRIORITIES[i % len(PRIORITIES)]
    shape = i % 5
    if shape == 3:
        return TaskSubmission("parent", key=key, priority=priority).payload_json({})
    task = TaskSubmission("flaky" if shape == 2 else "work", key=key, priority=priority)
    task = task.payload_json({"s": 0.03})
    if shape in (0, 1):
        return task.group(list(GROUPS)[shape])
    if shape == 4:
        return task.expected_io(read_bytes=32_000, write_bytes=32_000)
    return task


# -- the deployment ------------------------------------------------------------------------


class Cluster:
    """The actor processes of one Procfile deployment, started, killed and restarted by name.

    ``work`` holds the database, the execution log and one log file per process; the ipc
    sockets live in a short temporary run directory (unix socket paths must stay short),
    removed by ``close``."""

    def __init__(
        self, work_dir: Path, app: str = "bench.chaos:app", database: str = "chaos.db"
    ) -> None:
        self.work = work_dir
        self.database = work_dir / database
        self.executions = work_dir / "executions.log"
        self._base = Path(tempfile.mkdtemp(prefix="tmc", dir="/tmp"))
        self.topology = Topology.ipc(self._base / "run")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
        pythonpath = [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            PYTHONPATH=os.pathsep.join(pythonpath),
            PYTHONUNBUFFERED="1",
            TASKMILL_RUN_DIR=str(self._base / "run"),
            TASKMILL_DATABASE=str(self.database),
            TASKMILL_APP=app,
            **{LOG_ENV: str(self.executions)},
        )
        self._env = env
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.context: zmq.Context[Any] = zmq.Context()

    def control(self, actor: str) -> str:
        if actor == "worker":
            return self.topology.host_control(WORKER_ID)
        endpoint: str = getattr(self.topology, f"{actor}_control")
        return endpoint

    def log(self, actor: str) -> Path:
        return self.work / f"{actor}.log"

    def start(self, actor: str) -> None:
        """Start ``actor``'s process (output appended to its log)."""
        argv = [sys.executable, "-m", "taskmill", actor]
        if actor == "worker":
            argv += ["--host-id", WORKER_ID]
        with self.log(actor).open("ab") as out:
            self.processes[actor] = subprocess.Popen(
                argv, cwd=REPO, env=self._env, stdout=out, stderr=subprocess.STDOUT
            )

    def wait_ready(self, actor: str, every: float = 0.05) -> None:
        """Until ``actor`` answers PING on its control endpoint (asked every ``every`` s)."""
        popen = self.processes[actor]
        failure = await_pong(
            self.context,
            self.control(actor),
            timeout=READY_TIMEOUT_S,
            exited=popen.poll,
            every=every,
        )
        if failure is not None:
            raise RuntimeError(f"{actor} {failure}\n{_tail(self.log(actor))}")

    def start_all(self) -> None:
        for actor in reversed(STOP_ORDER):  # store first, worker last
            self.start(actor)
            self.wait_ready(actor, every=0.2)

    def kill(self, actor: str) -> float:
        """SIGKILL ``actor``'s process and reap it; when it was sent (monotonic)."""
        popen = self.processes[actor]
        at = time.monotonic()
        popen.kill()
        popen.wait(10)
        return at

    def store(self, timeout: float = 3.0) -> RequestClient:
        return RequestClient(self.context, self.topology.store, timeout=timeout)

    def close(self) -> dict[str, int]:
        """Stop every process (SIGTERM in shutdown order, SIGKILL after a timeout); exit codes."""
        try:
            return _stop(self.processes)
        finally:
            self.context.destroy(linger=0)
            shutil.rmtree(self._base, ignore_errors=True)


@contextlib.contextmanager
def cluster(
    work_dir: Path, app: str = "bench.chaos:app", database: str = "chaos.db"
) -> Iterator[Cluster]:
    deployment = Cluster(work_dir, app, database)
    try:
        deployment.start_all()
        yield deployment
    finally:
        codes = deployment.close()
        failed = {a: c for a, c in codes.items() if c != 0}
        if failed:
            print(f"chaos: processes exited non-zero at the end: {failed}", file=sys.stderr)


# -- load and observation --------------------------------------------------------------------


class Completions:
    """A thread following the event stream: the time each completion arrived."""

    def __init__(self, topology: Topology, context: zmq.Context[Any]) -> None:
        self._endpoint = topology.events
        self._context = context
        self._times: list[float] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="completions", daemon=True)

    def __enter__(self) -> Completions:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _follow(self) -> None:
        events = EventSubscriber(self._endpoint, context=self._context)
        self._ready.set()
        try:
            while not self._stop.is_set():
                event = events.recv(timeout=0.2)
                if event is not None and event.type == "completed":
                    with self._changed:
                        self._times.append(time.monotonic())
                        self._changed.notify_all()
        finally:
            events.close()

    def count(self) -> int:
        with self._changed:
            return len(self._times)

    def first_after(self, at: float, timeout: float) -> float | None:
        """When the first completion after ``at`` arrived; None if none within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                later = [t for t in self._times[-50:] if t > at]
                if later:
                    return min(later)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def wait_count(self, n: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._times) >= n, timeout)


@dataclass
class Acknowledged:
    """Every outcome a ``submit_batch`` returned, and the calls that failed for good."""

    outcomes: list[SubmitOutcome] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcomes: Sequence[SubmitOutcome]) -> None:
        with self.lock:
            self.outcomes.extend(outcomes)

    def ids(self) -> set[int]:
        with self.lock:
            return {o.id for o in self.outcomes if o.id is not None}


class Producer:
    """A thread submitting ``batch`` mixed tasks every ``pause`` seconds until stopped."""

    def __init__(
        self, topology: Topology, acked: Acknowledged, run: str, batch: int, pause: float
    ) -> None:
        self._topology, self._acked, self._run = topology, acked, run
        self._batch, self._pause = batch, pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="producer", daemon=True)
        self.submitted = 0

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _produce(self) -> None:
        with Client(self._topology, timeout=3.0, retries=6) as client:
            while not self._stop.is_set():
                start = self.submitted
                self.submitted += self._batch
                batch = [mixed(i, self._run) for i in range(start, start + self._batch)]
                try:
                    self._acked.add(client.submit_batch(batch))
                except TaskmillError as exc:
                    self._acked.refused.append(repr(exc))
                self._stop.wait(self._pause)


@dataclass
class Recovery:
    actor: str
    ping_s: float
    """Kill → the restarted actor answering ``ping``."""
    completion_s: float | None
    """Kill → the first completion seen after the restart (None: none within the timeout)."""
    in_flight: bool | None = None
    """Store mid-batch only: the batch's call was still waiting for its reply at the kill."""


def kill_and_restart(
    deployment: Cluster,
    completions: Completions,
    actor: str,
    acked: Acknowledged,
    batches: tuple[Sequence[TaskSubmission], Sequence[TaskSubmission]] = ((), ()),
) -> Recovery:
    """SIGKILL ``actor``, restart it, and time its recovery. ``store-mid-batch``: the Store,
    halfway through the second of ``batches`` (as long as the first one, submitted first
    without a kill, took to be answered)."""
    replied: list[float] = []
    submitter: threading.Thread | None = None
    process = "store" if actor == "store-mid-batch" else actor
    if actor == "store-mid-batch":
        calibration, batch = batches
        sending = threading.Event()

        def submit(submissions: Sequence[TaskSubmission]) -> None:
            with Client(deployment.topology, timeout=5.0, retries=6) as client:
                sending.set()
                try:
                    acked.add(client.submit_batch(submissions))
                except TaskmillError as exc:
                    acked.refused.append(repr(exc))
                replied.append(time.monotonic())

        began = time.monotonic()
        submit(calibration)
        took = replied.pop() - began
        sending.clear()
        submitter = threading.Thread(target=submit, args=(batch,), name="batch", daemon=True)
        submitter.start()
        sending.wait(10)
        time.sleep(took / 2)
    killed = deployment.kill(process)
    deployment.start(process)
    deployment.wait_ready(process)
    ping = time.monotonic() - killed
    first = completions.first_after(time.monotonic() - 0.001, RECOVERY_TIMEOUT_S)
    in_flight: bool | None = None
    if submitter is not None:
        submitter.join(60)
        in_flight = bool(replied) and replied[0] > killed
    return Recovery(actor, ping, None if first is None else first - killed, in_flight)


# -- verdict ---------------------------------------------------------------------------------


@dataclass
class Report:
    acknowledged: int
    children: int
    completed: int
    lost: list[int]
    """Acknowledged ids (children included) without a completed history row."""
    unacknowledged: list[int]
    """Completed task ids nobody was told of (neither a submitter nor a parent): children
    spawned by a run whose worker died before the parent heard of them."""
    completed_twice: list[int]
    executed_twice: list[int]
    """Task ids whose executor ran to its end more than once."""
    refused: list[str]
    """Submissions that failed for good (never acknowledged: not counted as lost)."""
    recoveries: list[Recovery]
    group_peaks: dict[str, int]
    """Per group, the most of its tasks that ran at once (never above its limit)."""
    integrity: str
    wall_s: float

    def lines(self) -> list[str]:
        out = [
            f"acknowledged submissions: {self.acknowledged} (+ {self.children} children)",
            f"completed: {self.completed}",
            f"acknowledged submissions lost: {listed(self.lost)}",
            f"completed but never acknowledged: {listed(self.unacknowledged)}",
            f"completed twice: {listed(self.completed_twice)}",
            f"executed more than once: {listed(self.executed_twice)}",
            f"submit calls refused for good: {listed(self.refused)}",
            "recovery (kill -> ping answered, kill -> first completion after the restart):",
        ]
        for r in self.recoveries:
            done = "none" if r.completion_s is None else f"{r.completion_s:.2f}s"
            note = "" if r.in_flight is None else f"  (batch in flight at the kill: {r.in_flight})"
            out.append(f"  {r.actor:<16} ping {r.ping_s:.2f}s  completion {done}{note}")
        out += [
            f"group {g}: limit {GROUPS[g]}, most running at once {self.group_peaks.get(g, 0)}"
            for g in GROUPS
        ]
        out += [f"integrity_check: {self.integrity}", f"wall time: {self.wall_s:.1f}s"]
        return out


def listed(items: Sequence[object], shown: int = 5) -> str:
    """``n`` and, when there are any, the first few of them."""
    return f"{len(items)} {list(items[:shown])}" if items else "0"


def read_executions(path: Path) -> tuple[Counter[int], set[int]]:
    """Finished executions per task id, and the ids of every child a parent was told of."""
    done: Counter[int] = Counter()
    children: set[int] = set()
    if path.exists():
        for line in path.read_text().splitlines():
            what, _, task_id = line.partition(" ")
            if what == "done":
                done[int(task_id)] += 1
            elif what == "child":
                children.add(int(task_id))
    return done, children


def active(deployment: Cluster) -> int | None:
    """Tasks not finished yet (None while the Store does not answer)."""
    store = deployment.store()
    try:
        c = store.call(Counts(), CountsReply)
    except TaskmillError:
        return None
    finally:
        store.close()
    return c.pending + c.running + c.paused + c.waiting + c.scheduled


def drain(deployment: Cluster, completions: Completions, timeout: float) -> None:
    """Until no task is left active; re-asked on each completion, or every half second."""
    deadline = time.monotonic() + timeout
    while active(deployment) != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {active(deployment)} tasks active after {timeout}s")
        completions.wait_count(completions.count() + 1, 0.5)


def completed_rows(deployment: Cluster, page: int = 500) -> list[HistoryRow]:
    """Every completed history row, paged (one reply stays small)."""
    store = deployment.store(timeout=10.0)
    rows: list[HistoryRow] = []
    try:
        while True:
            reply = store.call(
                History(limit=page, offset=len(rows), status="completed"), HistoryReply
            )
            rows += reply.rows
            if len(reply.rows) < page:
                return rows
    finally:
        store.close()


def most_at_once(rows: Sequence[HistoryRow]) -> dict[str, int]:
    """Per group, the most of its rows running at one instant, from their start and
    completion times (a completion and a start in the same millisecond: one slot handed on)."""
    edges: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        if row.group_key is not None and row.started_at_ms is not None:
            edges.setdefault(row.group_key, []).extend(
                [(row.started_at_ms, 1), (row.completed_at_ms, -1)]
            )
    peaks: dict[str, int] = {}
    for group, steps in edges.items():
        running = peak = 0
        for _, step in sorted(steps):  # at equal times -1 sorts first
            running += step
            peak = max(peak, running)
        peaks[group] = peak
    return peaks


def integrity(database: Path) -> str:
    connection = apsw.Connection(str(database))
    try:
        return ", ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))
    finally:
        connection.close()


@dataclass(frozen=True)
class Plan:
    """How hard a run pushes: the victims in order, the producer's pace, the mid-batch size."""

    victims: Sequence[str] = VICTIMS
    batch: int = 10
    pause_s: float = 0.25
    big_batch: int = 400
    between: int = 20
    """Completions to see between two kills (the flow is back before the next one)."""


def run(work_dir: Path, plan: Plan) -> Report:
    """One fault run in ``work_dir`` (which keeps the database and the logs)."""
    began = time.monotonic()
    acked = Acknowledged()
    recoveries: list[Recovery] = []
    with (
        cluster(work_dir) as deployment,
        Completions(deployment.topology, deployment.context) as completions,
    ):
        with Producer(deployment.topology, acked, "p", plan.batch, plan.pause_s):
            for n, victim in enumerate(plan.victims):
                if not completions.wait_count(completions.count() + plan.between, 30):
                    raise TimeoutError(f"no flow of completions before killing {victim}")
                size = plan.big_batch if victim == "store-mid-batch" else 0
                batches = (
                    [mixed(i, f"c{n}") for i in range(size)],
                    [mixed(i, f"b{n}") for i in range(size)],
                )
                recoveries.append(kill_and_restart(deployment, completions, victim, acked, batches))
        drain(deployment, completions, DRAIN_TIMEOUT_S)
        rows = completed_rows(deployment)
    done, children = read_executions(work_dir / "executions.log")
    expected = acked.ids() | children
    counts = Counter(row.task_id for row in rows)
    return Report(
        acknowledged=len(acked.ids()),
        children=len(children),
        completed=len(counts),
        lost=sorted(expected - set(counts)),
        unacknowledged=sorted(set(counts) - expected),
        completed_twice=sorted(i for i, n in counts.items() if n > 1),
        executed_twice=sorted(i for i, n in done.items() if n > 1),
        refused=acked.refused,
        recoveries=recoveries,
        group_peaks=most_at_once(rows),
        integrity=integrity(work_dir / "chaos.db"),
        wall_s=time.monotonic() - began,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, light load (~1 min)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of kills (not --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    plan = (
        Plan()
        if args.quick
        else Plan(victims=VICTIMS * args.rounds, batch=20, big_batch=2000, between=50)
    )
    work_dir = Path(tempfile.mkdtemp(prefix="taskmill-chaos-"))
    try:
        report = run(work_dir, plan)
    finally:
        if args.keep:
            print(f"kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("\n".join(report.lines()))
    ok = not report.lost and not report.completed_twice and report.integrity == "ok"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
