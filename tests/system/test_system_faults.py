"""Faults in the Procfile deployment: real processes killed with SIGKILL while work flows.

* an executor host dies mid-task: its tasks run again on the other host within ~3 s;
* every other process of the Procfile — the Dispatcher, the Store, the EventPublisher, the
  GroupLimiter and the ResourceMonitor — is killed and restarted while 1,000 tasks flow (a
  quarter of them grouped, a quarter with expected IO, so every actor has a part in them): no
  acknowledged submission is lost, every task is completed exactly once in history, and the
  database passes ``PRAGMA integrity_check``;
* a peer sends a publishing socket a message far longer than a subscription can be: it is
  disconnected before the actor buffers or keeps it;
* the Store's disk fills up (a real tmpfs where this process may mount one; everywhere, a real
  SQLite whose writes fail with ``SQLITE_FULL`` through the VFS of ``tests.full_disk_app``):
  commits fail with a clear error until one fits again, nothing acknowledged is lost, the Store
  stops cleanly while full, and the Dispatcher retries its results with backoff, warning once.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import psutil
import pytest
import zmq

from bus.client import RequestClient
from bus.errors import DatabaseError
from bus.kinds import Ping, Pong, Stats, StatsReply
from bus.kinds_run import DispatcherState, GetState
from bus.subscribe import Subscription
from taskmill.records import HistoryStatus, SubmitOutcome
from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.full_disk_app import FULL_FLAG
from tests.procfile_support import Deployment, Proc, deployed

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def wait_until(
    condition: Callable[[], bool], events: EventSubscriber, timeout: float, what: str
) -> None:
    """Check ``condition`` each time something happens (an event), or every half second."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        events.recv(timeout=0.5)


def running_on(deployment: Deployment, host_id: str) -> int:
    stats = RequestClient(deployment.context, deployment.control(host_id))
    try:
        return int(stats.call(Stats(), StatsReply).counters["running"])
    finally:
        stats.close()


def wait_for_hosts(deployment: Deployment, n: int, timeout: float = 15.0) -> None:
    """Ask the Dispatcher until ``n`` executor hosts have said hello (each ask is a reply)."""
    client = RequestClient(deployment.context, deployment.topology.dispatcher)
    deadline = time.monotonic() + timeout
    try:
        while client.call(GetState(), DispatcherState).hosts < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} hosts joined within {timeout}s")
            client.call(Ping(), Pong)  # one more round trip before asking again
    finally:
        client.close()


def sleepy(key: str, seconds: float, steps: int = 1) -> TaskSubmission:
    return TaskSubmission("sleepy", key=key, label=key).payload_json(
        {"seconds": seconds, "steps": steps}
    )


def test_a_killed_host_s_tasks_run_again_on_another_host(deployment: Deployment) -> None:
    procs = deployment.start_actors(workers=("w1", "w2"))
    wait_for_hosts(deployment, 2)
    lost: list[float] = []
    with Client(deployment.topology) as client, client.subscribe() as events:
        client.submit_batch([sleepy(f"slow-{i}", 3.0, steps=30) for i in range(8)])
        dispatched: set[int] = set()

        def all_running() -> bool:
            return len(dispatched) == 8

        def note(event: object) -> None:
            if getattr(event, "type", "") == "dispatched":
                dispatched.add(event.task_id)  # type: ignore[attr-defined]

        deadline = time.monotonic() + 20
        while not all_running() and time.monotonic() < deadline:
            event = events.recv(timeout=0.5)
            if event is not None:
                note(event)
        assert all_running()
        # A dispatched event can reach us before its host has taken the run: ask until both
        # hosts account for all eight (each ask is a round trip).
        running = {host: running_on(deployment, host) for host in ("w1", "w2")}
        while sum(running.values()) < 8 and time.monotonic() < deadline:
            running = {host: running_on(deployment, host) for host in ("w1", "w2")}
        victim = max(running, key=lambda host: running[host])
        on_w1 = running[victim]
        assert on_w1 >= 1 and sum(running.values()) == 8

        procs[victim].popen.kill()
        killed = time.monotonic()
        completed: set[int] = set()
        while len(completed) < 8 and time.monotonic() < killed + 30:
            event = events.recv(timeout=0.5)
            if event is None:
                continue
            if event.type == "failed" and getattr(event, "error", "") == "executor host lost":
                lost.append(time.monotonic() - killed)
            elif event.type == "completed":
                completed.add(event.task_id)  # type: ignore[attr-defined]
        assert len(completed) == 8
        history = client.history(limit=100)
    assert len(lost) == on_w1
    assert max(lost) < 5.0  # 3 silent heartbeat intervals, checked every interval
    retried = [h for h in history if h.retry_count == 1]
    assert len(retried) == on_w1
    assert {h.last_error for h in retried} == {"executor host lost"}
    assert {h.status for h in history} == {HistoryStatus.COMPLETED}


def flowing(i: int) -> TaskSubmission:
    """One of the 1,000: every fourth in a group (admitted by the GroupLimiter), every fourth
    with expected IO (weighed against the ResourceMonitor's readings), the rest plain."""
    task = sleepy(f"t{i}", 0.01)
    if i % 4 == 0:
        return task.group(f"g{i % 3}")
    if i % 4 == 1:
        return task.expected_io(read_bytes=64_000, write_bytes=64_000)
    return task


@pytest.mark.parametrize("victim", ["dispatcher", "store", "events", "limiter", "monitor"])
def test_an_actor_killed_and_restarted_while_1000_tasks_flow_loses_nothing(
    deployment: Deployment, victim: str
) -> None:
    total = 1_000
    deployment.start_actors(workers=("w1", "w2"))
    outcomes: list[SubmitOutcome] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            with Client(deployment.topology, timeout=5.0, retries=6) as producer:
                for start in range(0, total, 50):
                    batch = [flowing(i) for i in range(start, start + 50)]
                    outcomes.extend(producer.submit_batch(batch))
        except BaseException as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce)
    with Client(deployment.topology, timeout=5.0) as client, client.subscribe() as events:
        completed = 0

        def count_completed() -> bool:
            nonlocal completed
            try:
                completed = sum(
                    1
                    for h in client.history(limit=2 * total)
                    if h.status == HistoryStatus.COMPLETED
                )
            except Exception:
                return False  # the Store is down right now: ask again
            return True

        producer.start()
        wait_until(lambda: count_completed() and completed >= 200, events, 60, "200 completed")
        proc = next(p for p in deployment.procs if p.role == victim)
        proc.popen.kill()
        proc.popen.wait(10)
        restarted = deployment.start(victim, victim)
        deployment.wait_ready(restarted, deployment.control(victim))
        producer.join(60)
        assert not errors, errors
        wait_until(
            lambda: count_completed() and completed >= total, events, 90, f"{total} completed"
        )
        history = client.history(limit=2 * total)
        snapshot = client.snapshot()

    assert [o.kind.value for o in outcomes] == ["inserted"] * total
    completed_ids = [h.task_id for h in history if h.status == HistoryStatus.COMPLETED]
    assert len(completed_ids) == total
    assert len(set(completed_ids)) == total  # each exactly once
    assert sorted(completed_ids) == sorted(o.id for o in outcomes)
    assert snapshot.pending_count == 0 and snapshot.running == []
    connection = apsw.Connection(str(deployment.database))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()


# -- a hostile peer ---------------------------------------------------------------------------

MiB = 1 << 20
GROWTH_LIMIT = 64 * MiB
"""More than an actor's memory moves by while it serves a few requests; far less than what
libzmq allocates for a subscription of many MiB when it keeps one."""
WAIT_S = 20.0


def started(deployment: Deployment, actor: str) -> Proc:
    proc = deployment.start(actor, actor)
    deployment.wait_ready(proc, deployment.control(actor))
    return proc


def rss(proc: Proc) -> int:
    return int(psutil.Process(proc.popen.pid).memory_info().rss)


def raw_subscriber(
    context: zmq.Context[Any], endpoint: str, *, reconnect: bool = True
) -> zmq.Socket[Any]:
    """An XSUB: it sends whatever subscription messages it is given, as a hostile peer would;
    without ``reconnect``, once disconnected it stays so."""
    sock: zmq.Socket[Any] = context.socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    if not reconnect:
        sock.setsockopt(zmq.RECONNECT_IVL, -1)
    sock.connect(endpoint)
    return sock


@pytest.mark.parametrize(("actor", "endpoint"), [("events", "events"), ("monitor", "readings")])
def test_a_huge_subscription_is_refused_at_the_socket_and_others_still_subscribe(
    deployment: Deployment, actor: str, endpoint: str
) -> None:
    proc = started(deployment, actor)
    before = rss(proc)
    context = deployment.context
    address: str = getattr(deployment.topology, endpoint)
    sock = raw_subscriber(context, address)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        # Not a subscription (\x02): an XSUB would keep a subscription this long itself, in a
        # structure it tears down recursively, and crash this process. The publishing socket
        # refuses the message by its size before it reads what it is, as it would a
        # subscription.
        sock.send(b"\x02" + b"t" * (16 * MiB))
        assert monitor.poll(int(WAIT_S * 1000)), f"the {actor} kept the connection"
        if actor == "events":
            with Subscription(context, address, [b""], timeout=WAIT_S) as sub:
                assert sub.welcome_seq == 0
        control = RequestClient(context, deployment.control(actor), timeout=WAIT_S)
        try:
            assert control.call(Ping(), Pong).name == actor
        finally:
            control.close()
        after = rss(proc)
    finally:
        sock.disable_monitor()
        monitor.close()
        sock.close()
    assert after - before < GROWTH_LIMIT, f"the {actor} grew by {(after - before) / MiB:.0f} MiB"


# -- a full disk ------------------------------------------------------------------------------


class Disk:
    """Where the Store's database lives, and a way to fill it and to make room on it."""

    def __init__(self, deployment: Deployment, directory: Path) -> None:
        self.directory = directory
        deployment.database = directory / "taskmill.db"
        deployment.env["TASKMILL_DATABASE"] = str(deployment.database)

    def fill(self) -> None:
        raise NotImplementedError

    def make_room(self, nbytes: int) -> None:
        """Free ``nbytes`` (or everything the filling took, with 0)."""
        raise NotImplementedError


class Tmpfs(Disk):
    """A 16 MiB tmpfs, filled by a file that takes every free byte (mounting needs root)."""

    def fill(self) -> None:
        self.filler = self.directory / "filler"
        with self.filler.open("ab") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass
            with contextlib.suppress(OSError):
                out.close()

    def make_room(self, nbytes: int) -> None:
        if nbytes:
            with self.filler.open("r+b") as out:
                out.truncate(self.filler.stat().st_size - nbytes)
        else:
            self.filler.unlink()


class FillableVfs(Disk):
    """A directory on any file system whose writes fail with ``SQLITE_FULL`` while a flag file
    is there, for the processes that load ``tests.full_disk_app`` (every one here does). A full
    disk with some room is a disk without a full one."""

    def __init__(self, deployment: Deployment, directory: Path) -> None:
        super().__init__(deployment, directory)
        deployment.env["TASKMILL_APP"] = "tests.full_disk_app:app"

    def fill(self) -> None:
        (self.directory / FULL_FLAG).touch()

    def make_room(self, nbytes: int) -> None:
        (self.directory / FULL_FLAG).unlink()


@pytest.fixture(params=["tmpfs", "vfs"])
def disk(request: pytest.FixtureRequest, deployment: Deployment, tmp_path: Path) -> Iterator[Disk]:
    """A disk the test fills: a real tmpfs where this process may mount one (only root may),
    else skipped; and everywhere a real SQLite whose writes fail as on a full disk
    (``tests.full_disk_app``)."""
    directory = tmp_path / "disk"
    directory.mkdir()
    if request.param == "vfs":
        yield FillableVfs(deployment, directory)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(directory)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield Tmpfs(deployment, directory)
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_a_full_disk_fails_commits_until_one_fits_and_the_store_still_stops_cleanly(
    deployment: Deployment, disk: Disk
) -> None:
    store = started(deployment, "store")
    with Client(deployment.topology, timeout=5.0, retries=0) as client:
        client.submit(TaskSubmission("noop", key="before", payload=b"p" * 2000))
        disk.fill()
        with pytest.raises(DatabaseError, match="full"):
            client.submit(TaskSubmission("noop", key="full", payload=b"p" * 2000))
        # A little room is enough for one more commit: the Store needs no restart.
        disk.make_room(256 * 1024)
        assert client.submit(TaskSubmission("noop", key="room", payload=b"p" * 2000)).id
        disk.fill()
        with pytest.raises(DatabaseError, match="full"):
            client.submit(TaskSubmission("noop", key="full again", payload=b"p" * 2000))
    # Stopped while the disk is full: no checkpoint fits, and it still ends cleanly.
    assert deployment.stop(store) == 0, store.log_tail()
    log = store.log_tail()
    assert "Traceback" not in log and "store: stopped" in log
    disk.make_room(0)
    store = started(deployment, "store")  # what the WAL held is all there
    with Client(deployment.topology) as client:
        assert client.lookup("noop", "room").location == "active"
        assert client.lookup("noop", "before").location == "active"
        assert client.lookup("noop", "full").location == "not_found"


def test_while_the_disk_is_full_the_dispatcher_retries_results_with_backoff_and_one_warning(
    deployment: Deployment, disk: Disk
) -> None:
    for actor in ("store", "events", "limiter", "monitor"):
        started(deployment, actor)
    dispatcher = deployment.start("dispatcher", "dispatcher", pipe=True)
    deployment.wait_ready(dispatcher, deployment.control("dispatcher"))
    worker = deployment.start("worker", "worker", "--host-id", "w1")
    deployment.wait_ready(worker, deployment.control("w1"))
    assert dispatcher.stderr is not None
    stats = RequestClient(deployment.context, deployment.control("dispatcher"), timeout=10)
    with Client(deployment.topology) as client, client.subscribe() as events:
        task = client.submit(TaskSubmission("sleepy", key="s").payload_json({"seconds": 0.5}))
        wait_for_event(events, "dispatched", task.id)
        disk.fill()
        dispatcher.stderr.until(lambda line: "store finish failed" in line, timeout=20)
        # Retried (with backoff) a few times while the disk stays full: still one warning.
        while stats.call(Stats(), StatsReply).counters["store_errors"] < 4:
            events.recv(timeout=0.25)  # paces the question; nothing is expected
        disk.make_room(0)
        wait_for_event(events, "completed", task.id)
    stats.close()
    assert deployment.stop(dispatcher) == 0
    deadline = time.monotonic() + 10
    while dispatcher.stderr.next(deadline) is not None:  # every line, to the end
        pass
    warnings = [line for line in dispatcher.stderr.lines if " WARNING " in line]
    assert len(warnings) == 1 and "store finish failed" in warnings[0], warnings
    assert any("store requests succeed again after" in line for line in dispatcher.stderr.lines)


def wait_for_event(events: EventSubscriber, kind: str, task_id: int | None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        event = events.recv(timeout=max(0.0, deadline - time.monotonic()))
        if event is not None and event.type == kind and getattr(event, "task_id", None) == task_id:
            return
    raise AssertionError(f"no {kind} event for task {task_id}")
