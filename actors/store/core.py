"""The one SQLite connection of the Store, its transactions, and the history writer.

``Core`` is shared by the modules that make up ``StoreDB`` (queries, lifecycle, children): it runs
statements (every apsw error becomes ``DatabaseError``), nests transactions (``BEGIN IMMEDIATE``
outermost, a ``SAVEPOINT`` inside), writes history rows and applies the retention policy every
``prune_every`` history rows. ``Batch`` runs many requests in one transaction (group commit).

A value the query planner could read is bound as ``+?`` (a ``LIMIT`` or an ``OFFSET``, a column
compared for equality ahead of an ``ORDER BY`` the index gives): SQLite reads the value bound to
a bare ``?`` there when it plans, so each new binding expires the statement and its next run
parses and plans it again, which costs many times the run itself. The unary ``+`` hides the
value from the planner, as it hides a column from index choice; the plans stay the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import apsw

from actors.store.schema import HISTORY_INSERT
from bus.clock import Clock, now_ms
from bus.errors import DatabaseError, InvalidRequest

log = logging.getLogger("taskmill.store")

T = TypeVar("T")

REQUEST_TTL_MS = 3_600_000
"""How long a Submit's ``request_id`` is remembered (client retries come within seconds)."""

Params = Sequence[Any] | dict[str, Any]


class Core:
    """The connection, the clock and the retention policy. Used from the actor's thread only."""

    def __init__(
        self,
        conn: apsw.Connection,
        clock: Clock,
        *,
        retention_max_count: int | None,
        retention_max_age_days: float | None,
        prune_every: int,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.retention_max_count = retention_max_count
        self.retention_max_age_days = retention_max_age_days
        self.prune_every = max(1, prune_every)
        self.terminal_since_prune = 0
        self.pruned_total = 0
        self._savepoint_depth = 0
        self.rollbacks = 0
        """Counts rollbacks: what was read from the database and kept in memory is kept along
        with this count, and read again once it moved (``cached``)."""
        self._cache: dict[str, tuple[int, Any]] = {}
        self.request_scope = False
        """True while one request of a batch runs inside its savepoint."""

    def now(self) -> int:
        return now_ms(self.clock)

    # -- statements --------------------------------------------------------------------------

    def all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except apsw.Error as exc:
            raise _db_error(exc, sql) from exc
        except OverflowError:
            raise InvalidRequest("an integer is outside SQLite's 64-bit range") from None

    def one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Params = ()) -> Any:
        row = self.one(sql, params)
        return None if row is None else row[0]

    def run(self, sql: str, params: Params = ()) -> int:
        """Execute a write; the number of rows it changed."""
        try:
            self.conn.execute(sql, params).fetchall()
            return int(self.conn.changes())
        except apsw.Error as exc:
            raise _db_error(exc, sql) from exc
        except OverflowError:
            raise InvalidRequest("an integer is outside SQLite's 64-bit range") from None

    def insert(self, sql: str, params: Params = ()) -> tuple[int, int]:
        """Execute an ``INSERT``: the number of rows it inserted and the last one's rowid
        (meaningless when it inserted none)."""
        changed = self.run(sql, params)
        return changed, int(self.conn.last_insert_rowid())

    def many(self, sql: str, rows: Sequence[Params]) -> None:
        try:
            self.conn.executemany(sql, rows)
        except apsw.Error as exc:
            raise _db_error(exc, sql) from exc

    def cached(self, name: str, load: Callable[[], T]) -> T:
        """``load()``, kept until ``forget(name)`` or a rollback: for what the Store reads on
        every claim and changes rarely (the group policy)."""
        entry = self._cache.get(name)
        if entry is None or entry[0] != self.rollbacks:
            entry = (self.rollbacks, load())
            self._cache[name] = entry
        value: T = entry[1]
        return value

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    # -- transactions ------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    @contextmanager
    def atomic(self, undo: Callable[[], bool] | None = None) -> Iterator[None]:
        """All or nothing: a ``BEGIN IMMEDIATE`` transaction, or a savepoint inside one (none
        inside a request's own savepoint: that one already undoes the request as a whole).
        The outermost transaction is rolled back rather than committed when ``undo()`` says so."""
        if self.in_transaction:
            if self.request_scope:
                yield
                return
            with self.savepoint():
                yield
            return
        self.run("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        if undo is not None and undo():
            self._rollback()
        else:
            self.commit()

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint: an exception inside rolls back only what was done inside.

        Named by its depth, not by a counter: savepoints nest strictly, so the names open at
        any moment are distinct, and the statements that open and close them are the same few
        texts every time. A new name per savepoint would make each ``SAVEPOINT`` and
        ``RELEASE`` a statement the connection had never seen: prepared afresh, and pushing the
        statements that are used all the time (the task ``INSERT``, the claim) out of apsw's
        statement cache, to be prepared afresh too."""
        if not self.in_transaction:
            # SQLite rolled the transaction back (disk full, I/O error): a SAVEPOINT now would
            # open a transaction of its own, and its RELEASE commit what follows on its own.
            raise DatabaseError("the transaction was rolled back by the database")
        self._savepoint_depth += 1
        name = f"sp{self._savepoint_depth}"
        try:
            self.run(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                self.rollbacks += 1
                try:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                except apsw.Error:
                    log.exception("rolling back savepoint %s failed", name)
                raise
            self.run(f"RELEASE {name}")
        finally:
            self._savepoint_depth -= 1

    def commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except apsw.Error as exc:
            self._rollback()
            raise _db_error(exc, "COMMIT") from exc

    def _rollback(self) -> None:
        self.rollbacks += 1
        if self.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except apsw.Error:
                log.exception("rollback failed")

    # -- history and retention ---------------------------------------------------------------

    def write_history(
        self,
        task_id: int,
        status: str,
        *,
        completed_at_ms: int,
        started_at_ms: int | None,
        error: str | None = None,
        actual: Sequence[int] = (0, 0, 0, 0),
        result: bytes | None = None,
    ) -> None:
        """Copy an active row into history as a terminal run (the caller deletes or resets it).

        ``actual`` is this run's reported IO; what the run's ``execute`` reported before is
        added. ``error`` replaces ``last_error`` when given.
        """
        duration = None if started_at_ms is None else max(0, completed_at_ms - started_at_ms)
        self.run(
            HISTORY_INSERT
            + "SELECT id, task_type, key, label, priority, ?, payload, expected_read_bytes, "
            "expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes, "
            "acc_read_bytes + ?, acc_write_bytes + ?, acc_net_rx_bytes + ?, acc_net_tx_bytes + ?, "
            "retry_count, coalesce(?, last_error), created_at_ms, ?, ?, ?, parent_id, fail_fast, "
            "group_key, ?, tags FROM tasks WHERE id = ?",
            (status, *actual, error, started_at_ms, completed_at_ms, duration, result, task_id),
        )
        self.history_written()

    def history_written(self) -> None:
        """Count a history row written; apply the retention policy every ``prune_every``."""
        self.terminal_since_prune += 1
        if self.terminal_since_prune >= self.prune_every:
            self.retention_tick()

    def retention_tick(self) -> int:
        """Apply the retention policy and forget old request ids; history rows deleted."""
        self.terminal_since_prune = 0
        deleted = self.prune(self.retention_max_count, self.retention_max_age_days)
        self.run("DELETE FROM requests WHERE at_ms < ?", (self.now() - REQUEST_TTL_MS,))
        return deleted

    def prune(self, keep: int | None, days: float | None) -> int:
        """Delete history beyond the newest ``keep`` rows and/or older than ``days``."""
        deleted = 0
        if days is not None:
            cutoff = self.now() - int(days * 86_400_000)
            deleted += self.run("DELETE FROM history WHERE completed_at_ms < ?", (cutoff,))
        if keep is not None:
            # The newest ``keep`` by (completed_at_ms, id); everything older goes.
            edge = self.one(
                "SELECT completed_at_ms, id FROM history "
                "ORDER BY completed_at_ms DESC, id DESC LIMIT 1 OFFSET +?",
                (max(0, keep - 1),),
            )
            if keep <= 0:
                deleted += self.run("DELETE FROM history")
            elif edge is not None:
                deleted += self.run(
                    "DELETE FROM history WHERE completed_at_ms < ? "
                    "OR (completed_at_ms = ? AND id < ?)",
                    (edge[0], edge[0], edge[1]),
                )
        self.pruned_total += deleted
        return deleted


class Batch:
    """One transaction shared by many requests, run one after another by ``run``.

    ``isolated``: each request in its own savepoint, so a failing one rolls back only its own
    writes. Otherwise there are no savepoints, and a failing request marks the whole transaction
    ``undone``: it is rolled back instead of committed. That undoes the same writes for two
    statements less per request, and no sub-journal (SQLite's copy of the pages a savepoint
    changes, kept in memory); the Store runs a batch so first, and
    again isolated only when a request of it failed.
    """

    def __init__(self, core: Core, isolated: bool = True) -> None:
        self._core = core
        self._isolated = isolated
        self.undone = False
        """A request failed outside a savepoint: the transaction is rolled back, not committed."""

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` as one request of the batch (in a savepoint when isolated)."""
        if not self._core.in_transaction:
            # SQLite rolled the whole transaction back (disk full, I/O error): refuse the rest
            # rather than run them in autocommit mode.
            raise DatabaseError("the batch's transaction was rolled back by the database")
        with self._core.savepoint() if self._isolated else nullcontext():
            self._core.request_scope = True
            try:
                return fn()
            except BaseException:
                if not self._isolated:
                    self.undone = True
                raise
            finally:
                self._core.request_scope = False


def _db_error(exc: apsw.Error, sql: str) -> DatabaseError:
    statement = " ".join(sql.split())[:80]
    return DatabaseError(f"database error ({type(exc).__name__}: {exc}) in: {statement}")
