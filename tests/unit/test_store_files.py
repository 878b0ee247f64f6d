"""The files the Store writes: its database, the WAL and the WAL's index, never a temporary one.

SQLite keeps the pages a statement or a savepoint may have to undo in a sub-journal, and by
default moves it to a temporary file once it outgrows 64 KiB: a temporary directory that is
full or not writable would then fail commits the database itself had room for, and each
such file costs an open, writes and a close inside the commit. Seen through a VFS shim that
records every file SQLite opens on the real one.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from store_support import ok, sub

from actors.store.db import StoreDB
from bus.clock import FakeClock
from bus.kinds import ClaimSpec

pytestmark = pytest.mark.timeout(60)

_TEMPORARY = (
    apsw.SQLITE_OPEN_SUBJOURNAL
    | apsw.SQLITE_OPEN_TEMP_JOURNAL
    | apsw.SQLITE_OPEN_TEMP_DB
    | apsw.SQLITE_OPEN_TRANSIENT_DB
)


class Recorder(apsw.VFS):
    """The default VFS while a test runs: the flags of each file opened, then the unix VFS."""

    def __init__(self) -> None:
        self.opened: list[int] = []
        super().__init__("taskmill-test-recorder", base="unix", makedefault=True)

    def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:
        self.opened.append(flags[0])
        return apsw.VFSFile("unix", name, flags)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    vfs = Recorder()
    yield vfs
    vfs.unregister()


def test_a_large_batch_of_results_writes_no_temporary_file(
    recorder: Recorder, tmp_path: Path
) -> None:
    db = StoreDB(str(tmp_path / "tasks.db"), clock=FakeClock())
    try:
        rng = random.Random(7)  # keys in no order: each result touches pages of its own
        db.submit([sub(f"key-{rng.random()}", 100) for _ in range(300)])
        _, running, _ = db.finish_and_claim([], 3, ClaimSpec(300))
        transitions, _, _ = db.finish_and_claim([ok(row.id) for row in running], 3, None)
    finally:
        db.close()
    assert [t.result for t in transitions] == ["completed"] * 300
    assert recorder.opened, "the recorder saw the database opened"
    assert [hex(flags) for flags in recorder.opened if flags & _TEMPORARY] == []
