"""The Dispatcher's recovery decisions, pure (no sockets): adopting the runs hosts report after a
restart, and finding running rows nobody runs (orphans) to release."""

from __future__ import annotations

from collections.abc import Iterable

from actors.dispatcher.state import DispatcherCore, Running
from bus.kinds import TaskRow


def adopt(
    core: DispatcherCore, identity: bytes, pairs: dict[int, int], rows: dict[int, TaskRow]
) -> list[int]:
    """Take over runs a host reports (after a restart); return the ids it should cancel."""
    host = core.hosts._hosts.get(identity)
    stale: list[int] = []
    for task_id, run_id in pairs.items():
        row = rows.get(task_id)
        if host is None or row is None or task_id in core.running:
            stale.append(task_id)
            continue
        core.hosts.assign(host, task_id)
        core.running[task_id] = Running(row, row.started_at_ms or core.now_ms(), run_id)
    return stale


def orphans(
    core: DispatcherCore, rows: Iterable[TaskRow], grace_s: float, pending: Iterable[int] = ()
) -> list[int]:
    """Running rows nobody runs: unknown here, with no result on its way to the Store
    (``pending``), and claimed more than ``grace_s`` ago."""
    cutoff = core.now_ms() - int(grace_s * 1000)
    waiting = set(pending)
    return [
        r.id
        for r in rows
        if r.id not in core.running
        and r.id not in core._tentative
        and r.id not in waiting
        and (r.started_at_ms or 0) < cutoff
    ]
