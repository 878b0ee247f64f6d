"""What flow control costs the Store, counted rather than timed.

    python bench/flow_pages.py [--tasks N] [--groups G] [--timed [RUNS]]

``StoreDB`` called directly on a file, the backlog of ``bench.flow_control`` (``N`` tasks over
``G`` groups) queued, then drained as the embedded Dispatcher drains it: each transaction (a
batch without savepoints, as the Store actor runs it) finishes the 8 tasks it last claimed and
claims 8 more. Once with no policy, once with the weights and rate limits of
``bench.flow_control``. Counted for each: pages written to the WAL
per task (SQLite's WAL hook reports them at each commit), SQLite virtual-machine steps per task,
and statements per claim — the same figures on every run and machine, which timings are not.
A rate-limited group's tasks wait for their tokens in real time, so the policy's drain lasts
as long as its rate-limited groups need.

``--timed``: instead of counting, time the same drains (no probes attached; the Store's own
checkpoint thread at work), plain and policy in turn ``RUNS`` times (3), each until the first
moment nothing can start before a token is due: tasks per second and microseconds per claim of
8, and the median of each pair's ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import apsw

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.store.checkpoint import CHECKPOINT_PAGES
from actors.store.db import StoreDB
from bench import flow_control as shape
from bus.clock import SystemClock
from bus.kinds import ClaimSpec, Submission, TaskResult, TaskRow
from taskmill.task import wire_batch

SLOTS = 8


def backlog(tasks: int, groups: int, policy: bool) -> list[Submission]:
    plain_rate = 3_000.0  # what the embedded plain drain runs at: sizes the rate-limited groups
    return wire_batch(shape.backlog(tasks, groups, policy, plain_rate))


def configure(db: StoreDB, groups: int) -> None:
    db.set_flow(
        "configured",
        rates={f"group:g{g}": (shape.RATE, 1_000, 1) for g in range(groups) if shape.limited(g)},
        weights={f"g{g}": float(shape.weight(g)) for g in range(groups)},
    )


def queued(path: Path, tasks: int, groups: int, policy: bool) -> StoreDB:
    """A Store on a new file at ``path``, its backlog queued (and with ``policy``, the policy)."""
    db = StoreDB(str(path), clock=SystemClock())
    try:
        if policy:
            configure(db, groups)
        subs = backlog(tasks, groups, policy)
        for first in range(0, len(subs), 1_000):
            db.submit(subs[first : first + 1_000])
    except BaseException:
        db.close()
        raise
    return db


def turn(db: StoreDB, results: list[TaskResult]) -> list[TaskRow]:
    """One transaction as the Store actor runs it: the results and the next claim as one request
    of a batch without savepoints."""
    with db.batch(isolated=False) as tx:
        _, rows, _ = tx.run(lambda: db.finish_and_claim(results, 3, ClaimSpec(SLOTS)))
    return rows


def drain(path: Path, tasks: int, groups: int, policy: bool) -> tuple[int, float, float, float]:
    """(tasks drained, WAL pages per task, VM steps per task, statements per claim)."""
    db = queued(path, tasks, groups, policy)
    conn = db._core.conn  # the bench's own database: only these probes reach in
    pages = 0
    last = 0

    def written(c: apsw.Connection, name: str, in_wal: int) -> int:
        nonlocal pages, last
        pages += in_wal - last if in_wal >= last else in_wal  # the WAL restarted
        last = in_wal
        if in_wal >= CHECKPOINT_PAGES:
            c.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        return apsw.SQLITE_OK

    steps = statements = 0

    def step() -> bool:
        nonlocal steps
        steps += 1
        return False

    def statement(sql: str, nanoseconds: int) -> None:
        nonlocal statements
        statements += 1

    conn.set_wal_hook(written)
    conn.set_progress_handler(step, 1)
    conn.set_profile(statement)
    claims, done = 0, 0
    rows: list[TaskRow] = []
    try:
        while True:
            results = [TaskResult(r.id, "ok") for r in rows]
            rows = turn(db, results)
            claims += 1
            done += len(rows)
            if not rows and not results:
                due = db.next_due()
                if due is None:
                    break
                time.sleep(max(0.0, due / 1000 - time.time()))  # a rate limit's next token
    finally:
        conn.set_profile(None)
        conn.set_progress_handler(None)
        db.close()
    return done, pages / done, steps / done, statements / claims


def timed_drain(path: Path, tasks: int, groups: int, policy: bool) -> tuple[int, float]:
    """(tasks started, seconds) until nothing can start before a rate limit's next token."""
    db = queued(path, tasks, groups, policy)
    try:
        rows: list[TaskRow] = []
        done = 0
        start = time.perf_counter()
        while True:
            results = [TaskResult(r.id, "ok") for r in rows]
            rows = turn(db, results)
            done += len(rows)
            if not rows and not results:
                return done, time.perf_counter() - start
    finally:
        db.close()


def timed(tasks: int, groups: int, runs: int) -> None:
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            rates = {}
            for policy in (False, True):
                name = "policy" if policy else "plain"
                done, seconds = timed_drain(Path(tmp) / f"{name}-{run}.db", tasks, groups, policy)
                rates[name] = done / seconds
                print(
                    f"run {run + 1} {name:6s} {done / seconds:,.0f} tasks/s at the Store, "
                    f"{seconds / done * SLOTS * 1e6:,.0f} µs per claim of {SLOTS}",
                    flush=True,
                )
            ratios.append(rates["policy"] / rates["plain"])
    print(f"policy vs plain, median of the runs' ratios: {statistics.median(ratios) - 1:+.1%}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--timed", type=int, nargs="?", const=3, default=0, metavar="RUNS")
    args = parser.parse_args()
    if args.timed:
        timed(args.tasks, args.groups, args.timed)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for policy in (False, True):
            name = "policy" if policy else "plain"
            done, pages, steps, statements = drain(
                Path(tmp) / f"{name}.db", args.tasks, args.groups, policy
            )
            print(
                f"{name:6s} {done:,} tasks: {pages:.2f} WAL pages per task, {steps:,.0f} SQLite "
                f"steps per task, {statements:.1f} statements per claim",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
