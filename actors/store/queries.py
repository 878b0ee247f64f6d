"""The Store's read-only queries: tasks, counts, lookup, history and what history teaches.

Pure functions of a ``Core``; each is a single consistent read (inside the caller's transaction
when there is one).
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import Any

from actors.store import flow
from actors.store.core import Core
from actors.store.schema import (
    BUSY,
    HISTORY_COLUMNS,
    HISTORY_STATUSES,
    TASK_COLUMNS,
    TASK_STATUSES,
    history_row,
    key8,
    task_row,
)
from bus.errors import InvalidRequest
from bus.kinds import (
    CountsReply,
    History,
    HistoryReply,
    HistoryRow,
    LookupReply,
    TaskRow,
    TasksReply,
    ThroughputReply,
    TypeStatsReply,
)
from bus.protocol import MAX_ROWS_BYTES

MAX_LIMIT = 100_000
REPLY_BYTES = MAX_ROWS_BYTES
"""Most bytes of rows (history or active tasks) one reply carries; the rows past it come in the
next page."""
ROW_BYTES = 256
"""What a row costs on the wire besides its payload and text: its ids, numbers, times and key."""
_ROW_SIZE = (
    "coalesce(length(payload), 0) + length(CAST(task_type AS BLOB)) "
    "+ length(CAST(label AS BLOB)) + coalesce(length(CAST(last_error AS BLOB)), 0) "
    "+ coalesce(length(CAST(group_key AS BLOB)), 0)"
)
"""The variable part of a row's size (history and tasks alike): read without reading the
payloads themselves."""


def check_limit(limit: int, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"{name} must be an integer in 0..{MAX_LIMIT}, got {limit!r}")
    return limit


def check_offset(offset: int) -> int:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidRequest(f"offset must be a non-negative integer, got {offset!r}")
    return offset


def _fitting(sizes: list[tuple[Any, ...]], max_bytes: int) -> int:
    """How many of the rows whose sizes (``_ROW_SIZE``, first column) are ``sizes`` one reply
    carries: those within ``max_bytes``, one at least."""
    fit, total = 0, 0
    for size, *_ in sizes:
        total += size + ROW_BYTES
        if total > max_bytes and fit:
            break
        fit += 1
    return fit


def by_key(core: Core, columns: str, key: str) -> tuple[Any, ...] | None:
    """``columns`` of the active row with ``key``: found by its first 8 bytes (``key8``), the
    full key compared."""
    return core.one(f"SELECT {columns} FROM tasks WHERE key8 = ? AND key = ?", (key8(key), key))


def get_task(core: Core, id: int | None = None, key: str | None = None) -> TaskRow | None:
    if id is not None:
        row = core.one(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?", (id,))
    elif key is not None:
        row = by_key(core, TASK_COLUMNS, key)
    else:
        raise InvalidRequest("get_task needs an id or a key")
    return None if row is None else task_row(row)


_PENDING = "WHERE status = 'pending' AND group_key"
_UNGROUPED = f"FROM tasks INDEXED BY tasks_ready_ungrouped {_PENDING} IS NULL"
_GROUPED = f"FROM tasks INDEXED BY tasks_ready_grouped {_PENDING} IS NOT NULL"
_BY_GROUP = f"FROM tasks INDEXED BY tasks_ready_by_group {_PENDING} IS NOT NULL"
_ORDER = " ORDER BY priority, id LIMIT +?"
_EXECUTE = " AND phase = 'execute'"
_AFTER = " AND (priority, id) > (?, ?)"
_WALK_BUDGET = 1_024
"""Grouped rows a peek that skips groups has SQLite step over, in queue order, before it looks
at the other groups one by one instead (stepping over a row of a full group costs far less
than looking at a group, which takes two index lookups)."""
_MAX_GROUPS = 64
"""Groups a peek looks at one by one before it goes back to walking the queue order."""
_STEP = 4
"""Rows of one group read at a time while groups are merged one by one."""


def queue_order(core: Core, columns: str, limit: int, where: str = "") -> list[tuple[Any, ...]]:
    """The first ``limit`` pending rows by (priority, id), grouped or not (``columns``:
    ``TASK_COLUMNS`` or a variant of it; ``where``: more conditions). One statement: SQLite
    merges the two ready indexes and stops at the limit."""
    return core.all(
        f"SELECT {columns} {_UNGROUPED}{where} UNION ALL "
        f"SELECT {columns} {_GROUPED}{where}" + _ORDER,
        (limit,),
    )


def ready(core: Core, columns: str, limit: int, skip_groups: list[str]) -> list[tuple[Any, ...]]:
    """The first ``limit`` pending rows to execute by (priority, id), none of ``skip_groups``.

    Ungrouped and grouped rows have an index each, so the full groups' rows never stand in the
    way of the ungrouped ones. Among grouped rows the full groups' may fill the top of the order
    (a backlog for a host at its limit): SQLite filters the first ``_WALK_BUDGET`` rows of that
    order, stopping at ``limit``; if those hold fewer, the other groups are looked at one by one
    (``_by_group``), so the cost stops growing with the full groups' backlog.
    """
    if not skip_groups or not limit:
        return queue_order(core, columns, limit, _EXECUTE)
    allowed = f" AND group_key NOT IN ({', '.join('?' * len(skip_groups))})"
    # SQLite filters the first rows of the grouped order (reading two columns of each), and
    # stops once it has ``limit``; their whole rows are read after.
    window = f"SELECT id, group_key {_GROUPED}{_EXECUTE}{_ORDER}"
    found = core.all(
        f"SELECT {columns} FROM tasks WHERE id IN "
        f"(SELECT id FROM ({window}) WHERE true{allowed} LIMIT +?)",
        (_WALK_BUDGET, *skip_groups, limit),
    )
    ungrouped = f"SELECT {columns} {_UNGROUPED}{_EXECUTE}"
    if len(found) >= limit:  # only the ungrouped rows ahead of the last of those can count
        worst = max((r[4], r[0]) for r in found)
        ahead = core.all(ungrouped + " AND (priority, id) < (?, ?)" + _ORDER, (*worst, limit))
        return _merged(ahead, found, limit)
    # Fewer: no other row of the window is allowed, so any that is comes after the last found
    # (or from the start); the other groups have them, looked at one by one.
    after = max((r[4], r[0]) for r in found) if found else (-1, -1)
    more = _by_group(core, columns, limit, set(skip_groups), after)
    if more is None:  # too many groups to look at one by one: walk on, as SQLite filters
        more = core.all(
            f"SELECT {columns} {_GROUPED}{_EXECUTE}{_AFTER}{allowed}{_ORDER}",
            (*after, *skip_groups, limit),
        )
    return _merged(core.all(ungrouped + _ORDER, (limit,)) + found, more, limit)


def _merged(
    first: list[tuple[Any, ...]], second: list[tuple[Any, ...]], limit: int
) -> list[tuple[Any, ...]]:
    """The first ``limit`` of both lists of rows, by (priority, id)."""
    rows = first + second
    rows.sort(key=lambda r: (r[4], r[0]))  # 4: priority, 0: id
    return rows[:limit]


def _by_group(
    core: Core, columns: str, limit: int, skip: set[str], after: tuple[int, int]
) -> list[tuple[Any, ...]] | None:
    """The first ``limit`` rows after ``after`` in queue order of the groups not in ``skip``,
    merged group by group; None past ``_MAX_GROUPS`` groups.

    Each group's first row comes from ``tasks_ready_by_group`` (one lookup, two when the group
    had rows before ``after``); then the groups' rows are merged in queue order, a few more read
    from a group each time its last one is taken."""
    rows_of = f"SELECT {columns} {_BY_GROUP}{_EXECUTE}"
    of_group = f"{rows_of} AND group_key = +?{_AFTER}"
    in_group_order = " ORDER BY group_key, priority, id LIMIT 1"
    first_of_next = f"{rows_of} AND group_key > +?{in_group_order}"
    heads: list[tuple[tuple[int, int], str, list[tuple[Any, ...]]]] = []
    row = core.one(rows_of + in_group_order)
    for _ in range(_MAX_GROUPS):
        if row is None:
            break
        group = row[19]  # group_key
        if group not in skip:
            if (row[4], row[0]) <= after:  # it had rows in the window: its first after it
                rows = core.all(of_group + _ORDER, (group, *after, _STEP))
            else:
                rows = [row]
            if rows:
                heads.append(((rows[0][4], rows[0][0]), group, rows))
        row = core.one(first_of_next, (group,))
    if row is not None:
        return None
    heapq.heapify(heads)
    out: list[tuple[Any, ...]] = []
    while heads and len(out) < limit:
        _, group, rows = heapq.heappop(heads)
        taken = rows.pop(0)
        out.append(taken)
        if not rows:
            rows = core.all(of_group + _ORDER, (group, taken[4], taken[0], _STEP))
        if rows:
            heapq.heappush(heads, ((rows[0][4], rows[0][0]), group, rows))
    return out


def paused_groups(core: Core) -> list[str]:
    """The groups paused now."""
    policy = flow.load(core)
    return sorted(policy.paused_at(core.now())) if policy.paused else []


def as_shown(core: Core, rows: list[TaskRow]) -> list[TaskRow]:
    """The rows as a user sees them: a pending task of a paused group is ``paused``. The Store
    does not rewrite it (the claim passes its group over, so a pause costs the same whatever
    the group's backlog); what it shows is its status all the same."""
    paused = paused_groups(core)
    if not paused:
        return rows
    return [
        replace(r, status="paused") if r.status == "pending" and r.group_key in paused else r
        for r in rows
    ]


def list_tasks(core: Core, status: str, limit: int, offset: int = 0) -> list[TaskRow]:
    """Active tasks of one status, as shown (``as_shown``), in queue order (priority, id);
    scheduled ones by due time first. ``offset`` rows of that order are skipped."""
    query, params = _tasks_query(status, limit, offset, paused_groups(core))
    rows = [task_row(r) for r in core.all(query.format(columns=TASK_COLUMNS), params)]
    return as_shown(core, rows)


def tasks_page(
    core: Core, status: str, limit: int, offset: int = 0, max_bytes: int = REPLY_BYTES
) -> TasksReply:
    """``list_tasks``, as many rows as fit in ``max_bytes`` (one at least), as ``history_page``
    does: a few tasks with 1 MiB payloads do not fit in one frame. When rows were left out,
    ``next_offset`` is the offset that asks for them."""
    query, params = _tasks_query(status, limit, offset, paused_groups(core))
    # priority and id: the order of the pending rows' compound query names its columns.
    sizes = core.all(query.format(columns=f"{_ROW_SIZE}, priority, id"), params)
    fit = _fitting(sizes, max_bytes)
    rows = list_tasks(core, status, fit, offset)
    return TasksReply(rows, next_offset=None if fit == len(sizes) else offset + fit)


def _tasks_query(
    status: str, limit: int, offset: int, paused: list[str]
) -> tuple[str, tuple[Any, ...]]:
    """The query of ``list_tasks``, its selected ``{columns}`` left to fill, and its
    parameters (``paused``: the paused groups, whose pending tasks are shown as paused)."""
    check_limit(limit)
    check_offset(offset)
    page = " LIMIT +? OFFSET +?"
    marks = ", ".join("?" * len(paused))
    if status == "pending":  # SQLite merges the two ready indexes
        others = f" AND group_key NOT IN ({marks})" if paused else ""
        query = (
            f"SELECT {{columns}} {_UNGROUPED} UNION ALL SELECT {{columns}} {_GROUPED}{others} "
            "ORDER BY priority, id" + page
        )
        return query, (*paused, limit, offset)
    if status == "paused" and paused:
        query = (
            f"SELECT {{columns}} FROM tasks WHERE status = 'paused' AND {BUSY} UNION ALL "
            f"SELECT {{columns}} {_BY_GROUP} AND group_key IN ({marks}) "
            "ORDER BY priority, id" + page
        )
        return query, (*paused, limit, offset)
    if status == "scheduled":  # by due time, then queue order
        query = (
            "SELECT {columns} FROM tasks WHERE status = 'scheduled' "
            "ORDER BY due_at_ms, priority, id" + page
        )
        return query, (limit, offset)
    if status == "blocked":
        query = (
            "SELECT {columns} FROM tasks INDEXED BY tasks_blocked WHERE status = 'blocked' "
            "ORDER BY priority, id" + page
        )
        return query, (limit, offset)
    if status in TASK_STATUSES:
        query = (
            f"SELECT {{columns}} FROM tasks WHERE status = +? AND {BUSY} "
            "ORDER BY priority, id" + page
        )
        return query, (status, limit, offset)
    raise InvalidRequest(f"unknown task status {status!r}; one of {', '.join(TASK_STATUSES)}")


def counts(core: Core) -> CountsReply:
    """The active tasks by status, as shown (``as_shown``)."""
    pending = core.value(f"SELECT (SELECT count(*) {_UNGROUPED}) + (SELECT count(*) {_GROUPED})")
    busy = dict(core.all(f"SELECT status, count(*) FROM tasks WHERE {BUSY} GROUP BY status"))
    paused = paused_groups(core)
    held = 0
    if paused:
        held = int(
            core.value(
                f"SELECT count(*) {_BY_GROUP} AND group_key IN ({', '.join('?' * len(paused))})",
                paused,
            )
        )
    return CountsReply(
        pending=int(pending) - held,
        running=int(busy.get("running", 0)),
        paused=int(busy.get("paused", 0)) + held,
        waiting=int(busy.get("waiting", 0)),
        scheduled=int(core.value("SELECT count(*) FROM tasks WHERE status = 'scheduled'")),
        blocked=int(
            core.value(
                "SELECT count(*) FROM tasks INDEXED BY tasks_blocked WHERE status = 'blocked'"
            )
        ),
    )


def depth(core: Core) -> list[tuple[int, str | None, int]]:
    """Pending tasks by priority and group, read from the ready indexes alone (each row of the
    queue is one index entry stepped over; no table row is read). A paused group's tasks are
    not pending (``as_shown``)."""
    ungrouped = core.all(f"SELECT priority, NULL, count(*) {_UNGROUPED} GROUP BY priority")
    grouped = core.all(
        f"SELECT priority, group_key, count(*) {_BY_GROUP} GROUP BY group_key, priority"
    )
    paused = set(paused_groups(core))
    return sorted(
        ((int(p), g, int(n)) for p, g, n in [*ungrouped, *grouped] if g not in paused),
        key=lambda row: (row[0], row[1] or ""),
    )


def children(core: Core, parent_id: int, limit: int) -> list[TaskRow]:
    """The active children of ``parent_id``, oldest first (by ``tasks_parent``)."""
    check_limit(limit)
    rows = core.all(
        f"SELECT {TASK_COLUMNS} FROM tasks WHERE parent_id = ? ORDER BY id LIMIT +?",
        (parent_id, limit),
    )
    return [task_row(r) for r in rows]


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
        return LookupReply("active", task=as_shown(core, [task])[0])
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
    query, params = _history_query(limit, offset, task_type, key, status)
    rows = core.all(query.format(columns=HISTORY_COLUMNS), params)
    return [history_row(r) for r in rows]


def history_page(core: Core, q: History, max_bytes: int = REPLY_BYTES) -> HistoryReply:
    """``history``, as many rows as fit in ``max_bytes`` (one at least): four runs with 1 MiB
    payloads do not fit in one frame. When rows were left out, ``next_offset`` is the offset
    that asks for them."""
    query, params = _history_query(q.limit, q.offset, q.task_type, q.key, q.status)
    sizes = core.all(query.format(columns=_ROW_SIZE), params)
    fit = _fitting(sizes, max_bytes)
    rows = history(core, fit, q.offset, q.task_type, q.key, q.status)
    return HistoryReply(rows, next_offset=None if fit == len(sizes) else q.offset + fit)


def _history_query(
    limit: int, offset: int, task_type: str | None, key: str | None, status: str | None
) -> tuple[str, tuple[Any, ...]]:
    """The history query, its selected ``{columns}`` left to fill, and its parameters."""
    check_limit(limit)
    check_offset(offset)
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
    query = (
        f"SELECT {{columns}} FROM history {clause}"
        "ORDER BY completed_at_ms DESC, id DESC LIMIT +? OFFSET +?"
    )
    return query, (*params, limit, offset)


def result(core: Core, task_id: int) -> list[HistoryRow]:
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise InvalidRequest(f"task_id must be an integer, got {task_id!r}")
    rows = core.all(
        f"SELECT {HISTORY_COLUMNS} FROM history WHERE task_id = ? "
        "ORDER BY completed_at_ms DESC, id DESC LIMIT 1",
        (task_id,),
    )
    return [history_row(r) for r in rows]


def history_row_by_id(core: Core, history_id: int) -> HistoryRow | None:
    if isinstance(history_id, bool) or not isinstance(history_id, int):
        raise InvalidRequest(f"a history id must be an integer, got {history_id!r}")
    row = core.one(f"SELECT {HISTORY_COLUMNS} FROM history WHERE id = ?", (history_id,))
    return None if row is None else history_row(row)


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
