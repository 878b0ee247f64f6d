"""Recurring schedules through Store crashes: none lost, none doubled.

``python bench/recurring_chaos.py [--schedules 1000] [--minutes 5] [--kills 2]`` starts the
processes of a Procfile deployment (store, events, limiter, monitor, dispatcher, one worker;
``bench.chaos.Cluster``) with this module as the application, submits ``--schedules`` recurring
no-op tasks (one batch; each runs again 1 s after it completes), and lets them run for
``--minutes``, SIGKILLing the Store ``--kills`` times at even intervals and starting it again.
Then every process stops and the database is read:

* schedules lost: submitted schedules no longer in the ``recurring`` table, or without an
  active instance, or with no run completed after the last restart of the Store;
* schedules doubled: keys with more than one active task, or two runs of one key that
  overlapped (the next started before the previous completed);
* count mismatches: schedules whose ``execution_count`` differs from their completed history
  rows (every completion counts once, in the transaction that inserts the next instance);
* runs that did not complete (failed, dead-lettered, cancelled, expired: each would have ended
  its schedule);
* executed more than once: instances whose executor ran to its end twice (delivery is at least
  once: reported, not required to be 0);
* per kill: kill -> the Store answering ``ping``, kill -> the first completion after it;
* completions per second over the run, and ``PRAGMA integrity_check``.

Everything is bounded, on ipc sockets only, and every process and directory it made is gone when
it returns. ``tests/test_recurring_chaos.py`` runs a small version of it in CI.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import apsw

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chaos import EXECUTIONS, Completions, cluster, integrity, listed, read_executions
from taskmill import (
    RetentionPolicy,
    Scheduler,
    SchedulerBuilder,
    StoreConfig,
    TaskContext,
    TaskSubmission,
)
from taskmill.sync_client import Client

APP = "bench.recurring_chaos:app"
DATABASE = "recurring.db"
INTERVAL_S = 1.0
RECOVERY_TIMEOUT_S = 30.0


async def tick(ctx: TaskContext) -> None:
    EXECUTIONS.note("done", ctx.record.id)


def app() -> SchedulerBuilder:
    return (
        Scheduler.builder()
        .store_path(DATABASE)
        .executor("tick", tick)
        .max_concurrency(8)
        # Every run stays in history for the count at the end (the default keeps 10,000).
        .store_config(StoreConfig(retention_policy=RetentionPolicy.max_age_days(1)))
    )


@dataclass
class Kill:
    ping_s: float
    """Kill -> the restarted Store answering ``ping``."""
    completion_s: float | None
    """Kill -> the first completion seen after the restart (None: none within the timeout)."""
    restarted_ms: int
    """When the restarted Store answered (epoch ms)."""


@dataclass
class Report:
    schedules: int
    listed_at_end: int
    completions: int
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    count_mismatches: list[str] = field(default_factory=list)
    not_completed: list[str] = field(default_factory=list)
    executed_twice: list[int] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    integrity: str = ""
    run_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.doubled
            and not self.count_mismatches
            and not self.not_completed
            and self.listed_at_end == self.schedules
            and self.integrity == "ok"
        )

    def lines(self) -> list[str]:
        out = [
            f"schedules: {self.schedules} (listed at the end: {self.listed_at_end})",
            f"runs completed: {self.completions} in {self.run_s:.0f}s "
            f"({self.completions / max(self.run_s, 1e-9):.0f}/s)",
            f"schedules lost: {listed(self.lost)}",
            f"schedules doubled: {listed(self.doubled)}",
            f"execution counts that differ from history: {listed(self.count_mismatches)}",
            f"runs that did not complete: {listed(self.not_completed)}",
            f"executed more than once: {listed(self.executed_twice)}",
            "store kills (kill -> ping answered, kill -> first completion after the restart):",
        ]
        for k in self.kills:
            done = "none" if k.completion_s is None else f"{k.completion_s:.2f}s"
            out.append(f"  ping {k.ping_s:.2f}s  completion {done}")
        out.append(f"integrity_check: {self.integrity}")
        return out


def run(work_dir: Path, schedules: int, seconds: float, kills: int) -> Report:
    """One run in ``work_dir`` (which keeps the database and the logs)."""
    report = Report(schedules, 0, 0)
    keys = [f"s{i}" for i in range(schedules)]
    with (
        cluster(work_dir, APP, DATABASE) as deployment,
        Completions(deployment.topology, deployment.context) as completions,
        Client(deployment.topology, timeout=10.0, retries=6) as client,
    ):
        subs = [TaskSubmission("tick", key=k).recurring(INTERVAL_S) for k in keys]
        outcomes = client.submit_batch(subs)
        assert all(o.kind == "inserted" for o in outcomes), "a schedule was not inserted"
        began = time.monotonic()
        for k in range(kills):
            _until(completions, began + seconds * (k + 1) / (kills + 1))
            killed = deployment.kill("store")
            deployment.start("store")
            deployment.wait_ready("store")
            ping = time.monotonic() - killed
            restarted_ms = time.time_ns() // 1_000_000
            first = completions.first_after(time.monotonic() - 0.001, RECOVERY_TIMEOUT_S)
            after = None if first is None else first - killed
            report.kills.append(Kill(ping, after, restarted_ms))
        _until(completions, began + seconds)
        report.run_s = time.monotonic() - began
        report.listed_at_end = len(client.recurring_schedules())
    _verdict(report, work_dir, keys)
    return report


def _until(completions: Completions, deadline: float) -> None:
    """Follow completions until ``deadline`` (monotonic): the schedules run meanwhile."""
    while (remaining := deadline - time.monotonic()) > 0:
        completions.wait_count(completions.count() + 10**9, remaining)


def _verdict(report: Report, work_dir: Path, keys: Sequence[str]) -> None:
    """Read the stopped deployment's database and fill in ``report``."""
    connection = apsw.Connection(str(work_dir / DATABASE))
    try:
        sql = connection.execute
        by_label = dict(sql("SELECT label, execution_count FROM recurring").fetchall())
        active = dict(
            sql(
                "SELECT r.label, count(t.id) FROM recurring r "
                "LEFT JOIN tasks t ON t.schedule_id = r.id GROUP BY r.id"
            ).fetchall()
        )
        runs: dict[str, list[tuple[int, int]]] = {}
        for label, started, completed in sql(
            "SELECT label, started_at_ms, completed_at_ms FROM history "
            "WHERE status = 'completed' ORDER BY label, completed_at_ms"
        ):
            runs.setdefault(label, []).append((started or completed, completed))
        report.not_completed = [
            f"{label}: {status}"
            for label, status in sql(
                "SELECT label, status FROM history WHERE status != 'completed'"
            ).fetchall()
        ]
        doubled_keys = {
            label for (label,) in sql("SELECT label FROM tasks GROUP BY key HAVING count(*) > 1")
        }
    finally:
        connection.close()
    last_restart = max((k.restarted_ms for k in report.kills), default=0)
    report.completions = sum(len(r) for r in runs.values())
    for key in keys:
        done = runs.get(key, [])
        if key not in by_label or active.get(key, 0) == 0 or not done:
            report.lost.append(key)
        elif done[-1][1] < last_restart:
            report.lost.append(f"{key} (no run since the last restart)")
        overlaps = any(b[0] < a[1] for a, b in pairwise(done))
        if key in doubled_keys or overlaps:
            report.doubled.append(key)
        if key in by_label and by_label[key] != len(done):
            report.count_mismatches.append(f"{key}: {by_label[key]} counted, {len(done)} runs")
    executions, _ = read_executions(work_dir / "executions.log")
    report.executed_twice = sorted(i for i, n in executions.items() if n > 1)
    report.integrity = integrity(work_dir / DATABASE)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--kills", type=int, default=2, help="Store kills, evenly spread")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = parser.parse_args(argv)
    work_dir = Path(tempfile.mkdtemp(prefix="taskmill-recurring-"))
    try:
        report = run(work_dir, args.schedules, args.minutes * 60, args.kills)
    finally:
        if args.keep:
            print(f"kept: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
