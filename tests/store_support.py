"""Helpers shared by the Store tests: keys, submissions, results, and a database on a file."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import zmq

from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.clock import FakeClock
from bus.endpoints import ensure_run_dir, inproc, ipc, new_namespace
from bus.hosting import ActorThread
from bus.kinds import Submission, TaskResult, TaskRow


def key(name: str) -> str:
    """A valid 64-hex dedup key derived from a readable name."""
    return hashlib.sha256(name.encode()).hexdigest()


def sub(name: str, priority: int = 128, *, task_type: str = "t", **fields: Any) -> Submission:
    return Submission(task_type, key(name), name, priority, **fields)


def open_db(path: Path, clock: FakeClock, **options: Any) -> StoreDB:
    return StoreDB(str(path / "tasks.db"), clock=clock, **options)


def raw(path: Path) -> apsw.Connection:
    """A second connection to ``open_db``'s file, to inspect it or to fake a crash's leftovers."""
    return apsw.Connection(str(path / "tasks.db"))


@contextmanager
def compilations(db: StoreDB) -> Iterator[list[int]]:
    """Count SQLite's work of preparing statements on ``db``'s connection while inside (the
    count is ``[0]`` of what it yields): the authorizer is called only while a statement is
    prepared, or prepared again because it expired, never while a prepared one runs. Setting
    it expires every prepared statement: compare counts taken inside."""
    conn = db._core.conn  # the connection is the Store's own; only this probe reaches in
    count = [0]

    def authorizer(*_: Any) -> int:
        count[0] += 1
        return apsw.SQLITE_OK

    conn.authorizer = authorizer
    try:
        yield count
    finally:
        conn.authorizer = None


def vm_steps(db: StoreDB, action: Callable[[], object]) -> int:
    """SQLite virtual-machine steps an action costs (a deterministic measure of work)."""
    steps = 0

    def count() -> bool:
        nonlocal steps
        steps += 1
        return False

    conn = db._core.conn  # the connection is the Store's own; only this probe reaches in
    conn.set_progress_handler(count, 1)
    try:
        action()
    finally:
        conn.set_progress_handler(None)
    return steps


def ok(task_id: int, **fields: Any) -> TaskResult:
    return TaskResult(task_id, "ok", **fields)


def error(task_id: int, message: str = "boom", *, retryable: bool = False, **f: Any) -> TaskResult:
    return TaskResult(task_id, "error", message, retryable, **f)


def insert(db: StoreDB, *names: str, priority: int = 128, **fields: Any) -> list[int]:
    """Insert tasks and return their ids (asserting each was new)."""
    outcomes = db.submit([sub(n, priority, **fields) for n in names])
    assert [o.kind for o in outcomes] == ["inserted"] * len(names)
    return [o.id for o in outcomes if o.id is not None]


def run(db: StoreDB, *names: str, priority: int = 128, **fields: Any) -> list[int]:
    """Insert tasks and claim them (running)."""
    ids = insert(db, *names, priority=priority, **fields)
    claimed = db.claim(ids)
    assert sorted(r.id for r in claimed) == sorted(ids)
    return ids


def row(db: StoreDB, task_id: int) -> TaskRow:
    found = db.get_task(task_id)
    assert found is not None, f"task {task_id} is not active"
    return found


# -- a real Store actor -----------------------------------------------------------------------


@dataclass(frozen=True)
class StoreEndpoints:
    store: str
    control: str


def store_endpoints(transport: str, tmp_path: Path) -> StoreEndpoints:
    """Endpoints for one Store on ``inproc`` or ``ipc`` (sockets in a 0700 dir under tmp_path)."""
    if transport == "inproc":
        namespace = new_namespace()
        names = [inproc(namespace, n) for n in ("store", "store-control")]
    else:
        run_dir = ensure_run_dir(tmp_path / "run")
        names = [ipc(run_dir, n) for n in ("store", "control")]
    return StoreEndpoints(*names)


@contextmanager
def running_store(
    context: zmq.Context[Any], endpoints: StoreEndpoints, db_path: Path, **options: Any
) -> Iterator[StoreActor]:
    """A Store actor in its thread, stopped (and its crash re-raised) on exit."""
    clock = options.pop("clock", None) or FakeClock()
    urgent = options.pop("urgent_priority", 0)
    actor = StoreActor(
        lambda: StoreDB(str(db_path / "tasks.db"), clock=clock, **options),
        endpoints.store,
        urgent_priority=urgent,
    )
    thread = ActorThread(actor, context, endpoints.control, clock=clock).start()
    try:
        yield actor
    finally:
        thread.stop()
