"""The Store's schema: what its checks refuse, and what checking costs per row.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest
from store_support import insert, open_db, raw, sub, vm_steps

from actors.store.db import StoreDB
from actors.store.schema import HISTORY_STATUSES, TASK_STATUSES
from bus.clock import FakeClock


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StoreDB]:
    store = open_db(tmp_path, FakeClock())
    yield store
    store.close()


def test_a_task_row_takes_only_a_task_status(db: StoreDB, tmp_path: Path) -> None:
    [task_id] = insert(db, "a")
    conn = raw(tmp_path)
    try:
        for status in TASK_STATUSES:
            conn.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))
        for status in ("completed", "Pending", "", "pending "):
            with pytest.raises(apsw.ConstraintError, match="CHECK"):
                conn.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task_id))
        with pytest.raises(apsw.ConstraintError):
            conn.execute("UPDATE tasks SET status = NULL WHERE id = ?", (task_id,))
        with pytest.raises(apsw.ConstraintError, match="CHECK"):
            conn.execute("UPDATE tasks SET phase = 'done' WHERE id = ?", (task_id,))
        assert conn.execute("SELECT status FROM tasks").fetchall() == [(TASK_STATUSES[-1],)]
    finally:
        conn.close()


def test_a_history_row_takes_only_a_final_status(db: StoreDB, tmp_path: Path) -> None:
    conn = raw(tmp_path)
    try:
        row = "INSERT INTO history (task_id, task_type, key, label, priority, status, "
        row += "created_at_ms, completed_at_ms) VALUES (1, 't', 'k', 'l', 1, ?, 0, 0)"
        for status in HISTORY_STATUSES:
            conn.execute(row, (status,))
        with pytest.raises(apsw.ConstraintError, match="CHECK"):
            conn.execute(row, ("pending",))
    finally:
        conn.close()


def check_steps(db: StoreDB, action_at: Callable[[int], object]) -> float:
    """VM steps the CHECK constraints add to an action on 32 rows, per row: ``action_at(0)`` runs
    with the checks on, ``action_at(1)`` with them off (``PRAGMA ignore_check_constraints``)."""
    conn = db._core.conn  # the connection is the Store's own; only this probe reaches in
    steps = []
    try:
        for ignore in (0, 1):
            conn.execute(f"PRAGMA ignore_check_constraints = {ignore}")
            steps.append(vm_steps(db, lambda n=ignore: action_at(n)))
    finally:
        conn.execute("PRAGMA ignore_check_constraints = 0")
    return (steps[0] - steps[1]) / 32


def test_checking_a_row_s_status_costs_a_few_steps_not_a_table_per_row(db: StoreDB) -> None:
    """SQLite checks ``status IN (4 values)`` by building a temporary index of the values for
    every row it writes (21 steps a row instead of 4 here; 0.7 µs of the 4 µs a batch's row
    costs): the status is checked with comparisons instead."""
    inserting = check_steps(db, lambda n: db.submit([sub(f"{n}-{i}") for i in range(32)]))
    ids = iter(r.id for r in db.peek(64))
    claiming = check_steps(db, lambda _: db.claim([next(ids) for _ in range(32)]))
    assert inserting <= 8
    assert claiming <= 8
