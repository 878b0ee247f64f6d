"""Persistence: write, close, reopen — every task is kept, interrupted work comes back pending.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from store_support import error, insert, key, ok, open_db, raw, row, run, sub

from actors.store.schema import SCHEMA_VERSION, TASK_STATUSES
from bus.clock import FakeClock
from bus.endpoints import ensure_run_dir, private_dirs
from bus.errors import DatabaseError
from bus.kinds import RecurSpec, Submission


def test_every_task_survives_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    insert(db, "pending", payload=b"\x00\x01", group_key="g", expected_write_bytes=5)
    [running] = run(db, "running", priority=3)
    db.finish([error(running, "flaky", retryable=True)])
    db.claim([running])
    [paused] = run(db, "paused")
    db.preempt([paused])
    [marked] = run(db, "marked")
    db.submit([sub("marked", 7)])
    [done] = run(db, "done")
    db.finish([ok(done, read_bytes=42)])
    before = {r.id: r for s in ("pending", "running", "paused") for r in db.list_tasks(s, 100)}
    history_before = db.history()
    db.close()

    db = open_db(tmp_path, clock)
    try:
        after = {r.id: r for s in ("pending", "running", "paused") for r in db.list_tasks(s, 100)}
        assert after.keys() == before.keys()
        assert db.counts().running == 0
        for task_id, old in before.items():
            new = after[task_id]
            if old.status == "running":
                assert (new.status, new.started_at_ms) == ("pending", None)
                assert new.retry_count == old.retry_count
                assert new.last_error == old.last_error
                assert new.requeue == old.requeue
                assert new.requeue_priority == old.requeue_priority
            else:
                assert new == old
        assert row(db, running).retry_count == 1  # recovery is not a retry
        assert (row(db, marked).requeue, row(db, marked).requeue_priority) == (True, 7)
        assert row(db, paused).status == "paused"
        assert db.history() == history_before
        # Ids are never reused, even across a restart.
        [fresh] = db.submit([sub("fresh")])
        assert fresh.id is not None and fresh.id > max(before) and fresh.id > done
    finally:
        db.close()


def test_schema_version_and_wal(tmp_path: Path) -> None:
    open_db(tmp_path, FakeClock()).close()
    conn = raw(tmp_path)
    assert conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    conn.close()


DATA = Path(__file__).resolve().parents[1] / "data"

OLDER = {
    # file: the labels of the ids StoreDB gave out writing it, in order
    "schema-v1.db": "pending urgent running paused marked - parent child failed requested done",
    "schema-v3.db": "pending urgent running paused marked parent child failed requested done",
    "schema-v5.db": "pending urgent running paused marked parent child failed requested done",
    "schema-v6.db": "pending urgent running paused marked parent child failed requested done",
    "schema-v7.db": "pending urgent running paused marked parent child failed requested done",
}
"""``data/schema-v1.db`` was written by ``StoreDB`` at commit a00fb4c, the last with schema
version 1 (``key`` declared ``UNIQUE``), ``data/schema-v3.db`` at c58e47c, the last with version
3 (the status checked with ``IN``), each by the same steps. Version 1 used up an id on a
duplicate submission ("-"). "failed" and "done" (the highest id) are in history only.
``data/schema-v5.db`` is the version 3 file opened by ``StoreDB`` at b1138bb, the last with
version 5 (no due times, retry policies or results), without recovering its running rows, and
given a runtime group limit (g: 3), which the upgrade keeps. ``data/schema-v6.db`` is that
version 5 file brought to version 6 by the schema's own upgrade at d928e74 (the last with
version 6), again without recovering its running rows; ``data/schema-v7.db`` is the version 6
file brought to version 7 the same way at 5b6364e (the last with version 7)."""


@pytest.mark.parametrize("fixture", sorted(OLDER))
def test_an_older_database_is_upgraded_in_place(tmp_path: Path, fixture: str) -> None:
    ids = {label: i for i, label in enumerate(OLDER[fixture].split(), start=1)}
    shutil.copy(DATA / fixture, tmp_path / "tasks.db")
    db = open_db(tmp_path, FakeClock())
    try:
        tasks = {r.label: r for s in TASK_STATUSES for r in db.list_tasks(s, 100)}
        assert {label: (r.id, r.status) for label, r in tasks.items()} == {
            "pending": (ids["pending"], "pending"),
            "urgent": (ids["urgent"], "pending"),
            "running": (ids["running"], "pending"),  # recovered on open
            "paused": (ids["paused"], "paused"),
            "marked": (ids["marked"], "pending"),
            "parent": (ids["parent"], "waiting"),
            "child": (ids["child"], "pending"),
            "requested": (ids["requested"], "pending"),
        }
        first = tasks["pending"]
        assert (first.payload, first.group_key, first.expected_write_bytes) == (b"\x00\x01", "g", 5)
        assert (tasks["running"].retry_count, tasks["running"].last_error) == (1, "flaky")
        assert (tasks["marked"].requeue, tasks["marked"].requeue_priority) == (True, 7)
        assert [(h.task_id, h.status) for h in db.history()] == [
            (ids["done"], "completed"),
            (ids["failed"], "failed"),
        ]
        assert db.lookup(key("child")).task == tasks["child"]
        # Keys still dedup, and a retried request still gets its first answer.
        assert [(o.kind, o.id) for o in db.submit([sub("pending"), sub("urgent", 5)])] == [
            ("duplicate", None),
            ("upgraded", ids["urgent"]),
        ]
        [retried] = db.submit([sub("requested")], request_id="req-1")
        assert (retried.kind, retried.id) == ("inserted", ids["requested"])
        # The parent still knows it has a child: the child's end finalizes it.
        db.claim([ids["child"]])
        db.finish([ok(ids["child"])])
        parent = row(db, ids["parent"])
        assert (parent.status, parent.phase) == ("pending", "finalize")
        # No id is reused, not even the highest, which only history holds.
        [fresh] = db.submit([sub("fresh")])
        assert fresh.id == ids["done"] + 1
    finally:
        db.close()
    assert_current_schema(tmp_path)


def assert_current_schema(tmp_path: Path) -> None:
    """The upgraded file's schema is a new database's, word for word."""
    (tmp_path / "new").mkdir()
    open_db(tmp_path / "new", FakeClock()).close()
    schemas = []
    for conn in (raw(tmp_path), raw(tmp_path / "new")):
        schemas.append(
            (
                conn.execute("PRAGMA user_version").fetchall(),
                conn.execute(
                    "SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name"
                ).fetchall(),
            )
        )
        conn.close()
    upgraded, new = schemas
    assert upgraded == new
    assert new[0] == [(SCHEMA_VERSION,)]


def test_a_version_2_database_gets_its_ready_order_split(tmp_path: Path) -> None:
    """Version 2 kept one ready index for grouped and ungrouped tasks alike (and checked the
    status with ``IN``); later versions have one each, and one by group, so a peek passing over
    a full group never walks its rows."""
    shutil.copy(DATA / "schema-v3.db", tmp_path / "tasks.db")
    conn = raw(tmp_path)  # back to version 2's indexes, as version 2 left them
    conn.execute(
        "DROP INDEX tasks_ready_ungrouped; DROP INDEX tasks_ready_grouped; "
        "DROP INDEX tasks_ready_by_group; "
        "CREATE INDEX tasks_ready ON tasks(priority, id) WHERE status = 'pending'; "
        "PRAGMA user_version = 2"
    )
    conn.close()
    db = open_db(tmp_path, FakeClock())
    try:
        # A paused row comes before the pending rows of its priority.
        ungrouped = ["running", "urgent", "paused", "marked", "child", "requested"]
        assert [r.label for r in db.peek(10)] == [*ungrouped[:3], "pending", *ungrouped[3:]]
        db.set_groups("configured", 0, {"g": 0})
        assert [r.label for r in db.peek(10)] == ungrouped
        assert db.counts().pending == 6
    finally:
        db.close()
    assert_current_schema(tmp_path)


@pytest.mark.parametrize("fixture", sorted(OLDER))
def test_an_upgrade_keeps_what_the_user_made_on_the_file(tmp_path: Path, fixture: str) -> None:
    """The rebuild of ``tasks`` keeps a user's own index and trigger on it, and the views and
    other tables' triggers that read it still read the new table."""
    shutil.copy(DATA / fixture, tmp_path / "tasks.db")
    conn = raw(tmp_path)
    conn.execute(
        "CREATE TABLE audit (what TEXT, n INTEGER);"
        "CREATE INDEX my_labels ON tasks(label);"
        "CREATE TRIGGER my_inserts AFTER INSERT ON tasks BEGIN "
        "INSERT INTO audit VALUES ('inserted', new.id); END;"
        "CREATE TRIGGER my_finishes AFTER INSERT ON history BEGIN "
        "INSERT INTO audit SELECT 'left', count(*) FROM tasks; END;"
        "CREATE VIEW my_pending AS SELECT label FROM tasks WHERE status = 'pending';"
    )
    conn.close()
    db = open_db(tmp_path, FakeClock())
    try:
        [fresh] = db.submit([sub("fresh")])
        [done] = run(db, "done-now")
        db.finish([ok(done)])
    finally:
        db.close()
    conn = raw(tmp_path)
    try:
        assert conn.execute("SELECT what, n FROM audit").fetchall() == [
            ("inserted", fresh.id),
            ("inserted", done),
            ("left", 10),  # the file's 8, "fresh", and "done-now" (its history row comes first)
        ]
        assert ("fresh",) in conn.execute("SELECT label FROM my_pending").fetchall()
        plan = conn.execute("EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE label = 'x'").fetchall()
        assert "my_labels" in str(plan)
    finally:
        conn.close()


def test_an_upgrade_keeps_keys_that_share_a_prefix_apart(tmp_path: Path) -> None:
    """Version 2 indexes keys by their first 8 bytes: two version 1 keys that share them stay two
    tasks, each found by its own key."""
    shutil.copy(DATA / "schema-v1.db", tmp_path / "tasks.db")
    twin = key("pending")[:16] + key("twin")[16:]
    conn = raw(tmp_path)
    conn.execute(
        "INSERT INTO tasks (task_type, key, label, priority, status, created_at_ms) "
        "VALUES ('t', ?, 'twin', 9, 'pending', 0)",
        (twin,),
    )
    conn.close()
    db = open_db(tmp_path, FakeClock())
    try:
        assert (db.lookup(key("pending")).task.label, db.lookup(twin).task.label) == (
            "pending",
            "twin",
        )
        [again] = db.submit([Submission("t", twin, "twin", 9)])
        assert again.kind == "duplicate"
    finally:
        db.close()


@pytest.mark.parametrize(
    ("fixture", "users_sql", "error"),
    [
        # an index of the user's, named as version 2 names one of its own
        ("schema-v1.db", "CREATE INDEX tasks_key8 ON tasks(label)", "tasks_key8"),
        # a table of the user's, named as the rebuild names the old table
        ("schema-v3.db", "CREATE TABLE tasks_old (x)", "tasks_old"),
    ],
)
def test_a_failed_upgrade_is_a_database_error_and_leaves_the_file_as_it_was(
    tmp_path: Path, fixture: str, users_sql: str, error: str
) -> None:
    shutil.copy(DATA / fixture, tmp_path / "tasks.db")
    conn = raw(tmp_path)
    conn.execute(users_sql)
    conn.close()
    before = (tmp_path / "tasks.db").read_bytes()
    with pytest.raises(DatabaseError, match=error):
        open_db(tmp_path, FakeClock())
    assert (tmp_path / "tasks.db").read_bytes() == before
    conn = raw(tmp_path)
    assert conn.execute("SELECT count(*) FROM tasks").fetchall() == [(8,)]
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    open_db(tmp_path, FakeClock()).close()
    conn = raw(tmp_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DatabaseError, match="99"):
        open_db(tmp_path, FakeClock())


def test_unopenable_path_is_a_database_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="cannot open"):
        open_db(tmp_path / "missing" / "dir", FakeClock())


def waiting_parent(tmp_path: Path, *, fail_child: bool) -> tuple[int, int]:
    """A waiting parent whose last child's end was lost (as after a crash at the wrong time)."""
    db = open_db(tmp_path, FakeClock())
    [parent] = run(db, "parent", fail_fast=False)
    [child] = run(db, "child", parent_id=parent)
    db.finish([ok(parent)])
    assert row(db, parent).status == "waiting"
    db.close()
    conn = raw(tmp_path)
    conn.execute("DELETE FROM tasks WHERE id = ?", (child,))
    if fail_child:
        conn.execute("UPDATE tasks SET child_failures = 1 WHERE id = ?", (parent,))
    conn.close()
    return parent, child


def test_waiting_parent_with_finished_children_is_finalized_on_open(tmp_path: Path) -> None:
    parent, _ = waiting_parent(tmp_path, fail_child=False)
    db = open_db(tmp_path, FakeClock())
    try:
        assert [(t.id, t.result) for t in db.recovered] == [(parent, "finalize")]
        r = row(db, parent)
        assert (r.status, r.phase) == ("pending", "finalize")
        assert [t.id for t in db.peek(5)] == [parent]
    finally:
        db.close()


def test_waiting_parent_with_a_failed_child_fails_on_open(tmp_path: Path) -> None:
    parent, _ = waiting_parent(tmp_path, fail_child=True)
    db = open_db(tmp_path, FakeClock())
    try:
        assert [(t.id, t.result, t.error) for t in db.recovered] == [
            (parent, "failed", "1 child task(s) failed")
        ]
        assert db.get_task(parent) is None
        assert db.lookup(key("parent")).location == "history"
    finally:
        db.close()


def test_waiting_parent_with_active_children_keeps_waiting(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock())
    [parent] = run(db, "parent")
    [child] = run(db, "child", parent_id=parent)
    db.finish([ok(parent)])
    db.close()
    db = open_db(tmp_path, FakeClock())
    try:
        assert db.recovered == []
        assert row(db, parent).status == "waiting"
        assert row(db, child).status == "pending"
        db.claim([child])
        assert [t.result for t in db.finish([ok(child)])] == ["completed", "finalize"]
    finally:
        db.close()


def test_close_checkpoints_the_wal(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock())
    insert(db, *(f"t{i}" for i in range(50)))
    db.close()
    db.close()  # idempotent
    wal = tmp_path / "tasks.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_file_that_is_not_a_database_is_a_database_error(tmp_path: Path) -> None:
    (tmp_path / "tasks.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="not a database"):
        open_db(tmp_path, FakeClock())


def test_a_version_5_database_keeps_its_rows_and_runtime_limits_on_upgrade(
    tmp_path: Path,
) -> None:
    """Version 6 adds columns at the end of ``tasks`` and ``history`` and widens their status
    checks by a change of the schema's text alone: the rows stay where they are, whole."""
    shutil.copy(DATA / "schema-v5.db", tmp_path / "tasks.db")
    db = open_db(tmp_path, FakeClock())
    try:
        assert db.groups().runtime == {"g": 3}
        [task] = db.list_tasks("paused", 10)
        assert (task.label, task.due_at_ms, task.retry, task.timeout_s) == (
            "paused",
            None,
            None,
            None,
        )
        assert {h.result for h in db.history()} == {None}
    finally:
        db.close()
    assert_integrity(tmp_path)


def assert_integrity(tmp_path: Path) -> None:
    """The file passes SQLite's integrity check."""
    conn = raw(tmp_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_a_version_6_database_gains_the_flow_control_tables_on_upgrade(tmp_path: Path) -> None:
    """Version 7 adds the tables of rate limits, buckets, fair shares and paused groups; the
    rows and the runtime group limits stay as they were."""
    shutil.copy(
        Path(__file__).resolve().parents[1] / "data" / "schema-v6.db", tmp_path / "tasks.db"
    )
    db = open_db(tmp_path, FakeClock())
    try:
        assert db.groups().runtime == {"g": 3}
        [task] = db.list_tasks("paused", 10)
        assert task.label == "paused"
        db.set_flow("runtime", rates={"type:t": (5, 1000, 5)}, weights={"g": 2.0})
        assert db.pause_group("g") is not None
        state = db.flow_state()
        assert [r.scope for r in state.rate_limits] == ["type:t"]
        assert [p.group for p in state.paused_groups] == ["g"]
        assert state.weights == {"g": 2.0}
    finally:
        db.close()
    conn = raw(tmp_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()


def test_a_version_6_database_takes_dependencies_after_its_upgrade(tmp_path: Path) -> None:
    """Version 7 widens the status checks (``blocked``, ``dependency_failed``), adds a column
    at the end of ``tasks``, the edge table and its indexes, and keeps blocked rows out of the
    busy index: the rows stay whole, and a dependency can be submitted and fail at once."""
    shutil.copy(DATA / "schema-v6.db", tmp_path / "tasks.db")
    db = open_db(tmp_path, FakeClock())
    try:
        [paused] = db.list_tasks("paused", 10)
        [blocked] = db.submit([sub("after-paused", depends_on=[paused.id])])
        assert blocked.id is not None and db.counts().blocked == 1
        assert db.dependencies(blocked.id) == [paused.id]
        transitions = db.cancel(paused.id)
        assert [t.result for t in transitions] == ["cancelled", "dependency_failed"]
        assert db.result(blocked.id)[0].status == "dependency_failed"
    finally:
        db.close()
    assert_integrity(tmp_path)


def test_a_version_6_database_takes_recurring_schedules_after_its_upgrade(
    tmp_path: Path,
) -> None:
    """Version 7 adds ``schedule_id`` at the end of ``tasks`` (a change of the schema's text
    alone) and the ``recurring`` table: the rows stay whole, and a schedule works at once."""
    shutil.copy(DATA / "schema-v6.db", tmp_path / "tasks.db")
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    try:
        assert db.groups().runtime == {"g": 3}
        assert [t.label for t in db.list_tasks("paused", 10)] == ["paused"]
        [outcome] = db.submit([sub("every-minute", recurring=RecurSpec(60.0))])
        db.claim([outcome.id or 0])
        assert [t.result for t in db.finish([ok(outcome.id or 0)])] == ["completed", "recurring"]
        assert [s.execution_count for s in db.recurring_schedules()] == [1]
    finally:
        db.close()
    assert_integrity(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_the_database_and_its_directory_are_private_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    previous = os.umask(umask)
    try:
        # The deployment's directory, as the Store process and the run directory make it.
        data = tmp_path / "deploy" / ".taskmill"
        private_dirs(data)
        ensure_run_dir(tmp_path / "other" / "run")
        db = open_db(data, FakeClock())
        insert(db, "secret", payload=b"password")
        files = [data / "tasks.db", data / "tasks.db-wal", data / "tasks.db-shm"]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        db.close()
        assert mode(data) == mode(data.parent) == mode(tmp_path / "other") == 0o700
        # A database an older version left readable is tightened when it is opened.
        for f in files:
            f.touch()
            f.chmod(0o644)
        open_db(data, FakeClock()).close()
        assert mode(data / "tasks.db") == 0o600
        assert all(mode(f) == 0o600 for f in files if f.exists())
    finally:
        os.umask(previous)
