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
   to the others (work-conserving). A group whose rate limit has no token leaves the line
   until its next token is due (its pass value kept): its share runs ahead of its rate, so it
   would otherwise stand first, and be looked at and refused, in every claim.

Pass values are kept in memory for the Store's lifetime (a restart, or a rolled-back
transaction, starts every group even).
Within a group rows go by their own priority (aging orders the first pass only).
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.store.core import Core
from actors.store.schema import CLAIM_COLUMNS

if TYPE_CHECKING:
    from actors.store.claim import Pick
    from actors.store.flow import Aging

UNGROUPED = "\0"
"""The ungrouped rows' place among the groups (no group name is empty)."""
_STEP = 2
"""Rows read from one group at a time (a claim gives most groups one slot or none)."""

_GROUPS = (
    "WITH RECURSIVE g(k) AS (SELECT min(group_key) FROM tasks INDEXED BY tasks_ready_by_group "
    "WHERE status = 'pending' AND group_key IS NOT NULL UNION ALL SELECT (SELECT min(group_key) "
    "FROM tasks INDEXED BY tasks_ready_by_group WHERE status = 'pending' "
    "AND group_key IS NOT NULL AND group_key > g.k) FROM g WHERE g.k IS NOT NULL) "
    "SELECT k FROM g WHERE k IS NOT NULL"
)
"""The groups with ready rows: one index seek per group (a skip scan), never their rows."""
_ANY_UNGROUPED = (
    "SELECT 1 FROM tasks INDEXED BY tasks_ready_ungrouped "
    "WHERE status = 'pending' AND group_key IS NULL LIMIT 1"
)
_HEADS = (
    f"SELECT {CLAIM_COLUMNS} FROM tasks WHERE id IN (SELECT (SELECT id FROM tasks "
    "INDEXED BY tasks_ready_by_group WHERE status = 'pending' AND group_key IS NOT NULL "
    "AND group_key = j.value ORDER BY priority, id LIMIT 1) FROM json_each(?) AS j)"
)
"""The first ready row of each group of a JSON array: one index seek each."""
_GROUP = 19
"""The position of ``group_key`` in a row of ``CLAIM_COLUMNS``."""
_OF_GROUP = (
    f"SELECT {CLAIM_COLUMNS} FROM tasks INDEXED BY tasks_ready_by_group "
    "WHERE status = 'pending' AND group_key IS NOT NULL AND group_key = +? "
    "AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT +?"
)
_UNGROUPED = (
    f"SELECT {CLAIM_COLUMNS} FROM tasks INDEXED BY tasks_ready_ungrouped "
    "WHERE status = 'pending' AND group_key IS NULL AND (priority, id) > (?, ?) "
    "ORDER BY priority, id LIMIT +?"
)


@dataclass(slots=True)
class Shares:
    """The pass values, kept between claims with the groups that had ready rows at the last
    look (``heap``, by pass value): a claim pops only the groups it gives slots to, never all.
    The groups are looked up again when tasks arrived since, or ``RESCAN_MS`` passed (a retry
    or a released task brings its group back without a new id); a task coming due brings its
    group back at once."""

    passes: dict[str, float] = field(default_factory=dict)
    current: float = 0.0
    """The pass value of the last slot given: a group coming back starts there."""
    heap: list[tuple[float, str]] = field(default_factory=list)
    members: set[str] = field(default_factory=set)
    """The groups in ``heap``."""
    top_id: int = -1
    scanned_ms: int | None = None
    asleep: list[tuple[int, float, str]] = field(default_factory=list)
    """Groups out of ``heap`` until a rate limit's next token (wake time, pass value, group),
    by wake time."""
    sleeping: set[str] = field(default_factory=set)
    """The groups in ``asleep``: never in ``heap`` at the same time."""
    policy: object = None
    """The flow policy the sleepers were sent to sleep under: a changed one wakes them all."""

    def rescan(self, core: Core, now: int, top_id: int) -> None:
        groups = [str(g) for (g,) in core.all(_GROUPS)]
        if core.value(_ANY_UNGROUPED):
            groups.append(UNGROUPED)
        current = self.current
        self.heap = [
            (max(self.passes.get(g, current), current), g) for g in groups if g not in self.sleeping
        ]
        heapq.heapify(self.heap)
        self.members = {g for g in groups if g not in self.sleeping}
        self.top_id, self.scanned_ms = top_id, now

    def sleep(self, group: str, value: float, wake: int) -> None:
        """``group``, just popped from the heap, out of it until ``wake``."""
        heapq.heappush(self.asleep, (wake, value, group))
        self.sleeping.add(group)
        self.members.discard(group)

    def wake(self, now: int, policy: object) -> None:
        """Back in the line: the groups whose token is due by ``now``, or all of them when the
        policy changed (a limit removed or raised)."""
        if policy is not self.policy:
            self.policy = policy
            due, self.asleep = self.asleep, []
        else:
            due = []
            while self.asleep and self.asleep[0][0] <= now:
                due.append(heapq.heappop(self.asleep))
        for _, value, group in due:
            self.sleeping.discard(group)
            if group not in self.members:  # it may have no rows left: the walk then drops it
                self.members.add(group)
                heapq.heappush(self.heap, (max(value, self.passes.get(group, value)), group))

    def join(self, groups: list[str | None]) -> None:
        """Groups whose tasks came due: back in the heap, from the current pass at least."""
        current = self.current
        for key in groups:
            group = UNGROUPED if key is None else key
            if group not in self.members and group not in self.sleeping:
                self.members.add(group)
                heapq.heappush(self.heap, (max(self.passes.get(group, current), current), group))


RESCAN_MS = 1_000


def walk(core: Core, pick: Pick, aging: Aging | None, promoted: list[str | None]) -> bool:
    """Fill ``pick`` by the two passes; whether it saw every row it could have taken.
    ``promoted``: the groups of the scheduled tasks that came due in this claim."""
    urgent = -1 if aging is None or aging.urgent is None else aging.urgent
    for ahead in pick.window(pick.limit, ready=urgent >= 0):
        first = ahead[20] == "finalize" or ahead[5] == "paused" or pick.priority(ahead) <= urgent
        if first and pick.offer(ahead) == "taken" and pick.done:
            return False
    shares: Shares = core.cached("fair_shares", Shares)
    shares.wake(pick.now, pick.flow)
    top_id = core.value("SELECT max(id) FROM tasks") or 0
    if (
        top_id != shares.top_id
        or shares.scanned_ms is None
        or not 0 <= pick.now - shares.scanned_ms < RESCAN_MS
    ):
        shares.rescan(core, pick.now, top_id)
    elif promoted:
        shares.join(promoted)
    buffered = _heads(core, shares.heap, pick)
    after: dict[str, tuple[int, int]] = {}
    for group, minimum in pick.flow.min_slots.items():  # below their minimum: first
        while not pick.done and pick.running[group] + pick.taken[group] < minimum:
            row = _next(core, group, buffered, after)
            if row is None or pick.offer(row) != "taken":
                break
            _advance(shares, pick, group)
    heap, aside = shares.heap, []
    misses: Counter[str] = Counter()
    while heap and not pick.done:
        value, group = heapq.heappop(heap)
        wake = _token_wait(pick, group)  # first: the look for heads may have marked it full
        if wake is not None:
            shares.sleep(group, value, wake)
            continue
        if group in pick.full or misses[group] > pick.limit:
            aside.append((value, group))
            continue
        row = _next(core, group, buffered, after)
        if row is None:  # no ready row left: out until the next look
            shares.passes[group] = value
            shares.members.discard(group)
            continue
        outcome = pick.offer(row)
        if outcome == "held":
            aside.append((value, group))  # its best is below the floor: so is the rest
            continue
        if outcome == "passed":
            misses[group] += 1
        else:
            shares.current = value
            value += 1.0 / pick.flow.weight(None if group == UNGROUPED else group)
            shares.passes[group] = value
        heapq.heappush(heap, (value, group))
    for item in aside:
        heapq.heappush(heap, item)
    return not pick.done


def _advance(shares: Shares, pick: Pick, group: str) -> None:
    """A slot given to ``group`` outside the heap order (its minimum): its pass moves on."""
    weight = pick.flow.weight(None if group == UNGROUPED else group)
    value = max(shares.passes.get(group, shares.current), shares.current) + 1.0 / weight
    shares.passes[group] = value
    for i, (_, g) in enumerate(shares.heap):
        if g == group:
            shares.heap[i] = (value, g)
            heapq.heapify(shares.heap)
            break


def _token_wait(pick: Pick, group: str) -> int | None:
    """None if the group's rate limit, if any, has a token now; else when its next one is due
    (the group is then out for the rest of the claim)."""
    gate = pick.gate
    if gate is None or group not in pick.flow.group_rates or gate.group_open(group):
        return None
    pick.full.add(group)
    return gate.wake_at(group)


def _open(pick: Pick, group: str) -> bool:
    """Whether the group may have a slot in this claim: not full, not paused, and with a token
    of its rate limit if it has one. Asked before its rows are read: a group that is out is
    passed over without reading any (a rate-limited group, whose share runs ahead of its rate,
    would otherwise come first in every claim)."""
    return group not in pick.full and _token_wait(pick, group) is None


def _heads(
    core: Core, heap: list[tuple[float, str]], pick: Pick
) -> dict[str, list[tuple[Any, ...]]]:
    """The first ready row of each of the ``limit`` open groups next in line, in one statement:
    a claim gives most groups one slot or none, so it rarely needs more."""
    groups = _in_line(heap, pick)
    if not groups:
        return {}
    out: dict[str, list[tuple[Any, ...]]] = {group: [] for group in groups}
    for row in core.all(_HEADS, (json.dumps(groups),)):
        out[row[_GROUP]].append(row)
    return out


def _in_line(heap: list[tuple[float, str]], pick: Pick) -> list[str]:
    """The first ``limit`` open groups of the heap, in order, among at most twice as many:
    a walk of the heap's tree from its root that visits only what comes first."""
    out: list[str] = []
    if not heap:
        return out
    frontier = [(heap[0], 0)]
    size, looked = len(heap), 0
    while frontier and len(out) < pick.limit and looked < 2 * pick.limit:
        (_, group), i = heapq.heappop(frontier)
        looked += 1
        if group != UNGROUPED and _open(pick, group):
            out.append(group)
        for child in (2 * i + 1, 2 * i + 2):
            if child < size:
                heapq.heappush(frontier, (heap[child], child))
    return out


def _next(
    core: Core,
    group: str,
    buffered: dict[str, list[tuple[Any, ...]]],
    after: dict[str, tuple[int, int]],
) -> tuple[Any, ...] | None:
    """The group's next ready row this claim has not looked at, or None."""
    rows = buffered.get(group)
    if not rows:
        if rows is not None and group not in after and group != UNGROUPED:
            return None  # its head was looked for and it has none
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
