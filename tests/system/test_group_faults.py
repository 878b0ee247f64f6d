"""Grouped work survives a restart of any actor that takes part in claiming it.

A Procfile deployment (real processes on ipc sockets) drains 300 tasks of one group limited to 4
running at once. A quarter of the way through, the Store, the Dispatcher or the GroupLimiter is
killed with SIGKILL and started again. Whatever each of them knew about the group's running tasks
died with it or went on without it, yet every task must complete, exactly once, and the group must
never run more than its limit — a slot counted for a task that has finished would hold the group
back for good, one forgotten would let it overrun.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bus.client import RequestClient
from bus.errors import TaskmillError
from bus.kinds import Stats, StatsReply
from taskmill.records import HistoryStatus, TaskHistoryRecord
from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import Deployment, deployed
from tests.system_app import PINNED_GROUP, PINNED_LIMIT

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

TOTAL = 300
RUN = {"seconds": 0.05, "steps": 1}
"""Long enough that the tasks running when the victim is killed finish while it is down."""
STALL_S = 10.0
"""How long the drain may go without a single completion before the test calls it stuck."""


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path, "tests.system_app:grouped_app") as deployment:
        yield deployment


def completed_rows(client: Client) -> list[TaskHistoryRecord] | None:
    """Completed history rows; None while the Store does not answer (it may be restarting)."""
    try:
        history = client.history(limit=2 * TOTAL)
    except TaskmillError:
        return None
    return [h for h in history if h.status == HistoryStatus.COMPLETED]


def counters(deployment: Deployment, actor: str) -> dict[str, object]:
    stats = RequestClient(deployment.context, deployment.control(actor), timeout=2.0)
    try:
        return dict(stats.call(Stats(), StatsReply).counters)
    except TaskmillError as exc:
        return {"error": str(exc)}
    finally:
        stats.close()


def wait_completed(
    deployment: Deployment, client: Client, events: EventSubscriber, n: int
) -> list[TaskHistoryRecord]:
    """Until ``n`` tasks have completed: the events say when to look, the history says how
    many did (an event may be lost while the Store restarts). Fails once ``STALL_S`` pass
    without one more completion, with what the Store, Dispatcher and GroupLimiter say."""
    seen: set[int] = set()
    done = 0
    last = time.monotonic()
    while True:
        event = events.recv(timeout=0.5)
        if event is not None and event.type == "completed":
            seen.add(event.task_id)  # type: ignore[attr-defined]
            last = time.monotonic()
        if len(seen) >= n or event is None:
            rows = completed_rows(client)
            if rows is not None and len(rows) >= n:
                return rows
            if rows is not None and len(rows) > done:
                done, last = len(rows), time.monotonic()
        if time.monotonic() - last > STALL_S:
            state = {a: counters(deployment, a) for a in ("dispatcher", "limiter")}
            raise AssertionError(f"stuck at {done} of {n} completed for {STALL_S}s: {state}")


def next_event(events: EventSubscriber, kind: str, timeout: float = 10.0) -> None:
    """Until an event of ``kind`` that happened after this call (those already queued are
    skipped)."""
    while events.recv(timeout=0) is not None:
        pass
    deadline = time.monotonic() + timeout
    while (event := events.recv(timeout=max(0.0, deadline - time.monotonic()))) is not None:
        if event.type == kind:
            return
    raise TimeoutError(f"no {kind} event within {timeout}s")


def most_at_once(rows: list[TaskHistoryRecord]) -> int:
    """The most rows running at the same instant, from their start and completion times (a
    completion and a start in the same millisecond are taken as one slot handed on)."""
    edges: list[tuple[datetime, int]] = []
    for row in rows:
        assert row.started_at is not None
        edges += [(row.started_at, 1), (row.completed_at, -1)]
    running = peak = 0
    for _, step in sorted(edges):  # at equal times -1 sorts first
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize(
    "victim",
    ["store", "dispatcher", "limiter"],
)
def test_a_group_drains_when_an_actor_is_killed_and_restarted_mid_drain(
    deployment: Deployment, victim: str
) -> None:
    deployment.start_actors(workers=("w1",))
    tasks = [
        TaskSubmission("sleepy", key=f"t{i}", group=PINNED_GROUP).payload_json(RUN)
        for i in range(TOTAL)
    ]
    with Client(deployment.topology, timeout=2.0) as client, client.subscribe() as events:
        outcomes = []
        for start in range(0, TOTAL, 100):
            outcomes += client.submit_batch(tasks[start : start + 100])
        assert [o.kind.value for o in outcomes] == ["inserted"] * TOTAL
        before = wait_completed(deployment, client, events, TOTAL // 4)
        assert len(before) < TOTAL  # mid-drain: most of the group still waits
        # Right after a start the group is full and each actor has had its say on it: the
        # moment a restart must not make anyone forget.
        next_event(events, "dispatched")

        proc = next(p for p in deployment.procs if p.role == victim)
        proc.popen.kill()
        proc.popen.wait(10)
        restarted = deployment.start(victim, victim)
        deployment.wait_ready(restarted, deployment.control(victim))

        rows = wait_completed(deployment, client, events, TOTAL)
        snapshot = client.snapshot()

    completed_ids = sorted(h.task_id for h in rows)
    assert completed_ids == sorted(o.id for o in outcomes if o.id is not None)  # each once
    assert snapshot.pending_count == 0 and snapshot.running == []
    peak = most_at_once(rows)
    spans = sorted((h.started_at, h.completed_at, h.task_id, h.duration_ms) for h in rows)
    assert peak <= PINNED_LIMIT, "\n".join(f"{s} {c} {t} {d}" for s, c, t, d in spans)
