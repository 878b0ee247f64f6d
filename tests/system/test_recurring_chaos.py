"""Recurring schedules through a Store crash, in a form CI can afford (``bench/recurring_chaos.py``
runs the full one: 1,000 schedules for 5 minutes, the Store killed twice).

A Procfile deployment (real processes, ipc sockets) runs 50 schedules at 1 s intervals for about
15 s; the Store is killed with SIGKILL halfway and started again. The completion of a run and the
insertion of the next instance share a transaction, so no schedule may be lost (each still listed,
with an active instance and runs after the restart), none doubled (one active task per key, no
two runs of a key overlapping), every execution count must match the history, and the database
must pass its integrity check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.recurring_chaos import run


@pytest.mark.system
@pytest.mark.timeout(120)
def test_schedules_survive_a_store_crash_neither_lost_nor_doubled(tmp_path: Path) -> None:
    report = run(tmp_path, schedules=50, seconds=15.0, kills=1)
    print("\n".join(report.lines()))

    assert report.listed_at_end == 50
    assert report.lost == []
    assert report.doubled == []
    assert report.count_mismatches == []
    assert report.not_completed == []
    assert report.integrity == "ok"
    assert report.completions >= 50 * 5  # every schedule ran, before and after the crash
    [kill] = report.kills
    assert kill.completion_s is not None
