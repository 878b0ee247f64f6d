"""WAL checkpoints on a thread of their own, so that the Store's thread does not stop to copy.

A checkpoint copies the pages the WAL holds back into the database file. SQLite's own rule (the
commit that crosses the threshold does it) stops the Store's thread for the whole copy: about
a third of what a busy drain's commits cost, and more when the pages that changed lie apart,
as they do when fair shares take the heads of many groups at once. Here a thread with its own
connection does the copying with PASSIVE checkpoints, which never wait for the Store and never
hold up its writes, pass after pass until it has nearly caught up with the commits made
meanwhile; the Store's next commit then copies what is left (what was committed during the
last pass). Only then can SQLite start the WAL over, at the next write: it needs a checkpoint
that copied every frame, which only the single writer can make sure of between two of its
transactions (a round that ends while the Store is idle copies everything itself).

The thread writes no rows: the Store stays the only writer of the database. It starts with
the first checkpoint that is due, so a small database never has one. If the thread falls far
behind, or cannot run at all, the Store's commits checkpoint as SQLite's rule would; a failed
copy (a full disk) loses nothing, the WAL keeping every commit until the next one.
"""

from __future__ import annotations

import logging
import threading

import apsw

log = logging.getLogger(__name__)

CHECKPOINT_PAGES = 4_000
"""The WAL is copied back into the database once it holds this many pages (about 16 MB), four
times SQLite's default. A checkpoint writes each page once however many commits changed it, and
a drain changes the same pages again and again (the queue's head, the indexes' ends, and under
fair shares the heads of many groups at once): a checkpoint every 1,000 pages copied each of
them up to four times as often."""
BEHIND = 4
"""A WAL this many times the threshold means the thread is not keeping up: the Store's commits
checkpoint."""
TAIL_PAGES = 200
"""The thread has caught up once a pass found fewer new pages than this."""
PASSES = 4
"""Passes in one round of the thread at most: a writer that commits faster than the thread
copies gets the rest to copy itself, so that the WAL always starts over."""


class Checkpointer:
    """The Store connection's WAL hook (``on_commit``) and the thread it wakes."""

    def __init__(self, path: str, pages: int = CHECKPOINT_PAGES) -> None:
        self._path = path
        self._pages = pages
        self._wake = threading.Event()
        self._caught_up = threading.Event()
        self._stopping = False
        self._hurry = False
        """The Store needs the WAL to itself: the thread ends its round after this pass."""
        self._alone = False
        """The thread could not start or open its connection: the Store checkpoints as SQLite
        would."""
        self._thread: threading.Thread | None = None

    def on_commit(self, conn: apsw.Connection, name: str, pages: int) -> int:
        """After each commit, in the Store's thread: ``pages``, the WAL's length. Never raises
        (a hook's exception would fail the commit it follows)."""
        if pages < self._pages:
            if self._caught_up.is_set():  # a round that ended while the Store was idle: the
                self._caught_up.clear()  # WAL started over since, and is the thread's again
            return apsw.SQLITE_OK
        if self._caught_up.is_set() or self._alone or pages >= BEHIND * self._pages:
            self._caught_up.clear()
            # None: the thread's pass is running; it ends its round after it.
            self._hurry = _checkpoint(conn, "the Store's") is None
            return apsw.SQLITE_OK
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="taskmill-checkpoint", daemon=True
            )
            try:
                self._thread.start()
            except Exception as exc:  # out of threads: never fail the commit this follows
                log.warning("WAL checkpoints stay on the Store's thread: %s", exc)
                self._alone = True
                return apsw.SQLITE_OK
        self._wake.set()
        return apsw.SQLITE_OK

    def close(self) -> None:
        """Stop the thread (it finishes the pass it is in). Idempotent."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except apsw.Error as exc:
            log.warning("WAL checkpoints stay on the Store's thread: %s", exc)
            self._alone = True
            return
        try:
            while True:
                self._wake.wait()
                if self._stopping:
                    return
                caught_up = self._catch_up(conn)
                self._wake.clear()  # the commits made meanwhile asked for this same round
                if self._stopping:  # ``close`` may have woken the thread just before
                    return
                if caught_up:
                    self._caught_up.set()
        finally:
            conn.close()

    def _connect(self) -> apsw.Connection:
        conn = apsw.Connection(self._path)
        # A new connection opens the WAL only when it first reads: until then a checkpoint
        # finds no WAL and copies nothing.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        return conn

    def _catch_up(self, conn: apsw.Connection) -> bool:
        """Copy pass after pass until a pass finds little new (``PASSES`` at most); whether
        the round had a checkpoint's worth to copy (a late wake-up finds the WAL started over,
        and must not have the Store copy a whole WAL the next time it is long)."""
        last = _checkpoint(conn, "the checkpoint thread's")
        if last is None or last < self._pages:
            return False
        for _ in range(PASSES - 1):
            if self._stopping:
                return False
            if self._hurry:
                return True
            copied = _checkpoint(conn, "the checkpoint thread's")
            if copied is None or copied < last:  # busy, or the Store started the WAL over
                return False
            if copied - last <= TAIL_PAGES:
                return True
            last = copied
        return True


def _checkpoint(conn: apsw.Connection, whose: str) -> int | None:
    """A PASSIVE checkpoint: the WAL's length in pages, all of them copied that were not in use
    by a reader; None if another checkpoint was running or it failed (logged: the WAL keeps
    every commit, and the next checkpoint tries again)."""
    try:
        wal, _ = conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
    except apsw.BusyError:
        return None
    except apsw.Error as exc:
        log.warning("%s WAL checkpoint failed: %s", whose, exc)
        return None
    return int(wal)
