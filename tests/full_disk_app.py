"""The system tests' application, on a disk a test can fill: where no tmpfs can be mounted.

A process that loads it (``TASKMILL_APP=tests.full_disk_app:app``) gets SQLite's default VFS
wrapped: every call goes to the usual one, except that while a file named ``FULL_FLAG`` exists
in a database's directory, every write to that database's files (the database, its WAL) fails
with ``SQLITE_FULL``, the error a disk without a free block gives. SQLite, the real one, handles
it as it would a full disk: the transaction is rolled back, a checkpoint fails, and writes work
again once the file is gone. The fault is at the edge, the file system, not in taskmill.
"""

from __future__ import annotations

import os
from typing import Any

import apsw

from tests.system_app import app

__all__ = ["FULL_FLAG", "app"]

FULL_FLAG = "disk-full"
"""The file whose presence, beside a database, makes its disk full."""

_BASE = apsw.vfs_names()[0]
"""The VFS SQLite used before this one (``unix``), which does the work."""


class _File(apsw.VFSFile):  # type: ignore[misc]
    def __init__(self, name: Any, flags: list[int]) -> None:
        super().__init__(_BASE, name, flags)
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        self._flag = os.path.join(os.path.dirname(path), FULL_FLAG) if path else None

    def xWrite(self, data: bytes, offset: int) -> None:
        if self._flag is not None and os.path.exists(self._flag):
            raise apsw.FullError("database or disk is full (no space left on the device)")
        super().xWrite(data, offset)


class _FillableDisk(apsw.VFS):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__("taskmill-test-fillable", _BASE, makedefault=True)

    def xOpen(self, name: Any, flags: list[int]) -> _File:
        return _File(name, flags)


_VFS = _FillableDisk()
