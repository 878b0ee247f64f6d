"""The queue as the metrics endpoint shows it: one read per scrape interval, from indexes.

SQLite knows how many rows there are only by counting them, so a read costs in proportion to
the active rows. It reads the small indexes the claim already keeps and never the rows of a
deep queue (which carry their payloads): pending rows by priority from the two ready indexes,
running, paused and waiting rows from ``tasks_busy``, scheduled ones through
``tasks_scheduled``. Pending rows are split by type only while at most ``TYPE_SPLIT_LIMIT``
wait: that split reads each row. How long the queue's head has waited is read from the first
row of each priority in dispatch order: a lookup per priority. Nothing here runs per task.
"""

from __future__ import annotations

from actors.store.core import Core
from actors.store.schema import BUSY
from bus.kinds import QueueCount
from bus.tiers import tier_of

TYPE_SPLIT_LIMIT = 5_000
"""Most pending rows split by type; past it they are counted by priority only. The split reads
each pending row, and an index by type, which would spare it, would make every submission
dearer (docs/benchmarks.md, "Metrics read of the queue")."""

_READY = (
    ("tasks_ready_ungrouped", "status = 'pending' AND group_key IS NULL"),
    ("tasks_ready_grouped", "status = 'pending' AND group_key IS NOT NULL"),
)
_PENDING = tuple(
    f"SELECT priority, count(*) FROM tasks INDEXED BY {index} WHERE {where} GROUP BY priority"
    for index, where in _READY
)
_PENDING_BY_TYPE = tuple(
    f"SELECT task_type, priority, count(*) FROM tasks INDEXED BY {index} WHERE {where} "
    "GROUP BY task_type, priority"
    for index, where in _READY
)
_HEADS = tuple(
    # When the first row of a priority became ready: its submission, or its due time if later.
    f"SELECT max(created_at_ms, coalesce(due_at_ms, 0)) FROM tasks INDEXED BY {index} "
    f"WHERE {where} AND priority = ? ORDER BY id LIMIT 1"
    for index, where in _READY
)
_OTHERS = (
    f"SELECT status, task_type, priority, count(*) FROM tasks INDEXED BY tasks_busy WHERE {BUSY} "
    "GROUP BY status, task_type, priority",
    "SELECT status, task_type, priority, count(*) FROM tasks INDEXED BY tasks_scheduled "
    "WHERE status = 'scheduled' GROUP BY task_type, priority",
    "SELECT status, task_type, priority, count(*) FROM tasks INDEXED BY tasks_blocked "
    "WHERE status = 'blocked' GROUP BY task_type, priority",
)
_RUNNING_BY_GROUP = (
    f"SELECT group_key, count(*) FROM tasks INDEXED BY tasks_busy WHERE {BUSY} "
    "AND status = 'running' AND group_key IS NOT NULL GROUP BY group_key"
)

Key = tuple[str, str, str | None]


def queue_counts(core: Core, type_split_limit: int = TYPE_SPLIT_LIMIT) -> list[QueueCount]:
    """Active tasks by status, tier and type (None: pending rows past ``type_split_limit``,
    not split by type); on the pending ones, since when the first row in line of the tier's
    longest-waiting priority has been ready."""
    pending: dict[int, int] = {}
    for query in _PENDING:
        for priority, count in core.all(query):
            pending[int(priority)] = pending.get(int(priority), 0) + int(count)
    counts: dict[Key, int] = {}
    split = sum(pending.values()) <= type_split_limit
    rows = [("pending", *r) for q in _PENDING_BY_TYPE for r in core.all(q)] if split else []
    if not split:
        rows = [("pending", None, priority, count) for priority, count in pending.items()]
    for query in _OTHERS:
        rows += core.all(query)
    for status, task_type, priority, count in rows:
        key = (str(status), tier_of(priority), None if task_type is None else str(task_type))
        counts[key] = counts.get(key, 0) + int(count)
    ready_since: dict[str, int] = {}
    for priority in pending:
        tier = tier_of(priority)
        for query in _HEADS:
            since = core.value(query, (priority,))
            if since is not None:
                ready_since[tier] = min(ready_since.get(tier, int(since)), int(since))
    return [
        QueueCount(status, tier, task_type, count, ready_since.get(tier))
        if status == "pending"
        else QueueCount(status, tier, task_type, count)
        for (status, tier, task_type), count in sorted(counts.items(), key=_order)
    ]


def _order(item: tuple[Key, int]) -> tuple[str, str, str]:
    status, tier, task_type = item[0]
    return status, tier, task_type or ""


def running_by_group(core: Core) -> dict[str, int]:
    return {str(group): int(count) for group, count in core.all(_RUNNING_BY_GROUP)}
