"""Tags and bulk cancellation: the queries by tag, and cancelling by group, type or tag.

Tags live in two places (``schema._TAGS``): the task row's ``tags`` column (JSON, what
records and events carry) and ``task_tags`` (one row per tag of an active task, indexed by
(key, value)), which the queries here read. History rows keep a copy of the column only.
"""

from __future__ import annotations

from collections.abc import Mapping

from actors.store import lifecycle
from actors.store.core import Core
from actors.store.queries import check_limit, paused_groups
from bus.errors import InvalidRequest
from bus.kinds import Transition

_STATUSES = {
    "pending": ("pending", "scheduled"),  # a task not due yet is pending to its users
    "running": ("running",),
    "paused": ("paused",),
    "waiting": ("waiting",),
}

_BY_GROUP = (
    # Three reads, each by an index: pending rows by group, busy rows (few), scheduled rows.
    "SELECT id FROM tasks WHERE status = 'pending' AND group_key = ?1 "
    "UNION ALL SELECT id FROM tasks WHERE status != 'pending' AND status != 'scheduled' "
    "AND group_key = ?1 "
    "UNION ALL SELECT id FROM tasks WHERE status = 'scheduled' AND group_key = ?1"
)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, got {value!r}")
    return value


def task_ids_by_tags(
    core: Core, filters: Mapping[str, str], status: str | None, limit: int
) -> list[int]:
    """Ids of the active tasks that have every tag of ``filters`` (and ``status``, when given),
    in id order."""
    check_limit(limit)
    if not isinstance(filters, Mapping) or not filters:
        raise InvalidRequest("give at least one tag to look for, as {key: value}")
    pairs = [(_text("a tag key", k), _text("a tag value", v)) for k, v in filters.items()]
    sql = "SELECT t.task_id FROM task_tags AS t WHERE t.key = ? AND t.value = ?"
    params: list[object] = list(pairs[0])
    for key, value in pairs[1:]:
        sql += (
            " AND EXISTS (SELECT 1 FROM task_tags AS u WHERE u.task_id = t.task_id "
            "AND u.key = ? AND u.value = ?)"
        )
        params += [key, value]
    if status is not None:
        statuses = _STATUSES.get(status)
        if statuses is None:
            raise InvalidRequest(f"status must be one of {sorted(_STATUSES)}, got {status!r}")
        marks = ", ".join("?" * len(statuses))
        shown = f"status IN ({marks})"
        params += statuses
        paused = paused_groups(core)
        if paused and status in ("pending", "paused"):
            # A paused group's pending tasks are shown as paused (``queries.as_shown``).
            held = (
                f"status = 'pending' AND coalesce(group_key IN ({', '.join('?' * len(paused))}), 0)"
            )
            shown = (
                f"({shown} AND NOT ({held}))" if status == "pending" else f"({shown} OR ({held}))"
            )
            params += paused
        sql += f" AND EXISTS (SELECT 1 FROM tasks WHERE id = t.task_id AND {shown})"
    rows = core.all(sql + " ORDER BY t.task_id LIMIT +?", (*params, limit))
    return [task_id for (task_id,) in rows]


def count_by_tag(core: Core, key: str) -> list[tuple[str, int]]:
    """Each value of tag ``key`` among the active tasks, with how many have it, most first."""
    rows = core.all(
        "SELECT value, count(*) AS n FROM task_tags WHERE key = ? GROUP BY value "
        "ORDER BY n DESC, value",
        (_text("key", key),),
    )
    return [(value, n) for value, n in rows]


def cancel_where(
    core: Core, group: str | None, task_type: str | None, tag: tuple[str, str] | None
) -> list[Transition]:
    """Cancel every active task of ``group``, of ``task_type`` or with ``tag`` (one of the
    three), each as ``cancel`` does (its children first, then its parent resolved), in id
    order. A type has no index of its own: cancelling one reads every active row."""
    if sum(x is not None for x in (group, task_type, tag)) != 1:
        raise InvalidRequest("give exactly one of a group, a task type or a tag")
    if group is not None:
        rows = core.all(_BY_GROUP, (_text("group", group),))
    elif task_type is not None:
        rows = core.all("SELECT id FROM tasks WHERE task_type = ?", (_text("type", task_type),))
    else:
        assert tag is not None
        if not isinstance(tag, list | tuple) or len(tag) != 2:
            raise InvalidRequest("a tag is a [key, value] pair")
        key, value = _text("a tag key", tag[0]), _text("a tag value", tag[1])
        rows = core.all("SELECT task_id FROM task_tags WHERE key = ? AND value = ?", (key, value))
    out: list[Transition] = []
    for (task_id,) in sorted(rows):
        out += lifecycle.cancel(core, task_id)  # [] for one cancelled with its parent already
    return out
