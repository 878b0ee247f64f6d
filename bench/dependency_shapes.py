"""Task dependencies: a graph of 10,000 tasks drained in order, and what one unblock costs.

``dependency_graph``: against a deployment, one ``submit_batch`` of a chain of ``hubs`` tasks,
each hub the dependency of the next hub and of ``fanout - 1`` leaves (fan-out ``fanout``: 100 x
100 = 10,000 tasks, each but the first naming its dependency as a member of the batch). From
the submit to the last completion; then the history is checked: no task started before its
dependency completed (``order_violations``, which must be 0). Before it, for comparison, the
same number of tasks without dependencies in one batch (``flat_tasks_per_s``).

``unblock``: ``StoreDB`` called directly. A dependency with ``DEPENDENTS`` dependents completes
(``finish``), with ``1,000`` and with ``100,000`` unrelated pending tasks in the database: the
median CPU time of this process (not the wall clock: others' load on the machine stretches that)
and the SQLite virtual-machine steps (a count of work that nothing else changes) per dependent
unblocked. The same at both sizes is what an edge table indexed
by the dependency gives: the cost follows the dependents, never the rest of the tables.
"""

from __future__ import annotations

import time
from pathlib import Path

from actors.store.db import StoreDB
from bench.bench_store import submission
from bench.common import EventPump, Metrics, percentile
from bench.shapes import wait_completed
from bench.targets import Target
from bus.clock import SystemClock
from bus.kinds import Submission, TaskResult
from taskmill import TaskSubmission


def graph(hubs: int, fanout: int) -> tuple[list[TaskSubmission], dict[str, str]]:
    """The submissions (hub first, then its leaves, hub by hub) and each label's dependency."""
    subs: list[TaskSubmission] = []
    needs: dict[str, str] = {}
    previous: TaskSubmission | None = None
    for h in range(hubs):
        hub = TaskSubmission("noop", key=f"hub-{h}")
        if previous is not None:
            hub.depends_on(previous)
            needs[hub.display_label] = previous.display_label
        subs.append(hub)
        for leaf in range(fanout - 1):
            sub = TaskSubmission("noop", key=f"leaf-{h}-{leaf}").depends_on(hub)
            needs[sub.display_label] = hub.display_label
            subs.append(sub)
        previous = hub
    return subs, needs


async def dependency_graph(target: Target, hubs: int, fanout: int) -> Metrics:
    await target.start()
    pump = EventPump(await target.subscribe())
    try:
        subs, needs = graph(hubs, fanout)
        n = len(subs)
        flat = [TaskSubmission("noop", key=f"flat-{i}") for i in range(n)]
        start = time.perf_counter()
        await target.submit_batch(flat)
        await wait_completed(target, pump, n)
        flat_s = time.perf_counter() - start
        start = time.perf_counter()
        outcomes = await target.submit_batch(subs)
        submitted = time.perf_counter()
        assert all(o.is_inserted() for o in outcomes)
        await wait_completed(target, pump, 2 * n)
        end = time.perf_counter()
        history = await target.api.store().history(limit=n)  # type: ignore[attr-defined]
        runs = {h.label: h for h in history}
        assert len(runs) == n, f"{len(runs)} of {n} tasks in history"
        violations = sum(
            1 for label, need in needs.items() if runs[label].started_at < runs[need].completed_at
        )
        return {
            "graph_tasks_per_s": n / (end - start),
            "graph_submit_per_s": n / (submitted - start),
            "graph_s": end - start,
            "flat_tasks_per_s": n / flat_s,
            "order_violations": float(violations),
            "unblocked_events": float(pump.counts["unblocked"]),
            "events_missed": float(pump.missed),
        }
    finally:
        await pump.close()


DEPENDENTS = 100
UNRELATED = (1_000, 100_000)


def unblock(work: Path, rounds: int = 20) -> Metrics:
    out: Metrics = {}
    for unrelated in UNRELATED:
        db = StoreDB(str(work / f"unblock-{unrelated}.db"), clock=SystemClock())
        try:
            for first in range(0, unrelated, 20_000):
                db.submit([submission(n) for n in range(first, min(unrelated, first + 20_000))])
            times, steps = [], []
            for r in range(rounds):
                seconds, counted = _one_unblock(db, unrelated + r * (DEPENDENTS + 1))
                times.append(seconds / DEPENDENTS)
                steps.append(counted / DEPENDENTS)
            label = f"{unrelated // 1_000}k"
            out[f"unblock_cpu_us_with_{label}"] = percentile(times, 0.5) * 1e6
            out[f"unblock_vm_steps_with_{label}"] = percentile(steps, 0.5)
        finally:
            db.close()
    return out


def _one_unblock(db: StoreDB, base: int) -> tuple[float, int]:
    """A dependency with ``DEPENDENTS`` dependents completes: CPU seconds and VM steps."""
    (dep,) = db.submit([submission(base, 0)])
    assert dep.id is not None
    dependents: list[Submission] = [
        Submission("bench", submission(base + 1 + i).key, "d", 128, depends_on=[dep.id])
        for i in range(DEPENDENTS)
    ]
    db.submit(dependents)
    db.claim([dep.id])
    steps = 0

    def count() -> bool:
        nonlocal steps
        steps += 1
        return False

    conn = db._core.conn  # the benchmark's probe of the Store's own connection
    conn.set_progress_handler(count, 1)
    try:
        start = time.process_time()
        transitions = db.finish([TaskResult(dep.id, "ok")])
        seconds = time.process_time() - start
    finally:
        conn.set_progress_handler(None)
    assert sum(t.result == "unblocked" for t in transitions) == DEPENDENTS
    for t in transitions[1:]:  # out of the way: the next round's queue is the same
        db.cancel(t.id)
    return seconds, steps
