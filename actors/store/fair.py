"""Fair shares: how a claim divides its slots among groups once a weight or minimum is set.

Without them the claim takes the ready rows in dispatch order, so a group with a deep backlog
of urgent work takes every slot. With them, a claim runs in two passes:

1. **first**: the rows that go ahead of any share, in dispatch order — finalize runs, rows
   paused by preemption (work already begun), and rows at or above the urgent threshold
   (``AgingConfig.urgent_threshold``, none by default);
2. **shares** (stride scheduling): each group with ready rows — the ungrouped rows form one
   more, with the default weight — has a pass value that grows by 1/weight with each row it is
   given; the group with the lowest pass gets the next slot (a group below its minimum slots
   first), and takes its own most urgent row. Over time each busy group gets slots in
   proportion to its weight, whatever the number of slots or groups; a group that had nothing
   to run starts from the current pass, so it cannot claim a burst for the time it was idle.
   A full, paused or rate-limited group drops out for the rest of the claim and its slots go
   to the others (work-conserving).

Pass values are kept in memory for the Store's lifetime (a restart starts every group even).
Within a group rows go by their own priority (aging orders the first pass only).
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import TYPE_CHECKING, Any

from actors.store.core import Core
from actors.store.schema import TASK_COLUMNS_NO_PAYLOAD

if TYPE_CHECKING:
    from actors.store.claim import Pick
    from actors.store.flow import Aging

UNGROUPED = "\0"
"""The ungrouped rows' place among the groups (no group name is empty)."""
_STEP = 8
"""Rows read from one group at a time."""

_GROUPS = (
    "WITH RECURSIVE g(k) AS (SELECT min(group_key) FROM tasks INDEXED BY tasks_ready_by_group "
    "WHERE status = 'pending' AND group_key IS NOT NULL UNION ALL SELECT (SELECT min(group_key) "
    "FROM tasks INDEXED BY tasks_ready_by_group WHERE status = 'pending' "
    "AND group_key IS NOT NULL AND group_key > g.k) FROM g WHERE g.k IS NOT NULL) "
    "SELECT k FROM g WHERE k IS NOT NULL"
)
"""The groups with ready rows: one index seek per group (a skip scan), never their rows."""
_OF_GROUP = (
    f"SELECT {TASK_COLUMNS_NO_PAYLOAD} FROM tasks INDEXED BY tasks_ready_by_group "
    "WHERE status = 'pending' AND group_key IS NOT NULL AND group_key = +? "
    "AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT +?"
)
_UNGROUPED = (
    f"SELECT {TASK_COLUMNS_NO_PAYLOAD} FROM tasks INDEXED BY tasks_ready_ungrouped "
    "WHERE status = 'pending' AND group_key IS NULL AND (priority, id) > (?, ?) "
    "ORDER BY priority, id LIMIT +?"
)


def passes(core: Core) -> dict[str, float]:
    """Each group's pass value, and the current one under ``""``."""
    return core.cached("fair_passes", dict)


def walk(core: Core, pick: Pick, aging: Aging | None) -> bool:
    """Fill ``pick`` by the two passes; whether it saw every row it could have taken."""
    urgent = -1 if aging is None or aging.urgent is None else aging.urgent
    for ahead in pick.window(pick.limit):
        first = ahead[20] == "finalize" or ahead[5] == "paused" or pick.priority(ahead) <= urgent
        if first and pick.offer(ahead) == "taken" and pick.done:
            return False
    state = passes(core)
    current = state.get("", 0.0)
    heap: list[tuple[int, float, str]] = []
    groups = [str(g) for (g,) in core.all(_GROUPS)]
    if core.value("SELECT 1 FROM tasks INDEXED BY tasks_ready_ungrouped "
                  "WHERE status = 'pending' AND group_key IS NULL LIMIT 1"):  # fmt: skip
        groups.append(UNGROUPED)
    for group in groups:
        if group in pick.full:
            continue
        start = max(state.get(group, current), current)
        heap.append((_below_minimum(pick, group), start, group))
    heapq.heapify(heap)
    buffered: dict[str, list[tuple[Any, ...]]] = {}
    after: dict[str, tuple[int, int]] = {}
    misses: Counter[str] = Counter()
    while heap and not pick.done:
        _, value, group = heapq.heappop(heap)
        row = _next(core, group, buffered, after)
        if row is None:
            state[group] = value
            continue
        outcome = pick.offer(row)
        if outcome == "held" or misses[group] > pick.limit:
            state[group] = value
            continue  # the group's best is below the floor (so is the rest), or scheduled
        if outcome == "passed":
            misses[group] += 1
        else:
            current = value
            value += 1.0 / pick.flow.weight(None if group == UNGROUPED else group)
        key = None if group == UNGROUPED else group
        if key is not None and key in pick.full:
            state[group] = value
            continue
        heapq.heappush(heap, (_below_minimum(pick, group), value, group))
    for _, value, group in heap:
        state[group] = value
    state[""] = current
    return not pick.done


def _below_minimum(pick: Pick, group: str) -> int:
    """0 for a group still below its minimum slots (it goes first), else 1."""
    minimum = pick.flow.min_slots.get(group, 0)
    return 0 if pick.running[group] + pick.taken[group] < minimum else 1


def _next(
    core: Core,
    group: str,
    buffered: dict[str, list[tuple[Any, ...]]],
    after: dict[str, tuple[int, int]],
) -> tuple[Any, ...] | None:
    """The group's next ready row this claim has not looked at, or None."""
    rows = buffered.get(group)
    if not rows:
        last = after.get(group, (-1, -1))
        if group == UNGROUPED:
            rows = core.all(_UNGROUPED, (*last, _STEP))
        else:
            rows = core.all(_OF_GROUP, (group, *last, _STEP))
        rows.reverse()
        buffered[group] = rows
        if not rows:
            return None
    row = rows.pop()
    after[group] = (row[4], row[0])
    return row
