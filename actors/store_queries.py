"""The Store's read-only queries: tasks, counts, lookup, history and what history teaches.

Pure functions of a ``Core``; each is a single consistent read (inside the caller's transaction
when there is one).
"""

from __future__ import annotations

from typing import Any

from actors.store_core import Core
from actors.store_schema import (
    HISTORY_COLUMNS,
    HISTORY_STATUSES,
    TASK_COLUMNS,
    TASK_STATUSES,
    history_row,
    key8,
    task_row,
)
from bus.errors import InvalidRequest
from bus.kinds import CountsReply, HistoryRow, LookupReply, TaskRow, ThroughputReply, TypeStatsReply

MAX_LIMIT = 100_000


def check_limit(limit: int, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"{name} must be an integer in 0..{MAX_LIMIT}, got {limit!r}")
    return limit


def get_task(core: Core, id: int | None = None, key: str | None = None) -> TaskRow | None:
    if id is not None:
        row = core.one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (id,))
    elif key is not None:
        row = core.one(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE key8 = ? AND key = ?", (key8(key), key)
        )
    else:
        raise InvalidRequest("get_task needs an id or a key")
    return None if row is None else task_row(row)


_PENDING = "WHERE status = 'pending' AND group_key"
_UNGROUPED = f"FROM tasks INDEXED BY tasks_ready_ungrouped {_PENDING} IS NULL"
_GROUPED = f"FROM tasks INDEXED BY tasks_ready_grouped {_PENDING} IS NOT NULL"
_BY_GROUP = f"FROM tasks INDEXED BY tasks_ready_by_group {_PENDING} IS NOT NULL"
_ORDER = " ORDER BY priority, id LIMIT +?"
_WINDOW = 64
"""Grouped rows (beyond the ``limit`` asked for) a peek that skips groups reads in queue order
before it looks group by group."""
_MAX_GROUPS = 256
"""Groups a peek looks at one by one before it walks the grouped order after all."""


def _queue_order(rows: list[tuple[Any, ...]], limit: int) -> list[tuple[Any, ...]]:
    """The first ``limit`` of rows selected with the task columns, by (priority, id)."""
    rows.sort(key=lambda r: (r[4], r[0]))
    return rows[:limit]


def ready(core: Core, columns: str, limit: int, skip_groups: list[str]) -> list[tuple[Any, ...]]:
    """The first ``limit`` pending rows to execute by (priority, id), none of ``skip_groups``
    (``columns``: ``TASK_COLUMNS`` or a variant of it).

    Ungrouped and grouped rows have an index each, so the full groups' rows never stand in the
    way of the ungrouped ones. Among grouped rows, the full groups' may fill the top of the
    order (a backlog for a host at its limit): the first ``_WINDOW`` rows of that order are read,
    and if too few of them are of other groups, each other group's first rows are read from
    ``tasks_ready_by_group`` instead: the cost grows with the number of groups, not with the
    full groups' backlog. Past ``_MAX_GROUPS`` groups the grouped order is walked to the end.
    """
    execute = f"SELECT {columns} {{}} AND phase = 'execute'"
    rows = core.all(execute.format(_UNGROUPED) + _ORDER, (limit,))
    if not skip_groups:
        return _queue_order(rows + core.all(execute.format(_GROUPED) + _ORDER, (limit,)), limit)
    skip = set(skip_groups)
    size = _WINDOW + limit
    window = core.all(execute.format(_GROUPED) + _ORDER, (size,))
    grouped = [r for r in window if r[19] not in skip]  # 19: group_key
    if len(grouped) < limit and len(window) == size:
        grouped = _grouped_skipping(core, execute, limit, skip)
    return _queue_order(rows + grouped, limit)


def _grouped_skipping(
    core: Core, execute: str, limit: int, skip: set[str]
) -> list[tuple[Any, ...]]:
    """The first ``limit`` rows of each group not in ``skip``, group by group (see ``ready``)."""
    first = f"SELECT group_key {_BY_GROUP}"
    out: list[tuple[Any, ...]] = []
    group = core.value(first + " ORDER BY group_key LIMIT 1")
    for _ in range(_MAX_GROUPS):
        if group is None:
            return out
        if group not in skip:
            out += core.all(
                execute.format(_BY_GROUP) + " AND group_key = +?" + _ORDER, (group, limit)
            )
        group = core.value(first + " AND group_key > +? ORDER BY group_key LIMIT 1", (group,))
    marks = ", ".join("?" * len(skip))
    return core.all(
        execute.format(_GROUPED) + f" AND group_key NOT IN ({marks})" + _ORDER, (*skip, limit)
    )


def list_tasks(core: Core, status: str, limit: int) -> list[TaskRow]:
    """Active tasks of one status in queue order (priority, id)."""
    check_limit(limit)
    if status == "pending":
        select = f"SELECT {TASK_COLUMNS} "
        rows = core.all(select + _UNGROUPED + _ORDER, (limit,))
        rows = _queue_order(rows + core.all(select + _GROUPED + _ORDER, (limit,)), limit)
    elif status in TASK_STATUSES:
        sql = (
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE status = +? AND status != 'pending' "
            "ORDER BY priority, id LIMIT +?"
        )
        rows = core.all(sql, (status, limit))
    else:
        raise InvalidRequest(f"unknown task status {status!r}; one of {', '.join(TASK_STATUSES)}")
    return [task_row(r) for r in rows]


def counts(core: Core) -> CountsReply:
    pending = core.value(f"SELECT (SELECT count(*) {_UNGROUPED}) + (SELECT count(*) {_GROUPED})")
    busy = dict(
        core.all("SELECT status, count(*) FROM tasks WHERE status != 'pending' GROUP BY status")
    )
    return CountsReply(
        pending=int(pending),
        running=int(busy.get("running", 0)),
        paused=int(busy.get("paused", 0)),
        waiting=int(busy.get("waiting", 0)),
    )


def newest_history(core: Core, key: str) -> HistoryRow | None:
    row = core.one(
        f"SELECT {HISTORY_COLUMNS} FROM history WHERE key = +? "
        "ORDER BY completed_at_ms DESC, id DESC LIMIT 1",
        (key,),
    )
    return None if row is None else history_row(row)


def lookup(core: Core, key: str) -> LookupReply:
    """Where a dedup key is: an active row, else its newest history row, else nowhere."""
    task = get_task(core, key=key)
    if task is not None:
        return LookupReply("active", task=task)
    past = newest_history(core, key)
    if past is not None:
        return LookupReply("history", history=past)
    return LookupReply("not_found")


def history(
    core: Core,
    limit: int = 50,
    offset: int = 0,
    task_type: str | None = None,
    key: str | None = None,
    status: str | None = None,
) -> list[HistoryRow]:
    """History newest first (completed_at_ms DESC, id DESC), optionally filtered."""
    check_limit(limit)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest(f"offset must be a non-negative integer, got {offset!r}")
    if status is not None and status not in HISTORY_STATUSES:
        raise InvalidRequest(
            f"unknown history status {status!r}; one of {', '.join(HISTORY_STATUSES)}"
        )
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("task_type", task_type), ("key", key), ("status", status)):
        if value is not None:
            where.append(f"{column} = +?")
            params.append(value)
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    rows = core.all(
        f"SELECT {HISTORY_COLUMNS} FROM history {clause}"
        "ORDER BY completed_at_ms DESC, id DESC LIMIT +? OFFSET +?",
        (*params, limit, offset),
    )
    return [history_row(r) for r in rows]


def history_stats(core: Core, task_type: str) -> TypeStatsReply:
    """count = completed + failed; means over completed runs; failure_rate = failed / count."""
    row = core.one(
        "SELECT "
        "coalesce(sum(status = 'completed'), 0), coalesce(sum(status = 'failed'), 0), "
        "avg(CASE WHEN status = 'completed' THEN duration_ms END), "
        "avg(CASE WHEN status = 'completed' THEN actual_read_bytes END), "
        "avg(CASE WHEN status = 'completed' THEN actual_write_bytes END) "
        "FROM history INDEXED BY history_type WHERE task_type = ?",
        (task_type,),
    )
    assert row is not None  # an aggregate always yields one row
    completed, failed = int(row[0]), int(row[1])
    count = completed + failed
    return TypeStatsReply(
        count=count,
        avg_duration_ms=float(row[2] or 0.0),
        avg_read_bytes=float(row[3] or 0.0),
        avg_write_bytes=float(row[4] or 0.0),
        failure_rate=failed / max(count, 1),
    )


def avg_throughput(core: Core, task_type: str, n: int) -> ThroughputReply:
    """Mean bytes/s, per direction, over the ``n`` newest completed runs that took some time."""
    check_limit(n, "n")
    row = core.one(
        "SELECT avg(actual_read_bytes * 1000.0 / duration_ms), "
        "avg(actual_write_bytes * 1000.0 / duration_ms), "
        "avg(actual_net_rx_bytes * 1000.0 / duration_ms), "
        "avg(actual_net_tx_bytes * 1000.0 / duration_ms) FROM ("
        "  SELECT actual_read_bytes, actual_write_bytes, actual_net_rx_bytes, "
        "  actual_net_tx_bytes, duration_ms FROM history INDEXED BY history_type "
        "  WHERE task_type = +? AND status = 'completed' AND duration_ms > 0 "
        "  ORDER BY completed_at_ms DESC, id DESC LIMIT +?)",
        (task_type, n),
    )
    assert row is not None
    return ThroughputReply(*(float(v or 0.0) for v in row))


def learned_io(
    core: Core, task_types: list[str], min_runs: int, window: int
) -> dict[str, list[float]]:
    """For each type with at least ``min_runs`` completed runs: the mean actual
    ``[read, write, net_rx, net_tx]`` bytes of its newest ``window`` completed runs.

    An empty ``task_types`` means every type in history.
    """
    check_limit(min_runs, "min_runs")
    check_limit(window, "window")
    if not task_types:
        task_types = [
            r[0] for r in core.all("SELECT DISTINCT task_type FROM history INDEXED BY history_type")
        ]
    learned: dict[str, list[float]] = {}
    for task_type in dict.fromkeys(task_types):
        runs = core.value(
            "SELECT count(*) FROM (SELECT 1 FROM history INDEXED BY history_type "
            "WHERE task_type = ? AND status = 'completed' LIMIT +?)",
            (task_type, max(min_runs, 1)),
        )
        if int(runs) < min_runs or runs == 0:
            continue
        row = core.one(
            "SELECT avg(actual_read_bytes), avg(actual_write_bytes), avg(actual_net_rx_bytes), "
            "avg(actual_net_tx_bytes) FROM ("
            "  SELECT * FROM history INDEXED BY history_type "
            "  WHERE task_type = +? AND status = 'completed' "
            "  ORDER BY completed_at_ms DESC, id DESC LIMIT +?)",
            (task_type, window),
        )
        if row is not None and row[0] is not None:
            learned[task_type] = [float(v) for v in row]
    return learned
