"""Store-level shapes: peek and claim latency with a queue of a given depth, and the Store's floor.

``peek_claim``: a real ``StoreActor`` in its thread over inproc (``bench_store.store``), the queue
inserted straight through ``StoreDB`` (``bench_store.fill``; untimed). Each round times one
``peek(1)`` (the reference crate's ``peek_next``), then one ``peek(4)`` + ``claim`` (what one
dispatch at concurrency 4 costs); the claimed rows are released again, untimed, so the depth stays.

``floor``: the database work of the embedded drain and of a batch, with nothing else — no bus, no
thread, no other actor: ``StoreDB`` called directly, in the transactions the Store actor makes of
those requests (``StoreDB.batch``). What no amount of work on messaging or dispatching can go
below, at the Store's default durability.

``batch_growth``: ``floor``'s batch of 1,000 as the queue grows: batches into an empty database
until ``100,000`` tasks are pending, the rate measured at a few depths. Each key is a random
SHA-256, so each batch writes a page of the key index per row once that index outgrows the
batch: what a batch costs depends on the queue it lands in.

``scheduled_100k``: ``floor``'s drain with 100,000 tasks scheduled over the next hour, against
the same drain with none, in fresh databases, alternated three times: what tasks due later cost
the claim and the drain of the tasks that are due (nothing, they sit in an index of their own).

``saturated_group``: a peek that passes over a group at its limit. ``StoreDB`` directly: a group
of ``N`` pending tasks more urgent than 10 ungrouped ones; ``peek(4)`` with that group
full (its limit 0, as while it runs at its limit) must find the ungrouped ones
behind it, at a few ``N``; a plain ``peek(4)`` beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from actors.store.db import StoreDB
from bench.bench_store import fill, store, submission
from bench.common import Metrics, percentile
from bus.client import RequestClient
from bus.clock import SystemClock, now_ms
from bus.kinds import Claim, ClaimSpec, FinishReply, Peek, Release, TasksReply
from bus.structs import TaskResult, TaskRow

T = TypeVar("T")


def peek_claim(work: Path, pending: int, rounds: int, per_round: int = 4) -> Metrics:
    db_file = work / "queue.db"
    filled_s = fill(db_file, pending)
    peeks: list[float] = []
    dispatches: list[float] = []
    with store(db_file) as (context, endpoint):
        client = RequestClient(context, endpoint, timeout=30)
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                rows = client.call(Peek(ClaimSpec(1)), TasksReply).tasks
                peeks.append(time.perf_counter() - start)
                assert len(rows) == 1
                start = time.perf_counter()
                rows = client.call(Peek(ClaimSpec(per_round)), TasksReply).tasks
                claimed = client.call(Claim([r.id for r in rows]), TasksReply).tasks
                dispatches.append(time.perf_counter() - start)
                assert len(claimed) == per_round
                client.call(Release([r.id for r in claimed], "bench"), FinishReply)
        finally:
            client.close()
    return {
        "peek1_p50_us": percentile(peeks, 0.5) * 1e6,
        "peek1_p99_us": percentile(peeks, 0.99) * 1e6,
        "peek4_claim_p50_us": percentile(dispatches, 0.5) * 1e6,
        "peek4_claim_p99_us": percentile(dispatches, 0.99) * 1e6,
        "fill_s": filled_s,
    }


def floor(
    work: Path,
    tasks: int,
    per_claim: int = 4,
    batch: int = 1_000,
    backlog: int = 5_000,
    scheduled: int = 0,
    name: str = "floor.db",
) -> Metrics:
    """The drain's database work per task, as the embedded 20k drain asks for it, with
    ``backlog`` tasks already waiting (the drain's queue grows: its producer submits faster than
    it completes). Per task one awaited submit, alone in its transaction; per ``per_claim``
    tasks the ``finish`` of the last claimed ones and the next ``claim_next``, together in one
    transaction, without savepoints as the Store first runs a batch (the Dispatcher sends both in
    the same turn, so the Store reads them in one batch). Then ``submit`` of ``batch`` tasks in
    one transaction, the median of 5. ``scheduled``: that many tasks more, due over the next hour
    (after the first five minutes: none becomes due while the drain runs), inserted untimed."""
    clock = SystemClock()
    db = StoreDB(str(work / name), clock=clock)

    def alone(fn: Callable[[], T]) -> T:
        with db.batch(isolated=False) as tx:
            return tx.run(fn)

    spent = {"submit": 0.0, "finish_claim": 0.0}
    try:
        queued = 10**9  # keys apart from the timed ones
        for first in range(0, backlog, batch):
            alone(partial(db.submit, [submission(queued + n) for n in range(first, first + batch)]))
        _schedule(db, scheduled, now_ms(clock))
        rows: list[TaskRow] = []
        start = time.perf_counter()
        cpu_start = time.process_time()
        for first in range(0, tasks, per_claim):
            t0 = time.perf_counter()
            for n in range(first, first + per_claim):
                alone(partial(db.submit, [submission(n)]))
            t1 = time.perf_counter()
            done = now_ms(clock)
            with db.batch(isolated=False) as tx:  # as the Store runs a batch first
                if rows:
                    tx.run(
                        partial(
                            db.finish, [TaskResult(r.id, "ok", finished_at_ms=done) for r in rows]
                        )
                    )
                rows, _ = tx.run(partial(db.claim_next, per_claim, 255, -1, done))
            spent["submit"] += t1 - t0
            spent["finish_claim"] += time.perf_counter() - t1
        drain_s = time.perf_counter() - start
        drain_cpu_s = time.process_time() - cpu_start
        batches = []
        for b in range(5):
            first = 2 * 10**9 + b * batch
            subs = [submission(n) for n in range(first, first + batch)]
            t0 = time.perf_counter()
            alone(partial(db.submit, subs))
            batches.append(time.perf_counter() - t0)
    finally:
        db.close()
    out: Metrics = {"drain_sql_per_s": tasks / drain_s}
    out["drain_cpu_us_per_task"] = drain_cpu_s / tasks * 1e6
    out.update({f"{step}_us_per_task": s / tasks * 1e6 for step, s in spent.items()})
    out["submit_sql_per_s"] = tasks / spent["submit"]
    out["batch_sql_per_s"] = batch / percentile(batches, 0.5)
    return out


def _schedule(db: StoreDB, count: int, now: int, chunk: int = 10_000) -> None:
    """``count`` tasks due between 5 and 65 minutes from ``now``, evenly spread."""
    later = 3 * 10**9  # keys apart from every other
    for first in range(0, count, chunk):
        subs = [
            replace(submission(later + n), due_at_ms=now + 300_000 + n * 3_600_000 // count)
            for n in range(first, min(count, first + chunk))
        ]
        db.submit(subs)


def _vm_steps(db: StoreDB, action: Callable[[], T]) -> tuple[int, T]:
    """SQLite virtual-machine steps ``action`` costs (a measure no other process disturbs)."""
    steps = 0

    def count() -> bool:
        nonlocal steps
        steps += 1
        return False

    conn = db._core.conn  # the bench's own database: only this probe reaches in
    conn.set_progress_handler(count, 1)
    try:
        result = action()
    finally:
        conn.set_progress_handler(None)
    return steps, result


def drain_steps(work: Path, scheduled: int, cycles: int = 50, per_claim: int = 4) -> float:
    """VM steps per task of ``floor``'s drain (a submit each, a finish and a claim per
    ``per_claim``) with ``scheduled`` tasks due later, over ``cycles`` claims."""
    clock = SystemClock()
    db = StoreDB(str(work / f"steps-{scheduled}.db"), clock=clock)
    try:
        db.submit([submission(10**9 + n) for n in range(5_000)])
        _schedule(db, scheduled, now_ms(clock))
        total, rows = 0, list[TaskRow]()
        for c in range(cycles):
            for n in range(c * per_claim, (c + 1) * per_claim):
                total += _vm_steps(db, partial(db.submit, [submission(n)]))[0]
            done = [TaskResult(r.id, "ok") for r in rows]

            def finish_claim(done: list[TaskResult] = done) -> tuple[list[TaskRow], bool]:
                if done:
                    db.finish(done)
                return db.claim_next(per_claim, 255, -1, now_ms(clock))

            spent, (rows, _) = _vm_steps(db, finish_claim)
            total += spent
    finally:
        db.close()
    return total / (cycles * per_claim)


def scheduled_100k(work: Path, tasks: int, scheduled: int = 100_000, rounds: int = 3) -> Metrics:
    """``floor`` with ``scheduled`` tasks due later and with none, alternated ``rounds`` times;
    the median of each and their ratio. And the same drain's SQLite steps per task, which no
    other process on the machine can disturb."""
    none: list[Metrics] = []
    later: list[Metrics] = []
    for r in range(rounds):
        none.append(floor(work, tasks, name=f"none-{r}.db"))
        later.append(floor(work, tasks, scheduled=scheduled, name=f"later-{r}.db"))
    out: Metrics = {}
    for metric in ("drain_sql_per_s", "drain_cpu_us_per_task", "finish_claim_us_per_task"):
        a = percentile([m[metric] for m in none], 0.5)
        b = percentile([m[metric] for m in later], 0.5)
        out[f"{metric}_none"] = a
        out[f"{metric}_100k_later"] = b
    out["drain_ratio_100k_later_to_none"] = (
        out["drain_sql_per_s_100k_later"] / out["drain_sql_per_s_none"]
    )
    out["cpu_ratio_100k_later_to_none"] = (
        out["drain_cpu_us_per_task_100k_later"] / out["drain_cpu_us_per_task_none"]
    )
    out["vm_steps_per_task_none"] = drain_steps(work, 0)
    out["vm_steps_per_task_100k_later"] = drain_steps(work, scheduled)
    out["vm_steps_ratio_100k_later_to_none"] = (
        out["vm_steps_per_task_100k_later"] / out["vm_steps_per_task_none"]
    )
    return out


GROWTH_MARKS = (0, 50_000, 100_000)


def batch_growth(work: Path, marks: tuple[int, ...] = GROWTH_MARKS, batch: int = 1_000) -> Metrics:
    """The batch SQL rate (rows/s, the median of 5 batches) at each depth of ``marks``: batches
    of ``batch`` distinct tasks go into an empty database, nothing claimed, until past the last
    mark."""
    db = StoreDB(str(work / "growth.db"), clock=SystemClock())
    times: list[float] = []
    try:
        for b in range(marks[-1] // batch + 5):
            subs = [submission(n) for n in range(b * batch, (b + 1) * batch)]
            t0 = time.perf_counter()
            with db.batch(isolated=False) as tx:
                tx.run(partial(db.submit, subs))
            times.append(time.perf_counter() - t0)
    finally:
        db.close()
    out: Metrics = {}
    for mark in marks:
        first = mark // batch
        out[f"batch_sql_per_s_at_{mark // 1_000}k"] = batch / percentile(
            times[first : first + 5], 0.5
        )
    return out


SATURATED_MARKS = (1_000, 10_000, 100_000)


def saturated_group(work: Path, marks: tuple[int, ...] = SATURATED_MARKS) -> Metrics:
    """The median of 50 ``peek(4)`` calls (µs) that skip a group of each size in ``marks``,
    every task of the group more urgent (priority 10) than the 10 ungrouped ones (priority 200)
    the peek must return; and of a plain ``peek(4)`` at the last size."""
    db = StoreDB(str(work / "groups.db"), clock=SystemClock())
    out: Metrics = {}
    try:
        db.submit([replace(submission(-n - 1, 200), group_key=None) for n in range(10)])
        grouped = 0
        for mark in marks:
            while grouped < mark:
                size = min(10_000, mark - grouped)
                subs = [submission(n, 10) for n in range(grouped, grouped + size)]
                db.submit([replace(sub, group_key="full") for sub in subs])
                grouped += size
            db.set_groups("configured", 0, {"full": 0})  # the group is full: passed over
            rows = db.peek(4)
            assert [r.priority for r in rows] == [200] * 4
            out[f"peek4_skip_us_at_{mark // 1_000}k"] = _median_us(partial(db.peek, 4))
        db.set_groups("configured", 0, {}, replace=True)
        out[f"peek4_us_at_{marks[-1] // 1_000}k"] = _median_us(partial(db.peek, 4))
    finally:
        db.close()
    return out


def _median_us(call: Callable[[], object], times: int = 50) -> float:
    """The median time of ``times`` calls, µs."""
    spent = []
    for _ in range(times):
        t0 = time.perf_counter()
        call()
        spent.append(time.perf_counter() - t0)
    return percentile(spent, 0.5) * 1e6
