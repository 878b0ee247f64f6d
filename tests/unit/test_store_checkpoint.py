"""WAL checkpoints on the Store's checkpoint thread (actors/store/checkpoint.py), on a real
file: the WAL is copied back and starts over while the writer keeps committing, the writer
copies only what the thread left, and closing never waits on a thread that will not wake."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import apsw
import pytest

from actors.store import checkpoint
from actors.store.checkpoint import BEHIND, Checkpointer

pytestmark = pytest.mark.timeout(60)

PAGES = 64


@contextmanager
def writer(path: Path, pages: int = PAGES) -> Iterator[tuple[apsw.Connection, Checkpointer]]:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    checkpointer = Checkpointer(str(path), pages)
    conn.set_wal_hook(checkpointer.on_commit)
    try:
        yield conn, checkpointer
    finally:
        checkpointer.close()
        conn.close()


def commit(conn: apsw.Connection, first: int) -> None:
    """One transaction that writes about a dozen pages."""
    with conn:
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)", [(first + i, os.urandom(3_000)) for i in range(4)]
        )


@contextmanager
def checkpoints() -> Iterator[list[tuple[str, int | None]]]:
    """Every PASSIVE checkpoint made, as (the thread that made it, the WAL's length it saw)."""
    made: list[tuple[str, int | None]] = []
    real = checkpoint._checkpoint

    def spy(conn: apsw.Connection, whose: str) -> int | None:
        result = real(conn, whose)
        made.append((threading.current_thread().name, result))
        return result

    checkpoint._checkpoint = spy
    try:
        yield made
    finally:
        checkpoint._checkpoint = real


def run(
    conn: apsw.Connection, checkpointer: Checkpointer, commits: int, first: int = 0
) -> list[int]:
    lengths: list[int] = []

    def hook(c: apsw.Connection, name: str, pages: int) -> int:
        lengths.append(pages)
        return checkpointer.on_commit(c, name, pages)

    conn.set_wal_hook(hook)
    for n in range(first, first + commits):
        commit(conn, 4 * n)
    return lengths


def restarts(lengths: list[int]) -> int:
    return sum(1 for a, b in pairwise(lengths) if b < a)


def test_the_thread_copies_the_wal_back_and_it_starts_over(tmp_path: Path) -> None:
    with checkpoints() as made, writer(tmp_path / "x.db") as (conn, checkpointer):
        lengths = run(conn, checkpointer, 600)
        rows = conn.execute("SELECT count(*) FROM t").fetchall()[0][0]
    assert rows == 2_400
    assert restarts(lengths) >= 5
    # Never left to grow: past four times the threshold the writer copies it all itself, at
    # its first commit that does not find a pass of the thread's running (the thread ends its
    # round after that pass).
    assert max(lengths) < 3 * BEHIND * PAGES
    threads = [name for name, _ in made if name == "taskmill-checkpoint"]
    own = [name for name, pages in made if name != "taskmill-checkpoint" and pages is not None]
    assert threads, "the checkpoint thread made no checkpoint"
    # The writer copies what is left after each round of the thread's (and when a round is
    # still running as the WAL grows past four times the threshold): a few, not every commit.
    assert len(own) <= restarts(lengths) + 2, (len(own), restarts(lengths))


def test_a_round_that_ended_while_the_writer_was_idle_leaves_the_next_wal_to_the_thread(
    tmp_path: Path,
) -> None:
    """The thread's round copies everything while no commit comes; the WAL starts over at the
    next one. When it is long again, the thread copies it, not the writer."""
    with checkpoints() as made, writer(tmp_path / "x.db") as (conn, checkpointer):
        n = 0
        while checkpointer._thread is None:  # the first checkpoint due starts the thread
            commit(conn, 4 * n)
            n += 1
        assert checkpointer._caught_up.wait(10)  # its round ended, the writer idle meanwhile
        made.clear()
        while not made:
            commit(conn, 4 * n)
            n += 1
    assert made[0][0] == "taskmill-checkpoint", made[:3]


def test_without_its_thread_the_writer_checkpoints_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_open(self: Checkpointer) -> apsw.Connection:
        raise apsw.CantOpenError("no second connection here")

    monkeypatch.setattr(Checkpointer, "_connect", cannot_open)
    with checkpoints() as made, writer(tmp_path / "x.db") as (conn, checkpointer):
        n = 0
        while checkpointer._thread is None:  # the first checkpoint due starts the thread
            commit(conn, 4 * n)
            n += 1
        checkpointer._thread.join(10)  # ... which finds it cannot connect, and ends
        lengths = run(conn, checkpointer, 300, first=n)
    assert restarts(lengths) >= 3
    assert max(lengths) < 2 * PAGES
    assert all(name != "taskmill-checkpoint" for name, _ in made)


def test_closing_while_the_thread_copies_returns(tmp_path: Path) -> None:
    """``close`` wakes the thread to stop it; a round that ends after that wake must not
    clear it and go back to sleep (closing then waited forever)."""
    copying, release = threading.Event(), threading.Event()
    real = checkpoint._checkpoint

    def slow(conn: apsw.Connection, whose: str) -> int | None:
        if threading.current_thread().name == "taskmill-checkpoint":
            copying.set()
            release.wait(10)
        return real(conn, whose)

    checkpoint._checkpoint = slow
    try:
        with writer(tmp_path / "x.db") as (conn, checkpointer):
            n = 0
            while not copying.is_set():
                commit(conn, 4 * n)
                n += 1
            closed = threading.Thread(target=checkpointer.close)
            closed.start()
            while not checkpointer._stopping:  # close has asked the thread to stop
                closed.join(0.01)
            release.set()
            closed.join(10)
            assert not closed.is_alive()
    finally:
        checkpoint._checkpoint = real
