"""The Store's SQLite schema (versioned with ``PRAGMA user_version``) and row mapping.

Two tables hold the tasks: ``tasks`` (active rows: pending, running, paused, waiting,
scheduled, blocked) and ``history`` (terminal runs: completed, failed, cancelled, ...);
``task_tags`` indexes the tags of active tasks (``_TAGS``), ``task_deps`` holds the
dependencies blocked tasks wait for. ``requests`` remembers the
outcomes of recent Submit requests by ``request_id`` so a client's retry is not applied twice.

Besides the fields of ``TaskRow``, a task row keeps a few columns the Store needs for itself:

* ``has_children`` — a child was inserted with this row as parent during the current run, so
  ``execute`` returning ok leads to ``waiting``/``finalize`` rather than completion;
* ``child_failures`` — children of the current run that failed permanently (a counter rather than
  a history query, so history retention can never make a failed child disappear);
* ``run_started_at_ms`` — when the current run's ``execute`` was dispatched: a parent's history
  row spans execute, the wait for its children and finalize;
* ``acc_*_bytes`` — actual IO already reported by the run's ``execute`` (added to finalize's);
* ``key8`` — the key's first 8 bytes as an integer: dedup looks a key up by it (``key8``).
"""

from __future__ import annotations

import json
from typing import Any

import apsw

from bus.kinds import HistoryRow, RetrySpec, TaskRow

SCHEMA_VERSION = 8

BUSY = "status != 'pending' AND status != 'scheduled' AND status != 'blocked'"
"""The condition of ``tasks_busy``: a query that states it reads that small index (running,
paused and waiting rows), never the queue, the tasks scheduled for later nor the blocked ones
(a dependency graph may hold many more of those than run)."""

TASK_STATUSES = ("pending", "running", "paused", "waiting", "scheduled", "blocked")
HISTORY_STATUSES = (
    "completed", "failed", "cancelled", "dead_letter", "expired", "superseded",
    "dependency_failed",
)  # fmt: skip

_TASK_STATUS_CHECK = " OR ".join(f"status = '{status}'" for status in TASK_STATUSES)
"""The check on a task row's status, spelled as comparisons: SQLite evaluates ``status IN (...)``
of more than two values by building a temporary index of the values for every row it checks,
which made each inserted row and each status update noticeably dearer. History keeps its
``IN`` (a finished task pays it once, a negligible share of what a task costs): changing it
would mean rebuilding on open a table that may hold millions of rows."""

_READY = """
-- The ready order, by (priority, id), in two parts, so that a peek passing over a full group
-- never walks that group's rows to reach the ungrouped ones. Partial, so claim and peek cost
-- the same whatever the queue depth.
CREATE INDEX tasks_ready_ungrouped ON tasks(priority, id)
    WHERE status = 'pending' AND group_key IS NULL;
CREATE INDEX tasks_ready_grouped ON tasks(priority, id)
    WHERE status = 'pending' AND group_key IS NOT NULL;
-- Grouped rows by group: a peek that skips full groups takes the others' first rows from here
-- when the full ones fill the top of the grouped order.
CREATE INDEX tasks_ready_by_group ON tasks(group_key, priority, id)
    WHERE status = 'pending' AND group_key IS NOT NULL;
"""

_TASKS = (
    f"""
CREATE TABLE tasks (
    -- AUTOINCREMENT: an id is never reused, so a late result or a history row's task_id can
    -- never be mistaken for a newer task's.
    id                     INTEGER PRIMARY KEY AUTOINCREMENT,
    task_type              TEXT    NOT NULL,
    -- Unique among active rows, but not declared so: the Store, the only writer, inserts a key
    -- only where no row has it (store_submit) and finds it by ``key8`` (see ``key8``).
    key                    TEXT    NOT NULL,
    key8                   INTEGER NOT NULL,
    label                  TEXT    NOT NULL,
    priority               INTEGER NOT NULL,
    status                 TEXT    NOT NULL CHECK ({_TASK_STATUS_CHECK}),
    payload                BLOB,
    expected_read_bytes    INTEGER NOT NULL DEFAULT 0,
    expected_write_bytes   INTEGER NOT NULL DEFAULT 0,
    expected_net_rx_bytes  INTEGER NOT NULL DEFAULT 0,
    expected_net_tx_bytes  INTEGER NOT NULL DEFAULT 0,
    retry_count            INTEGER NOT NULL DEFAULT 0,
    last_error             TEXT,
    created_at_ms          INTEGER NOT NULL,
    started_at_ms          INTEGER,
    requeue                INTEGER NOT NULL DEFAULT 0,
    requeue_priority       INTEGER,
    parent_id              INTEGER,
    fail_fast              INTEGER NOT NULL DEFAULT 1,
    group_key              TEXT,
    phase                  TEXT    NOT NULL DEFAULT 'execute'
        CHECK (phase IN ('execute', 'finalize')),
    has_children           INTEGER NOT NULL DEFAULT 0,
    child_failures         INTEGER NOT NULL DEFAULT 0,
    run_started_at_ms      INTEGER,
    acc_read_bytes         INTEGER NOT NULL DEFAULT 0,
    acc_write_bytes        INTEGER NOT NULL DEFAULT 0,
    acc_net_rx_bytes       INTEGER NOT NULL DEFAULT 0,
    acc_net_tx_bytes       INTEGER NOT NULL DEFAULT 0,
    -- Since version 6, each NULL when not set (so that rows of older versions read as unset):
    due_at_ms              INTEGER,
    retry_policy           BLOB,
    max_retries            INTEGER,
    timeout_s              REAL,
    ttl_s                  REAL,
    ttl_from               TEXT,
    expires_at_ms          INTEGER,
    -- Since version 7, NULL when not set: the task's tags as a JSON object (see _TAGS);
    -- rate_deferred 1 when a rate limit scheduled the task for its next token;
    -- on_dependency_failure cancel | fail | ignore (NULL: the task has no dependency);
    tags                   TEXT,
    rate_deferred          INTEGER,
    on_dependency_failure  TEXT,
    schedule_id            INTEGER  -- the recurring schedule this task is an instance of
);
-- Dedup lookups. A quarter the size of an index of the keys' text, so a batch of random keys
-- into a deep queue dirties (and writes to the WAL) a quarter as many pages.
CREATE INDEX tasks_key8 ON tasks(key8);
-- Finalize-ready parents, dispatched ahead of everything else.
CREATE INDEX tasks_finalize ON tasks(priority, id)
    WHERE status = 'pending' AND phase = 'finalize';
-- Running, paused and waiting rows (a small set): counts, lists, the claim's running counts.
CREATE INDEX tasks_busy ON tasks(status, priority, id)
    WHERE status != 'pending' AND status != 'scheduled' AND status != 'blocked';
CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;
-- Tasks not due yet, by due time: a claim makes the due ones pending, and never reads the rest.
CREATE INDEX tasks_scheduled ON tasks(due_at_ms) WHERE status = 'scheduled';
-- Tasks with a TTL, by when they expire: the claim and the sweep read only the expired ones.
CREATE INDEX tasks_expiry ON tasks(expires_at_ms) WHERE expires_at_ms IS NOT NULL;
"""
    + _READY
)

_HISTORY_AND_REQUESTS = """
CREATE TABLE history (
    id                     INTEGER PRIMARY KEY,
    task_id                INTEGER NOT NULL,
    task_type              TEXT    NOT NULL,
    key                    TEXT    NOT NULL,
    label                  TEXT    NOT NULL,
    priority               INTEGER NOT NULL,
    status                 TEXT    NOT NULL
        CHECK (status IN ('completed', 'failed', 'cancelled', 'dead_letter', 'expired',
                          'superseded', 'dependency_failed')),
    payload                BLOB,
    expected_read_bytes    INTEGER NOT NULL DEFAULT 0,
    expected_write_bytes   INTEGER NOT NULL DEFAULT 0,
    expected_net_rx_bytes  INTEGER NOT NULL DEFAULT 0,
    expected_net_tx_bytes  INTEGER NOT NULL DEFAULT 0,
    actual_read_bytes      INTEGER NOT NULL DEFAULT 0,
    actual_write_bytes     INTEGER NOT NULL DEFAULT 0,
    actual_net_rx_bytes    INTEGER NOT NULL DEFAULT 0,
    actual_net_tx_bytes    INTEGER NOT NULL DEFAULT 0,
    retry_count            INTEGER NOT NULL DEFAULT 0,
    last_error             TEXT,
    created_at_ms          INTEGER NOT NULL,
    started_at_ms          INTEGER,
    completed_at_ms        INTEGER NOT NULL,
    duration_ms            INTEGER,
    parent_id              INTEGER,
    fail_fast              INTEGER NOT NULL DEFAULT 1,
    group_key              TEXT,
    result                 BLOB,  -- since version 6
    tags                   TEXT   -- since version 7
);
CREATE INDEX history_time ON history(completed_at_ms);
CREATE INDEX history_type ON history(task_type, completed_at_ms);
CREATE INDEX history_key ON history(key, completed_at_ms);
CREATE INDEX history_status ON history(status, completed_at_ms);
CREATE INDEX history_task ON history(task_id);

CREATE TABLE requests (
    request_id  TEXT    PRIMARY KEY,
    outcomes    BLOB    NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX requests_age ON requests(at_ms);
"""

_GROUP_POLICY = """
-- The GroupLimiter's policy, kept where the claim counts running rows (actors/store/claim.py):
-- 'configured' is what the application was built with (set anew at every start of the
-- limiter), 'runtime' what was changed while running (kept across restarts).
CREATE TABLE group_policy (
    layer      TEXT    NOT NULL CHECK (layer IN ('configured', 'runtime')),
    scope      TEXT    NOT NULL CHECK (scope IN ('default', 'group')),
    group_key  TEXT    NOT NULL,
    lim        INTEGER NOT NULL CHECK (lim >= -1),  -- -1: the override removed
    PRIMARY KEY (layer, scope, group_key)
) WITHOUT ROWID;
"""

_TAGS = """
-- Tags (since version 7). A task row keeps its tags as one JSON object in ``tags`` (NULL when
-- it has none: an untagged task pays for a NULL column and nothing else); this table holds one
-- row per tag of an active task, for the queries by tag and ``cancel_by_tag``. The Store writes
-- it where it inserts, supersedes and deletes tagged rows (``index_tags``, ``unindex_tags``),
-- not by triggers: a trigger on ``tasks`` makes SQLite load every column of each row a
-- statement deletes, tagged or not, which every task that finishes would pay.
CREATE TABLE IF NOT EXISTS task_tags (
    task_id  INTEGER NOT NULL,
    key      TEXT    NOT NULL,
    value    TEXT    NOT NULL,
    PRIMARY KEY (task_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_tags_kv ON task_tags(key, value);
"""
"""The tag index of version 7 (supersede and bulk cancel need no table of their own)."""


FLOW_CONTROL = """
-- Since version 7: the rest of the GroupLimiter's policy (actors/store/flow.py), in the same
-- two layers as group_policy.
-- Token-bucket rate limits by scope ('type:<task type>', 'group:<group>'); permits NULL in the
-- runtime layer: removed at runtime (the configured one included).
CREATE TABLE IF NOT EXISTS rate_limits (
    layer        TEXT    NOT NULL CHECK (layer IN ('configured', 'runtime')),
    scope        TEXT    NOT NULL,
    permits      INTEGER CHECK (permits > 0),
    interval_ms  INTEGER CHECK (interval_ms > 0),
    burst        INTEGER CHECK (burst > 0),
    PRIMARY KEY (layer, scope)
) WITHOUT ROWID;
-- Each rate limit's bucket, written in the claim's transaction: a restart goes on from the
-- tokens left (refilled for the time it took), never from a full bucket.
CREATE TABLE IF NOT EXISTS rate_buckets (
    scope        TEXT    PRIMARY KEY,
    tokens       REAL    NOT NULL,
    at_ms        INTEGER NOT NULL,
    next_ms      INTEGER NOT NULL   -- a type's: the latest due time it gave a denied task; a
                                    -- group's: when the token it waits for is due
) WITHOUT ROWID;
-- Fair-share weights and minimum slots by group ('' = the default weight); NULL: not set. In the
-- runtime layer a weight of +Infinity removes the group's weight and a minimum of 0 its minimum.
CREATE TABLE IF NOT EXISTS group_shares (
    layer        TEXT    NOT NULL CHECK (layer IN ('configured', 'runtime')),
    group_key    TEXT    NOT NULL,
    weight       REAL    CHECK (weight > 0),
    min_slots    INTEGER CHECK (min_slots >= 0),
    PRIMARY KEY (layer, group_key)
) WITHOUT ROWID;
-- Paused groups (pause_group): their tasks do not start until resumed (or resume_at passes).
CREATE TABLE IF NOT EXISTS paused_groups (
    group_key    TEXT    PRIMARY KEY,
    paused_at_ms INTEGER NOT NULL,
    resume_at_ms INTEGER
) WITHOUT ROWID;
"""


DEPENDENCIES = """
-- Since version 7. One row per dependency a blocked task still waits for: a task has rows here
-- while, and only while, it is blocked. Keyed by the waiting task (its own dependencies); the
-- index finds a task's dependents, so a dependency ending reads just those (never a scan).
CREATE TABLE IF NOT EXISTS task_deps (
    task_id     INTEGER NOT NULL,  -- the blocked task
    depends_on  INTEGER NOT NULL,  -- an active task it waits for
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS task_deps_dependency ON task_deps(depends_on, task_id);
-- Blocked tasks in queue order: their list and count, without reading the busy index.
CREATE INDEX IF NOT EXISTS tasks_blocked ON tasks(priority, id) WHERE status = 'blocked';
"""
"""What version 7 adds for task dependencies; a fresh database and the upgrade run it alike."""


_RECURRING = """
-- Recurring schedules (since version 7). A schedule is named by its first task's id; each
-- instance is a task whose ``schedule_id`` names it. ``template`` is the submission every
-- instance is made from (``actors.store.recurring``).
CREATE TABLE IF NOT EXISTS recurring (
    id                 INTEGER PRIMARY KEY,
    task_type          TEXT    NOT NULL,
    key                TEXT    NOT NULL,
    label              TEXT    NOT NULL,
    interval_s         REAL,
    cron               TEXT,
    max_executions     INTEGER,
    execution_count    INTEGER NOT NULL DEFAULT 0,
    paused             INTEGER NOT NULL DEFAULT 0,
    last_completed_ms  INTEGER,
    template           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS recurring_key ON recurring(key);
CREATE INDEX IF NOT EXISTS tasks_schedule ON tasks(schedule_id) WHERE schedule_id IS NOT NULL;
"""


_VERSION_7 = _TAGS + FLOW_CONTROL + DEPENDENCIES + _RECURRING
"""What version 7 adds besides columns: run by a fresh database and by the upgrade from 6."""

_VERSION_8 = """
-- Since version 8: the pauses each group had (pause_group ... resume_group, or the pause's
-- end), for priority aging, which does not count the time a task's group was paused. Pruned
-- of pauses that ended before the oldest active task was submitted.
CREATE TABLE IF NOT EXISTS group_pause_log (
    group_key    TEXT    NOT NULL,
    paused_at_ms INTEGER NOT NULL,
    ended_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (group_key, paused_at_ms)
) WITHOUT ROWID;
"""


def key8(key: str) -> int | None:
    """The key's first 16 hex digits as a signed 64-bit integer: what ``tasks`` indexes keys by.

    Keys are SHA-256 digests, so prefixes of different keys rarely meet; a lookup compares the
    full key too. ``None`` for a string that is no key (the Store stores only valid keys)."""
    try:
        return int(key[:16], 16) - 2**63
    except (TypeError, ValueError):
        return None


def migrate(conn: Any) -> None:
    """Bring a database to ``SCHEMA_VERSION``; refuse one written by a newer taskmill.

    Runs inside the caller's transaction, so a half-migrated schema is never committed.
    """
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    if version == SCHEMA_VERSION:
        return
    if version == 0:
        conn.execute(_TASKS + _HISTORY_AND_REQUESTS + _GROUP_POLICY + _VERSION_7 + _VERSION_8)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if version == 7:  # no log of group pauses
        conn.execute(_VERSION_8)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if version == 6:  # no tags, flow control, dependencies or 'superseded' history status
        _widen(conn, "tasks")
        _widen(conn, "history")
        # Blocked rows stay out of the busy index (which had no blocked rows to hold).
        conn.execute("DROP INDEX tasks_busy;" + _BUSY_INDEX)
        conn.execute(_VERSION_7 + _VERSION_8)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    if version == 1:  # key declared UNIQUE, no key8
        conn.create_scalar_function("taskmill_key8", key8, 1, deterministic=True)
        _rebuild_tasks(conn, ("tasks_ready",), "taskmill_key8(key)")
    elif version == 2:  # one ready index for grouped and ungrouped rows alike
        _rebuild_tasks(conn, ("tasks_ready", "tasks_key8"), "key8")
    elif version == 3:  # the status checked with IN
        _rebuild_tasks(conn, (*_READY_INDEXES, "tasks_key8"), "key8")
    elif version in (4, 5):  # 4: no group policy; both: no due times, retry policies, results
        _widen(conn, "tasks")
        conn.execute("DROP INDEX tasks_busy")
        conn.execute(_BUSY_INDEX + ";" + _SCHEDULED_INDEX + ";" + _EXPIRY_INDEX)
    else:
        raise ValueError(f"database schema version {version} is newer than this taskmill's")
    _widen(conn, "history")
    conn.execute("CREATE INDEX history_task ON history(task_id)")
    if version != 5:
        conn.execute(_GROUP_POLICY)
    conn.execute(_VERSION_7 + _VERSION_8)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_SCHEDULED_INDEX = "CREATE INDEX tasks_scheduled ON tasks(due_at_ms) WHERE status = 'scheduled'"
_EXPIRY_INDEX = "CREATE INDEX tasks_expiry ON tasks(expires_at_ms) WHERE expires_at_ms IS NOT NULL"
_BUSY_INDEX = (
    "CREATE INDEX tasks_busy ON tasks(status, priority, id)\n"
    "    WHERE status != 'pending' AND status != 'scheduled' AND status != 'blocked'"
)


def _widen(conn: Any, table: str) -> None:
    """Give ``table`` the current declaration where an older version's differs only by columns
    added at its end (each NULL when unset) and status checks that accept more: a change of the
    schema's text alone (SQLite's own way for such changes, as ``ADD COLUMN`` does), which leaves
    every row as it is — no copy of a table that may hold millions of rows."""
    fresh = _declarations()[table]
    (version,) = conn.execute("PRAGMA schema_version").fetchall()[0]
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?", (fresh, table)
        )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


def _declarations() -> dict[str, str]:
    """The declaration of each table as SQLite stores it for the current schema."""
    memory = apsw.Connection(":memory:")
    try:
        memory.execute(_TASKS + _HISTORY_AND_REQUESTS + _GROUP_POLICY + _VERSION_7)
        rows = memory.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'")
        return {str(name): str(sql) for name, sql in rows.fetchall()}
    finally:
        memory.close()


_READY_INDEXES = ("tasks_ready_ungrouped", "tasks_ready_grouped", "tasks_ready_by_group")


def _rebuild_tasks(conn: Any, indexes: tuple[str, ...], key8_column: str) -> None:
    """Rebuild ``tasks`` under the same name, as the current schema declares it: SQLite cannot
    change a column's inline constraint in place. ``indexes`` are the old version's own indexes
    besides those every version has (their names are taken again); ``key8_column`` gives each
    row's ``key8``. The id sequence moves with the old table's rename and is given back, so no
    id is ever reused.

    Whatever else a user made on the file is kept: the rename is SQLite's legacy one, which
    leaves views and other tables' triggers naming ``tasks`` as they are, to find the new table;
    the user's own indexes and triggers on ``tasks``, dropped with the old table, are made again
    from their SQL."""
    ours = {*indexes, "tasks_finalize", "tasks_busy", "tasks_parent"}
    theirs = [
        sql
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE tbl_name = 'tasks' "
            "AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, rowid"
        ).fetchall()
        if name not in ours
    ]
    conn.execute("PRAGMA legacy_alter_table = ON")
    try:
        conn.execute(
            "".join(f"DROP INDEX {name}; " for name in sorted(ours))
            + "ALTER TABLE tasks RENAME TO tasks_old;"
            + _TASKS
            + f"INSERT INTO tasks ({_ALL_TASK_COLUMNS}, key8) "
            f"SELECT {_ALL_TASK_COLUMNS}, {key8_column} FROM tasks_old ORDER BY id;"
            "DELETE FROM sqlite_sequence WHERE name = 'tasks';"
            "UPDATE sqlite_sequence SET name = 'tasks' WHERE name = 'tasks_old';"
            "DROP TABLE tasks_old;"
        )
    finally:
        conn.execute("PRAGMA legacy_alter_table = OFF")
    for sql in theirs:
        conn.execute(sql)


_V1_TASK_COLUMNS = (
    "id, task_type, key, label, priority, status, payload, expected_read_bytes, "
    "expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes, retry_count, last_error, "
    "created_at_ms, started_at_ms, requeue, requeue_priority, parent_id, fail_fast, group_key, "
    "phase"
)

TASK_COLUMNS = (
    f"{_V1_TASK_COLUMNS}, due_at_ms, retry_policy, max_retries, timeout_s, expires_at_ms, tags"
)
"""The columns of ``TaskRow``, in field order."""

TASK_WIDTH = len(TASK_COLUMNS.split(","))

TASK_COLUMNS_NO_PAYLOAD = TASK_COLUMNS.replace("payload,", "NULL,")
"""As ``TASK_COLUMNS`` with the payload left out (peek: the Dispatcher gets it from claim)."""

CLAIM_COLUMNS = (
    f"{TASK_COLUMNS_NO_PAYLOAD}, coalesce(length(payload), 0) + length(CAST(label AS BLOB)) "
    "+ coalesce(length(CAST(last_error AS BLOB)), 0), rate_deferred"
)
"""The rows a claim looks at: no payload (``task_row`` reads them), then what the claimed row
adds to the claim's reply (its payload and texts; ``length`` of a payload reads its size, not
its bytes), then whether a rate limit deferred it."""
CLAIM_SIZE = TASK_WIDTH
"""Position of that size in a row selected with ``CLAIM_COLUMNS``."""
CLAIM_DEFERRED = TASK_WIDTH + 1
"""Position of ``rate_deferred`` in a row selected with ``CLAIM_COLUMNS``."""

TASK_INTERNAL_COLUMNS = (
    "has_children, child_failures, run_started_at_ms, "
    "acc_read_bytes, acc_write_bytes, acc_net_rx_bytes, acc_net_tx_bytes"
)

_ALL_TASK_COLUMNS = f"{_V1_TASK_COLUMNS}, {TASK_INTERNAL_COLUMNS}"
"""The columns of ``tasks`` every version has but ``key8`` (version 1's): what a rebuild copies."""

HISTORY_COLUMNS = (
    "id, task_id, task_type, key, label, priority, status, payload, expected_read_bytes, "
    "expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes, actual_read_bytes, "
    "actual_write_bytes, actual_net_rx_bytes, actual_net_tx_bytes, retry_count, last_error, "
    "created_at_ms, started_at_ms, completed_at_ms, duration_ms, parent_id, fail_fast, group_key, "
    "result, tags"
)
"""The columns of ``HistoryRow``, in field order."""

HISTORY_INSERT = f"INSERT INTO history ({HISTORY_COLUMNS.removeprefix('id, ')}) "
"""The start of a statement that writes a history row: every column but its own ``id``."""


def task_row(t: tuple[Any, ...]) -> TaskRow:
    """A ``TaskRow`` from a tuple selected with ``TASK_COLUMNS``."""
    return TaskRow(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], bool(t[15]), t[16], t[17], bool(t[18]), t[19], t[20], t[21], retry_spec(t[22]),
        t[23], t[24], t[25], None if t[26] is None else json.loads(t[26]),
    )  # fmt: skip


def retry_spec(stored: Any) -> RetrySpec | None:
    """A task's retry policy as the ``retry_policy`` column keeps it (a JSON array of the
    fields of ``RetrySpec``)."""
    if stored is None:
        return None
    return RetrySpec(*json.loads(stored))


def stored_retry_spec(spec: RetrySpec | None) -> str | None:
    if spec is None:
        return None
    return json.dumps(
        [spec.strategy, spec.initial_s, spec.increment_s, spec.max_s, spec.multiplier,
         spec.max_retries]
    )  # fmt: skip


def history_row(t: tuple[Any, ...]) -> HistoryRow:
    """A ``HistoryRow`` from a tuple selected with ``HISTORY_COLUMNS``."""
    return HistoryRow(
        t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], t[10], t[11], t[12], t[13],
        t[14], t[15], t[16], t[17], t[18], t[19], t[20], t[21], t[22], bool(t[23]), t[24],
        t[25], None if t[26] is None else json.loads(t[26]),
    )  # fmt: skip


def index_tags(core: Any, task_id: int, stored: str | None) -> None:
    """Make the tags of task ``task_id`` (as its ``tags`` column holds them) findable."""
    if stored is not None:
        core.run(
            "INSERT INTO task_tags (task_id, key, value) SELECT ?, key, value FROM json_each(?)",
            (task_id, stored),
        )


def unindex_tags(core: Any, task_id: int) -> None:
    """Forget the tags of task ``task_id`` (it had some; its row goes, or they change)."""
    core.run("DELETE FROM task_tags WHERE task_id = ?", (task_id,))


def stored_tags(tags: dict[str, str] | None) -> str | None:
    """Tags as the ``tags`` columns keep them: a JSON object, keys sorted; None when none."""
    if not tags:
        return None
    return json.dumps(tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
