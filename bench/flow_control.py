"""Flow control under load: a drain of a grouped backlog, without and with a policy.

``python -m bench.flow_control [--tasks 20000] [--groups 100] [--runs 3] [--arrival mixed]``

The backlog: ``--tasks`` no-op tasks over ``--groups`` groups, queued before the scheduler
runs (embedded, ``bench.app``'s executors, file database). Each run drains it twice, in turn:

* **plain** — no policy at all;
* **policy** — every group has a weight (1, 2, 3 or 4, by its number) and holds tasks in
  proportion to it, so that every group stays busy until the end; every tenth group also has a
  rate limit (``RATE`` per second, burst 1) and only as many tasks as it can start, at the
  lower of its limit and its weight's share, in the time the others take.

``--arrival``: how the backlog was queued. ``mixed`` (the default): the groups' tasks in a
random order (fixed seed), as work from many tenants arrives; ``by-group``: each group's tasks
together, one group after another, as when tenants load their backlogs in turn. The second is
the harder case for the policy drain: a fair claim then takes rows from 8 places of the table
at once where a plain one takes 8 neighbours.

Figures, from the history rows (``started_at_ms``: the Store's time of the claim):

* tasks per second of each, and tasks per CPU second of the process (every actor is a thread of
  it: the figure to compare on a machine that runs other work), medians over the runs, and
  the median of each run's policy-to-plain ratio (the two drains of a run follow each other,
  so the machine's speed, which drifts within the hour, moves both alike);
* **shares**: for each weighted group without a rate limit, its share of the starts while
  every such group still had work (the window ends when the first of them ran dry), against
  its weight's share; the largest relative error;
* **rate**: the most starts of a rate-limited group in any 1 s window (half-open), against
  ``RATE``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import apsw

from bench.app import builder
from taskmill import (
    CancellationToken,
    RateLimit,
    RetentionPolicy,
    SchedulerBuilder,
    StoreConfig,
    TaskSubmission,
)

RATE = 20
"""Starts per second allowed to each rate-limited group."""
CONCURRENCY = 8


def weight(group: int) -> int:
    return 1 + group % 4


def limited(group: int) -> bool:
    return group % 10 == 0


ARRIVALS = ("mixed", "by-group")


def backlog(
    tasks: int, groups: int, policy: bool, plain_rate: float, arrival: str = "mixed"
) -> list[TaskSubmission]:
    """The submissions: evenly without a policy; by weight with one, where each rate-limited
    group gets what it can start in 80 % of the time the plain drain took (``plain_rate``
    tasks/s). That is its rate limit, or less: its weight's share of the slots, when that is
    lower — a group of weight 1 among 100 has about a 250th of them, whatever its limit."""
    if not policy:
        counts = {g: tasks // groups for g in range(groups)}
    else:
        expected_s = 0.8 * tasks / plain_rate
        weights = sum(weight(g) for g in range(groups))
        capped = {
            g: int(min(RATE, plain_rate * weight(g) / weights) * expected_s)
            for g in range(groups)
            if limited(g)
        }
        rest = tasks - sum(capped.values())
        total = sum(weight(g) for g in range(groups) if not limited(g))
        counts = {g: rest * weight(g) // total for g in range(groups) if not limited(g)}
        counts.update(capped)
    subs = []
    for g, n in counts.items():
        subs += [TaskSubmission("noop", key=f"g{g}-{i}", group=f"g{g}") for i in range(n)]
    if arrival == "mixed":
        random.Random(7).shuffle(subs)
    return subs


def configure(b: SchedulerBuilder, groups: int) -> SchedulerBuilder:
    for g in range(groups):
        b.group_weight(f"g{g}", weight(g))
        if limited(g):
            b.group_rate_limit(f"g{g}", RateLimit.per_second(RATE).with_burst(1))
    return b


async def drain(
    path: Path, subs: list[TaskSubmission], groups: int, policy: bool
) -> tuple[float, float]:
    """(tasks per second, tasks per CPU second of this process: every actor is a thread of
    it, so the second figure does not depend on what else the machine runs)."""
    b = builder(CONCURRENCY).store_path(path)
    b.store_config(StoreConfig(RetentionPolicy.max_count(10 * len(subs))))
    if policy:
        configure(b, groups)
    scheduler = await b.build()
    try:
        for first in range(0, len(subs), 1000):
            await scheduler.submit_batch(subs[first : first + 1000])
        token = CancellationToken()
        events = await scheduler.subscribe()
        start, cpu = time.perf_counter(), time.process_time()
        runner = asyncio.ensure_future(scheduler.run(token))
        done = 0
        while done < len(subs):
            event = await events.recv()
            done += event.type == "completed"
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await events.close()
        token.cancel()
        await runner
    finally:
        await scheduler.close()
    return len(subs) / elapsed, len(subs) / cpu


def starts(path: Path) -> dict[str, list[int]]:
    conn = apsw.Connection(str(path))
    try:
        rows = conn.execute("SELECT group_key, started_at_ms FROM history").fetchall()
    finally:
        conn.close()
    out: dict[str, list[int]] = defaultdict(list)
    for group, at in rows:
        out[group].append(at)
    for times in out.values():
        times.sort()
    return out


def shares(by_group: dict[str, list[int]], groups: int) -> tuple[float, float]:
    """(the largest relative share error, the window in seconds)."""
    weighted = [f"g{g}" for g in range(groups) if not limited(g)]
    end = min(by_group[g][-1] for g in weighted)
    begin = min(by_group[g][0] for g in weighted)
    counts = Counter({g: sum(1 for t in by_group[g] if t <= end) for g in weighted})
    total = sum(counts.values())
    weights = sum(weight(int(g[1:])) for g in weighted)
    worst = max(abs(counts[g] / total / (weight(int(g[1:])) / weights) - 1) for g in weighted)
    return worst, (end - begin) / 1000


def most_in_a_second(times: list[int]) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1000:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def main(tasks: int, groups: int, runs: int, arrival: str) -> None:
    walls: dict[str, list[float]] = {"plain": [], "policy": []}
    cpus: dict[str, list[float]] = {"plain": [], "policy": []}
    errors, windows, peaks = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            plain_db = Path(tmp) / f"plain-{run}.db"
            wall, cpu = await drain(
                plain_db, backlog(tasks, groups, False, 1.0, arrival), groups, False
            )
            walls["plain"].append(wall)
            cpus["plain"].append(cpu)
            policy_db = Path(tmp) / f"policy-{run}.db"
            subs = backlog(tasks, groups, True, wall, arrival)
            wall, cpu = await drain(policy_db, subs, groups, True)
            walls["policy"].append(wall)
            cpus["policy"].append(cpu)
            by_group = starts(policy_db)
            error, window = shares(by_group, groups)
            peak = max(most_in_a_second(by_group[f"g{g}"]) for g in range(groups) if limited(g))
            errors.append(error)
            windows.append(window)
            peaks.append(peak)
            print(
                f"run {run + 1}: plain {walls['plain'][-1]:,.0f}/s ({cpus['plain'][-1]:,.0f} per "
                f"CPU s), policy {wall:,.0f}/s ({cpu:,.0f} per CPU s); share error {error:.1%} "
                f"over {window:.1f} s; most starts of a limited group in 1 s: {peak} "
                f"(limit {RATE})",
                flush=True,
            )
    ratio = statistics.median(q / p for p, q in zip(walls["plain"], walls["policy"], strict=True))
    wall_p, wall_q = statistics.median(walls["plain"]), statistics.median(walls["policy"])
    cpu_p, cpu_q = statistics.median(cpus["plain"]), statistics.median(cpus["policy"])
    print(
        f"median: plain {wall_p:,.0f}/s, policy {wall_q:,.0f}/s ({wall_q / wall_p - 1:+.1%}; "
        f"median of the runs' own ratios {ratio - 1:+.1%}); per "
        f"CPU second: plain {cpu_p:,.0f}, policy {cpu_q:,.0f} ({cpu_q / cpu_p - 1:+.1%}); worst "
        f"share error {max(errors):.1%} (windows {min(windows):.1f}-{max(windows):.1f} s); most "
        f"starts of a limited group in any 1 s: {max(peaks)} (limit {RATE})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--arrival", choices=ARRIVALS, default="mixed")
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.groups, args.runs, args.arrival))
    sys.exit(0)
