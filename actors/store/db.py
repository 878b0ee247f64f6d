"""``StoreDB``: the only code that touches SQLite. Pure methods, one per Store message kind.

One apsw connection in WAL mode (``synchronous=NORMAL``: a commit survives a crash of the
process, and WAL keeps readers of the file off the writer's back). Every write runs in an
immediate transaction; ``batch()`` lets the Store actor run many requests in one transaction
(group commit, see ``store_core.Batch``), and a failing request still rolls back only itself.
Times are epoch milliseconds from the injected clock. Every apsw error surfaces as
``DatabaseError``.

The rules are those of the spec's ``semantics.md``; the state changes live in ``store_submit``
(submitting) and ``store_children`` (finishing, cancelling, parents), the reads in
``store_queries``.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import apsw

from actors.store import lifecycle, queries
from actors.store.core import Batch, Core
from actors.store.schema import TASK_COLUMNS, TASK_COLUMNS_NO_PAYLOAD, migrate, task_row
from actors.store.submit import submit as apply_submissions
from bus.clock import Clock
from bus.errors import DatabaseError, InvalidRequest
from bus.kinds import (
    CountsReply,
    History,
    HistoryReply,
    HistoryRow,
    LookupReply,
    Outcome,
    Submission,
    TaskResult,
    TaskRow,
    ThroughputReply,
    Transition,
    TypeStatsReply,
)

BUSY_TIMEOUT_MS = 5_000
PRIVATE_MODE = 0o600
"""The database and its WAL and shm files hold payloads (secrets, maybe): their owner's only."""


def _make_private(path: str) -> None:
    """Create the database file with ``PRIVATE_MODE`` whatever the umask, and tighten files an
    earlier run left readable. SQLite gives the WAL and shm files it creates the database file's
    mode, so a private database keeps its companions private."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) != PRIVATE_MODE:
                os.chmod(path + suffix, PRIVATE_MODE)
        except FileNotFoundError:
            continue


class StoreDB:
    """The task database. Not thread-safe: the Store actor's thread is its only user."""

    def __init__(
        self,
        path: str,
        *,
        clock: Clock,
        retention_max_count: int | None = 10_000,
        retention_max_age_days: float | None = None,
        prune_every: int = 100,
        recover_running: bool = True,
    ) -> None:
        """``recover_running``: on open, put ``running`` rows back to ``pending`` (the whole
        process restarted, so nothing runs them). A Store restarted alone in a multi-process
        deployment passes False: hosts may still be running those tasks, and the Dispatcher
        releases the ones no host reports."""
        self.path = str(path)
        self.recover_running = recover_running
        try:
            _make_private(self.path)
            conn = apsw.Connection(self.path)
            conn.setbusytimeout(BUSY_TIMEOUT_MS)
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            conn.execute("PRAGMA synchronous = NORMAL")
        except (apsw.Error, OSError) as exc:
            raise DatabaseError(f"cannot open the task database {self.path!r}: {exc}") from exc
        self._core = Core(
            conn,
            clock,
            retention_max_count=retention_max_count,
            retention_max_age_days=retention_max_age_days,
            prune_every=prune_every,
        )
        self._closed = False
        try:
            with self._core.atomic():
                migrate(conn)
        except (ValueError, apsw.Error) as exc:  # a newer schema; a failed upgrade, undone
            conn.close()
            raise DatabaseError(f"{self.path}: {exc}") from exc
        self.recovered: list[Transition] = self.recover()
        """What recovery on open changed (resolved parents)."""

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def batch(self, isolated: bool = True) -> Iterator[Batch]:
        """One ``BEGIN IMMEDIATE`` transaction for many requests (see ``Batch``), committed when
        the block ends without error (rolled back when it raises, or when a request failed in a
        batch that is not ``isolated``).

        If the commit itself fails, everything is rolled back and ``DatabaseError`` raised.
        """
        if self._core.in_transaction:
            raise RuntimeError("StoreDB.batch() cannot be nested")
        tx = Batch(self._core, isolated)
        with self._core.atomic(undo=lambda: tx.undone):
            yield tx

    @property
    def retention_counters(self) -> dict[str, int]:
        return {
            "history_since_prune": self._core.terminal_since_prune,
            "history_pruned": self._core.pruned_total,
        }

    @property
    def statement_counters(self) -> dict[str, int]:
        """How often apsw's statement cache prepared a statement (parsed and planned) and how
        often it reused one prepared before, since the database was opened: a steady Store
        prepares nothing new. A statement SQLite itself prepares again, because a new binding
        expired it, shows in neither count (see ``store_core`` on ``+?``)."""
        cache = self._core.conn.cache_stats()
        return {"statements_prepared": cache["misses"], "statements_reused": cache["hits"]}

    # -- submitting --------------------------------------------------------------------------

    def submit(self, subs: Sequence[Submission], request_id: str | None = None) -> list[Outcome]:
        """Apply submissions in order in one transaction (all or nothing); one outcome each."""
        with self._core.atomic():
            return apply_submissions(self._core, subs, request_id)

    # -- queries -----------------------------------------------------------------------------

    def get_task(self, id: int | None = None, key: str | None = None) -> TaskRow | None:
        return queries.get_task(self._core, id, key)

    def list_tasks(self, status: str, limit: int = 100) -> list[TaskRow]:
        return queries.list_tasks(self._core, status, limit)

    def counts(self) -> CountsReply:
        return queries.counts(self._core)

    def lookup(self, key: str) -> LookupReply:
        return queries.lookup(self._core, key)

    def history(
        self,
        limit: int = 50,
        offset: int = 0,
        task_type: str | None = None,
        key: str | None = None,
        status: str | None = None,
    ) -> list[HistoryRow]:
        return queries.history(self._core, limit, offset, task_type, key, status)

    def history_page(self, query: History) -> HistoryReply:
        """``history`` as one reply: the rows that fit in a frame, and where the rest start."""
        return queries.history_page(self._core, query)

    def history_stats(self, task_type: str) -> TypeStatsReply:
        return queries.history_stats(self._core, task_type)

    def avg_throughput(self, task_type: str, n: int = 20) -> ThroughputReply:
        return queries.avg_throughput(self._core, task_type, n)

    def learned_io(
        self, types: Sequence[str], min_runs: int = 5, window: int = 20
    ) -> dict[str, list[float]]:
        return queries.learned_io(self._core, list(types), min_runs, window)

    def prune(self, keep: int | None = None, days: float | None = None) -> int:
        """Delete history beyond the newest ``keep`` rows and/or older than ``days``."""
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise InvalidRequest(f"keep must be a non-negative integer, got {keep!r}")
        if days is not None and (isinstance(days, bool) or days < 0):
            raise InvalidRequest(f"days must be a non-negative number, got {days!r}")
        with self._core.atomic():
            return self._core.prune(keep, days)

    def retention_tick(self) -> int:
        """Apply the retention policy now and forget request ids older than an hour."""
        with self._core.atomic():
            return self._core.retention_tick()

    # -- dispatching -------------------------------------------------------------------------

    def peek(self, limit: int, skip_groups: Sequence[str] = ()) -> list[TaskRow]:
        """The most urgent dispatchable rows (payload left out): finalize-ready parents first,
        then pending rows by (priority, id); rows of ``skip_groups`` are passed over."""
        queries.check_limit(limit)
        groups = list(dict.fromkeys(skip_groups))
        if not all(isinstance(group, str) for group in groups):
            raise InvalidRequest("skip_groups must be group names (strings)")
        skip = ""
        if groups:
            skip = f" AND (group_key IS NULL OR group_key NOT IN ({', '.join('?' * len(groups))}))"
        # INDEXED BY pins the partial indexes: the cost stays flat in the queue's depth.
        rows = self._core.all(
            f"SELECT {TASK_COLUMNS_NO_PAYLOAD} FROM tasks INDEXED BY tasks_finalize "
            f"WHERE status = 'pending' AND phase = 'finalize'{skip} ORDER BY priority, id LIMIT +?",
            (*groups, limit),
        )
        if len(rows) < limit:
            rows += queries.ready(self._core, TASK_COLUMNS_NO_PAYLOAD, limit - len(rows), groups)
        return [task_row(r) for r in rows]

    def claim(self, ids: Sequence[int], now_ms: int = 0) -> list[TaskRow]:
        """Move the rows still pending to running (``started_at = now``); the claimed rows, with
        payload, finalize first, then by (priority, id)."""
        now = now_ms or self._core.now()
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        if not all(-(2**63) <= task_id < 2**63 for task_id in wanted):
            raise InvalidRequest("an integer is outside SQLite's 64-bit range")
        # One statement for the whole claim, the ids as one JSON array.
        rows = self._core.all(
            "UPDATE tasks SET status = 'running', started_at_ms = ?, run_started_at_ms = "
            "CASE WHEN phase = 'execute' OR run_started_at_ms IS NULL THEN ? "
            "ELSE run_started_at_ms END "
            "WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending' "
            f"RETURNING {TASK_COLUMNS}",
            (now, now, json.dumps(wanted)),
        )
        claimed = [task_row(row) for row in rows]
        claimed.sort(key=lambda r: (r.phase != "finalize", r.priority, r.id))
        return claimed

    def claim_next(
        self,
        limit: int,
        max_priority: int = 255,
        skip_groups: Sequence[str] = (),
        now_ms: int = 0,
    ) -> tuple[list[TaskRow], bool]:
        """Peek and claim in one step, for a Dispatcher whose gate is open: the most urgent
        dispatchable rows (as ``peek``) up to ``limit``, stopping before the first row above
        ``max_priority`` (held by the throttle) or in a group (whose limit only the GroupLimiter
        knows). The claimed rows, and whether a grouped row stopped the walk."""
        queries.check_limit(limit)
        candidates = self.peek(limit, skip_groups)
        ids: list[int] = []
        held_by_group = False
        for row in candidates:
            if row.priority > max_priority:
                break
            if row.group_key is not None:
                held_by_group = True
                break
            ids.append(row.id)
        return (self.claim(ids, now_ms) if ids else []), held_by_group

    def finish(self, results: Sequence[TaskResult], max_retries: int = 3) -> list[Transition]:
        """Apply executor results (see ``store_children.finish``); one transition each."""
        with self._core.atomic():
            return lifecycle.finish(self._core, results, max_retries)

    def preempt(self, ids: Sequence[int]) -> list[TaskRow]:
        """Running rows → paused (``started_at`` cleared, retry_count unchanged)."""
        paused: list[TaskRow] = []
        with self._core.atomic():
            for task_id in dict.fromkeys(ids):
                row = self._core.one(
                    "UPDATE tasks SET status = 'paused', started_at_ms = NULL "
                    f"WHERE id = ? AND status = 'running' RETURNING {TASK_COLUMNS}",
                    (task_id,),
                )
                if row is not None:
                    paused.append(task_row(row))
        return paused

    def running_below(self, priority: int) -> list[int]:
        """Ids of the running tasks strictly less urgent than ``priority`` (preemption victims)."""
        rows = self._core.all(
            "SELECT id FROM tasks WHERE status = 'running' AND priority > ? ORDER BY id",
            (priority,),
        )
        return [int(r[0]) for r in rows]

    def resume_paused(self, threshold: int) -> list[TaskRow]:
        """Paused rows → pending, except those a running task at or above the preemption
        ``threshold`` and strictly more urgent would preempt again at once (anti-thrash)."""
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise InvalidRequest(f"threshold must be an integer, got {threshold!r}")
        with self._core.atomic():
            top = self._core.value(
                "SELECT min(priority) FROM tasks WHERE status = 'running' AND status != 'pending'"
            )
            limit, params = "", []
            if top is not None and top <= threshold:
                limit, params = " AND priority <= ?", [top]
            rows = self._core.all(
                "UPDATE tasks SET status = 'pending' "
                f"WHERE status = 'paused' AND status != 'pending'{limit} RETURNING {TASK_COLUMNS}",
                params,
            )
        resumed = [task_row(r) for r in rows]
        resumed.sort(key=lambda r: (r.priority, r.id))
        return resumed

    def cancel(self, id: int) -> list[Transition]:
        """Cancel a task and its children (deepest first); [] when no active task has ``id``."""
        with self._core.atomic():
            return lifecycle.cancel(self._core, id)

    def release(
        self,
        ids: Sequence[int],
        error: str = "executor host lost",
        max_retries: int | None = None,
        *,
        count_retry: bool = True,
    ) -> list[Transition]:
        """Running rows of a lost host → pending with retry_count + 1 and ``last_error``.

        With ``max_retries``, a row that has already used its retries fails instead, so a task
        that keeps crashing its host cannot loop forever. One transition per id (``ignored`` for
        rows not running).
        """
        out: list[Transition] = []
        with self._core.atomic():
            for task_id in dict.fromkeys(ids):
                task = lifecycle.load(self._core, task_id)
                if task is None or task.row.status != "running":
                    out.append(Transition(id=task_id, result="ignored"))
                elif (
                    count_retry and max_retries is not None and task.row.retry_count >= max_retries
                ):
                    lifecycle.fail(self._core, task, error, self._core.now(), out)
                else:
                    self._core.run(
                        "UPDATE tasks SET status = 'pending', retry_count = retry_count + ?, "
                        "last_error = ?, started_at_ms = NULL WHERE id = ?",
                        (1 if count_retry else 0, error, task_id),
                    )
                    retry = lifecycle.transition(task.row, "retry", error=error, was_running=True)
                    out.append(retry)
        return out

    # -- lifecycle of the database -----------------------------------------------------------

    def recover(self) -> list[Transition]:
        """After a restart: running rows → pending (retry_count kept); waiting parents whose
        children have all finished are resolved (finalize-ready or failed)."""
        with self._core.atomic():
            if self.recover_running:
                self._core.run(
                    "UPDATE tasks SET status = 'pending', started_at_ms = NULL "
                    "WHERE status = 'running' AND status != 'pending'"
                )
            return lifecycle.resolve_waiting(self._core)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        conn = self._core.conn
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as exc:
            conn.close()
            raise DatabaseError(f"closing {self.path}: {exc}") from exc
        conn.close()
