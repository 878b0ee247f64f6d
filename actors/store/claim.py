"""The one claim: which ready rows may start now, and starting them, in one transaction.

A claim walks the ready rows in dispatch order — finalize-ready parents first, then by
(priority, paused before pending, id) — and takes up to ``limit`` of them, applying every rule
that depends on what the database holds, counted in the same transaction that claims:

* **group limits**: a group's running rows (finalizers included) plus those this walk took may
  not exceed its limit; a full group's rows are passed over, never blocking the rows behind
  them. The limits are the GroupLimiter's policy, which it keeps in ``group_policy`` ahead of
  time (``set_policy``): no claim waits on a round trip to it;
* **the throttle floor** (``max_priority``, from the Dispatcher's pressure readings): the walk
  stops at the first row less urgent than it (everything behind is less urgent still);
* **resuming after preemption**: while a task at or above the preemption threshold runs, no
  less urgent task starts, pending or paused. Paused rows are claimed directly, ahead of pending
  rows of the same priority.

Because running rows are counted where they are written, a finished task's group slot is free
for the very next claim, and nothing about groups can be lost when an actor restarts.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from actors.store import fair, flow, queries
from actors.store.core import Core
from actors.store.schema import (
    BUSY,
    CLAIM_COLUMNS,
    CLAIM_DEFERRED,
    CLAIM_SIZE,
    TASK_COLUMNS,
    task_row,
)
from bus.errors import InvalidRequest
from bus.kinds import GroupsReply, TaskRow
from bus.protocol import MAX_ROWS_BYTES

MAX_ROUNDS = 8
"""Times a walk looks at the queue again after groups filled up under it; past that the claim
answers with what it has (not ``exhausted``), and the Dispatcher asks again."""

LAYERS = ("configured", "runtime")
CLEARED = -1
"""A runtime value that removes a group's override, the configured one included: the default
applies to the group."""
DEFAULT = ""
"""The ``group_key`` of a layer's default limit in ``group_policy`` (scope ``default``)."""

_TYPE, _PRIORITY, _STATUS, _CREATED, _GROUP, _PHASE = 1, 4, 5, 13, 19, 20
"""Positions in a row selected with ``TASK_COLUMNS``."""


def _fits(total: int, row: tuple[Any, ...], taken: int) -> bool:
    """Whether ``row`` still fits the claim's reply after ``taken`` rows of ``total`` bytes:
    the claimed rows travel with their payloads, and eight of 1 MiB would not fit a frame. The
    first row always fits; a claim that stops here was not exhausted."""
    return not taken or total + row[CLAIM_SIZE] <= MAX_ROWS_BYTES


@dataclass(slots=True)
class GroupPolicy:
    """Group limits in two layers: what the application was built with (``configured``, set
    anew by the GroupLimiter at every start) and what was changed at runtime (``runtime``, kept
    across restarts). A runtime value wins over a configured one."""

    configured_default: int = 0
    configured: dict[str, int] = field(default_factory=dict)
    runtime_default: int | None = None
    runtime: dict[str, int] = field(default_factory=dict)

    @property
    def default(self) -> int:
        if self.runtime_default is not None:
            return self.runtime_default
        return self.configured_default

    def limit(self, group: str) -> int | None:
        """The group's effective limit: its override if set (0 blocks it), else the default
        if > 0, else None (unlimited)."""
        limit = self.runtime.get(group)
        if limit is None:
            limit = self.configured.get(group)
        if limit is not None and limit != CLEARED:
            return limit
        default = self.default
        return default if default > 0 else None

    def full(self, running: Mapping[str, int]) -> set[str]:
        """Groups with no room now: at or over their limit, or blocked (limit 0)."""
        groups = set(running) | set(self.configured) | set(self.runtime)
        out = set()
        for group in groups:
            limit = self.limit(group)
            if limit is not None and running.get(group, 0) >= limit:
                out.add(group)
        return out


def load_policy(core: Core) -> GroupPolicy:
    """The policy, read once and kept in memory until it changes (or a transaction is rolled
    back): every claim needs it."""
    return core.cached("group_policy", lambda: _read_policy(core))


def _read_policy(core: Core) -> GroupPolicy:
    policy = GroupPolicy()
    for layer, scope, group, limit in core.all(
        "SELECT layer, scope, group_key, lim FROM group_policy"
    ):
        if layer == "configured":
            if scope == "default":
                policy.configured_default = limit
            else:
                policy.configured[group] = limit
        elif scope == "default":
            policy.runtime_default = limit
        else:
            policy.runtime[group] = limit
    return policy


def set_policy(
    core: Core,
    layer: str,
    default: int | None,
    limits: Mapping[str, int | None],
    replace: bool,
) -> None:
    """Change one layer: ``replace`` clears it first; ``default`` None leaves the default as it
    is; a limit None removes that group's value from the layer."""
    if layer not in LAYERS:
        raise InvalidRequest(f"a group policy layer is one of {LAYERS}, got {layer!r}")
    lowest = CLEARED if layer == "runtime" else 0
    for value in (default, *limits.values()):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < lowest
        ):
            raise InvalidRequest(f"a group limit must be an integer >= 0, got {value!r}")
    if default == CLEARED:
        raise InvalidRequest("a default group limit must be an integer >= 0")
    if not all(isinstance(group, str) for group in limits):
        raise InvalidRequest("group names must be strings")
    core.forget("group_policy")
    if replace:
        core.run("DELETE FROM group_policy WHERE layer = ?", (layer,))
    if default is not None:
        core.run(
            "INSERT OR REPLACE INTO group_policy VALUES (?, 'default', ?, ?)",
            (layer, DEFAULT, default),
        )
    for group, limit in limits.items():
        if limit is None:
            core.run(
                "DELETE FROM group_policy WHERE layer = ? AND scope = 'group' AND group_key = ?",
                (layer, group),
            )
        else:
            core.run(
                "INSERT OR REPLACE INTO group_policy VALUES (?, 'group', ?, ?)",
                (layer, group, limit),
            )


@dataclass(slots=True)
class Busy:
    """What the rows that are not pending say, read in one statement: each group's running
    count, the most urgent running priority, whether any row is paused."""

    running: Counter[str]
    top_running: int | None
    paused: int


def busy(core: Core) -> Busy:
    out = Busy(Counter(), None, 0)
    # The conditions of ``tasks_busy`` let SQLite read that small index (running, paused and
    # waiting rows), never the queue nor the tasks scheduled for later.
    for status, group, count, top in core.all(
        "SELECT status, group_key, count(*), min(priority) FROM tasks "
        f"WHERE {BUSY} GROUP BY status, group_key"
    ):
        if status == "running":
            if group is not None:
                out.running[group] = count
            if out.top_running is None or top < out.top_running:
                out.top_running = top
        elif status == "paused":
            out.paused += count
    return out


def groups(core: Core) -> GroupsReply:
    policy = load_policy(core)
    return GroupsReply(
        policy.configured_default,
        dict(policy.configured),
        policy.runtime_default,
        dict(policy.runtime),
        dict(busy(core).running),
    )


def allocations(core: Core) -> list[tuple[str, float, int | None, int, int, int | None]]:
    """Each group with a weight or a minimum: (group, weight, minimum, running, pending, limit).
    Its pending tasks are counted in the index of ready tasks by group (that group's only)."""
    shares = flow.load(core)
    groups = sorted(shares.weights.keys() | shares.min_slots.keys())
    if not groups:
        return []
    running = busy(core).running
    limits = load_policy(core)
    return [
        (
            group,
            shares.weight(group),
            shares.min_slots.get(group),
            running[group],
            int(
                core.value(
                    "SELECT count(*) FROM tasks INDEXED BY tasks_ready_by_group "
                    "WHERE status = 'pending' AND group_key IS NOT NULL AND group_key = ?",
                    (group,),
                )
            ),
            limits.limit(group),
        )
        for group in groups
    ]


def _order(row: tuple[Any, ...]) -> tuple[int, int, int, int]:
    return (row[_PHASE] != "finalize", row[_PRIORITY], row[_STATUS] != "paused", row[0])


def _window(
    core: Core, size: int, skip: list[str], max_priority: int, paused: bool, ready: bool = True
) -> list[tuple[Any, ...]]:
    """The first ``size`` rows of the dispatch order outside the groups of ``skip`` (``paused``:
    whether any row is paused, to look at them too; not ``ready``: finalize runs and paused rows
    only)."""
    columns = CLAIM_COLUMNS
    where = ""
    if skip:
        where = f" AND (group_key IS NULL OR group_key NOT IN ({', '.join('?' * len(skip))}))"
    # INDEXED BY pins the partial indexes: the cost stays flat in the queue's depth.
    rows = core.all(
        f"SELECT {columns} FROM tasks INDEXED BY tasks_finalize "
        f"WHERE status = 'pending' AND phase = 'finalize'{where} ORDER BY priority, id LIMIT +?",
        (*skip, size),
    )
    if ready and len(rows) < size:
        rows += queries.ready(core, columns, size - len(rows), skip)
    if paused:
        rows += core.all(
            f"SELECT {columns} FROM tasks WHERE status = 'paused' AND {BUSY} "
            f"AND priority <= +?{where} ORDER BY priority, id LIMIT +?",
            (max_priority, *skip, size),
        )
        rows.sort(key=_order)
    return rows[:size]


def promote_due(core: Core, now: int) -> list[str | None]:
    """Tasks scheduled for ``now`` or earlier join the queue (by the index of due times: the
    tasks still in the future are never read); the group of each."""
    # A task a rate limit deferred stays marked until it starts: if it finds the bucket a
    # little short again, it keeps its place ahead of the tasks denied after it.
    rows = core.all(
        "UPDATE tasks SET status = 'pending' "
        "WHERE status = 'scheduled' AND due_at_ms <= ? RETURNING group_key",
        (now,),
    )
    return [group for (group,) in rows]


def next_due(core: Core, now: int | None = None) -> int | None:
    """When the earliest scheduled task is due, a paused group resumes or a group passed over
    for a rate limit's token has it (epoch ms), or None."""
    due = core.value("SELECT min(due_at_ms) FROM tasks WHERE status = 'scheduled'")
    times: list[int | None] = [None if due is None else int(due)]
    policy = flow.load(core)
    if policy.paused or policy.group_rates:
        now = core.now() if now is None else now
        if policy.paused:
            times.append(policy.next_resume(now))
        if policy.group_rates:
            times.append(flow.next_wake(core))
    return min((t for t in times if t is not None), default=None)


class Pick:
    """What one claim has taken so far and the rules each further row must pass: group room,
    paused groups, rate limits, the throttle floor and the preemption hold."""

    def __init__(
        self,
        core: Core,
        limit: int,
        max_priority: int,
        preempt_priority: int,
        now: int,
        aging: flow.Aging | None,
    ) -> None:
        self.core, self.limit, self.now, self.aging = core, limit, now, aging
        self.preempt_priority = preempt_priority
        now_busy = busy(core)
        self.paused_rows = now_busy.paused > 0
        top = now_busy.top_running
        if top is not None and top <= preempt_priority:
            max_priority = min(max_priority, top)  # nothing less urgent than a preemptor starts
        self.max_priority = max_priority
        self.policy = load_policy(core)
        self.flow = flow.load(core)
        self.running = now_busy.running
        self.full = self.policy.full(self.running)
        if self.flow.paused:
            self.full |= self.flow.paused_at(now)
        self.gate = flow.Gate(core, self.flow, now) if self.flow.rates else None
        self.taken: Counter[str] = Counter()
        self.out: list[tuple[Any, ...]] = []
        self.seen: set[int] = set()
        self.effective: dict[int, int] = {}
        """Rows taken at an aged priority: id → the priority they were ordered by."""
        self.passed_over = False
        self.size = 0
        """What the rows taken add to the claim's reply (payloads and texts), bytes."""
        self.filled = False
        """The reply is full: the claim stops, not exhausted."""

    def priority(self, row: tuple[Any, ...]) -> int:
        """The row's priority in the dispatch order: its own, or aged."""
        if self.aging is None:
            return int(row[_PRIORITY])
        paused = 0
        group = row[_GROUP]
        if group is not None and (group in self.flow.pauses or group in self.flow.paused):
            paused = self.flow.paused_ms(group, row[_CREATED], self.now)
        return self.aging.effective(row[_PRIORITY], row[_CREATED], self.now, paused)

    def order(self, row: tuple[Any, ...]) -> tuple[int, int, int, int]:
        return (row[_PHASE] != "finalize", self.priority(row), row[_STATUS] != "paused", row[0])

    def offer(self, row: tuple[Any, ...]) -> str:
        """Take the row if the rules let it start now: ``taken``; ``held`` (less urgent than
        the floor: so is everything behind it in dispatch order); ``passed`` (its group is
        full or paused, or a rate limit scheduled it for later)."""
        if row[0] in self.seen:
            return "passed"
        priority = self.priority(row)
        if priority > self.max_priority:
            return "passed" if row[_PHASE] == "finalize" else "held"
        group = row[_GROUP]
        if group is not None:
            if group in self.full:
                return "passed"
            room = self.policy.limit(group)
            if room is not None and self.running[group] + self.taken[group] >= room:
                self.full.add(group)
                self.passed_over = True
                return "passed"
        if not _fits(self.size, row, len(self.out)):
            self.filled = True
            return "passed"
        if self.gate is not None and row[_PHASE] != "finalize":
            verdict, due = self.gate.admit(row[_TYPE], group, row[CLAIM_DEFERRED] is not None)
            if verdict != "take":
                if verdict == "group":
                    self.full.add(group)
                else:
                    flow.defer(self.core, row[0], due)
                    self.seen.add(row[0])
                self.passed_over = True
                return "passed"
        if group is not None:
            self.taken[group] += 1
        self.size += row[CLAIM_SIZE]
        self.out.append(row)
        self.seen.add(row[0])
        if priority != row[_PRIORITY]:
            self.effective[row[0]] = priority
        if row[_PRIORITY] <= self.preempt_priority:
            self.max_priority = min(self.max_priority, priority)  # a preemptor starts: hold on
        return "taken"

    @property
    def done(self) -> bool:
        return self.filled or len(self.out) >= self.limit

    def window(self, size: int, ready: bool = True) -> list[tuple[Any, ...]]:
        """The first ``size`` rows of the dispatch order outside the full groups (not
        ``ready``: of the finalize runs and paused rows only)."""
        skip = sorted(self.full)
        rows = _window(self.core, size, skip, self.max_priority, self.paused_rows, ready)
        if ready and self.aging is not None:
            apart = sorted(g for g in self.flow.pauses if g not in self.full)
            rows += _aged(self.core, size, skip, self.aging, self.now, apart)
            rows = list({row[0]: row for row in rows}.values())
        if self.aging is not None or self.paused_rows:
            rows.sort(key=self.order)
        return rows[:size]


def _aged(
    core: Core, size: int, skip: list[str], aging: flow.Aging, now: int, apart: list[str]
) -> list[tuple[Any, ...]]:
    """The rows aging may raise into the first ``size``: the oldest of each priority level less
    urgent than ``max_effective`` that waited past one interval beyond the grace period. Within
    a level ids follow submission times, so these are each level's first rows by id — except
    in the groups that were paused (``apart``), whose time paused does not count: each of those
    has its own oldest rows read, so that they cannot fill the level's window and hide more
    aged rows of other groups behind them."""
    columns = CLAIM_COLUMNS
    old_enough = now - aging.grace_ms - aging.interval_ms
    where = ""
    if skip or apart:
        marks = ", ".join("?" * (len(skip) + len(apart)))
        where = f" AND (group_key IS NULL OR group_key NOT IN ({marks}))"
    out: list[tuple[Any, ...]] = []
    level = aging.max_effective
    while True:
        level = core.value(
            "SELECT min(p) FROM (SELECT min(priority) AS p FROM tasks INDEXED BY "
            "tasks_ready_ungrouped WHERE status = 'pending' AND group_key IS NULL AND priority > ? "
            "UNION ALL SELECT min(priority) FROM tasks INDEXED BY tasks_ready_grouped "
            "WHERE status = 'pending' AND group_key IS NOT NULL AND priority > ?)",
            (level, level),
        )
        if level is None:
            return out
        # Each ready index gives the level's rows by id: SQLite merges the two and stops at
        # ``size`` (the oldest; those not old enough yet only stand at their own priority).
        aged = "AND phase = 'execute' AND priority = ?"
        oldest = core.all(
            f"SELECT {columns} FROM tasks INDEXED BY tasks_ready_ungrouped WHERE status = "
            f"'pending' AND group_key IS NULL {aged} UNION ALL SELECT {columns} FROM tasks "
            f"INDEXED BY tasks_ready_grouped WHERE status = 'pending' AND group_key IS NOT NULL "
            f"{aged}{where} ORDER BY id LIMIT +?",
            (level, level, *skip, *apart, size),
        )
        for group in apart:
            oldest += core.all(
                f"SELECT {columns} FROM tasks INDEXED BY tasks_ready_by_group WHERE status = "
                f"'pending' AND group_key IS NOT NULL AND group_key = ? {aged} "
                "ORDER BY id LIMIT +?",
                (group, level, size),
            )
        if any(row[_CREATED] <= old_enough for row in oldest):  # else none has aged
            out += oldest


def walk(
    core: Core,
    limit: int,
    max_priority: int = 255,
    preempt_priority: int = -1,
    now: int | None = None,
    aging: flow.Aging | None = None,
) -> tuple[Pick | None, bool]:
    """The rows a claim of ``limit`` takes now, in dispatch order (``Pick.out``), and whether the
    walk saw every row it could have taken (``exhausted``: asking again changes nothing until
    something does, or the next scheduled task is due)."""
    queries.check_limit(limit)
    now = core.now() if now is None else now
    promoted = promote_due(core, now)
    if limit == 0:
        return None, False
    pick = Pick(core, limit, max_priority, preempt_priority, now, aging)
    try:
        if pick.flow.weighted:
            return pick, fair.walk(core, pick, aging, promoted)
        return pick, _walk(pick)
    finally:
        if pick.gate is not None:
            pick.gate.save()


def _walk(pick: Pick) -> bool:
    for _ in range(MAX_ROUNDS):
        if pick.done:
            return False
        size = pick.limit + len(
            pick.out
        )  # rows taken in an earlier round come back: look past them
        pick.passed_over = False
        rows = pick.window(size)
        for row in rows:
            if pick.offer(row) == "held":
                return True  # held: everything behind is less urgent
            if pick.done:
                return False
        if not pick.passed_over or len(rows) < size:
            return True
    return False


def claim_rows(
    core: Core, ids: Sequence[int], now: int, effective: Mapping[int, int] | None = None
) -> list[TaskRow]:
    """Move these rows, if still pending or paused, to running (``started_at = now``); the
    claimed rows with payload, in the order of ``ids`` (with ``effective``: the priorities aging
    gave them)."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    if not all(-(2**63) <= task_id < 2**63 for task_id in wanted):
        raise InvalidRequest("an integer is outside SQLite's 64-bit range")
    # One statement for the whole claim, the ids as one JSON array.
    # A TTL counted from the first attempt starts with the first claim.
    rows = core.all(
        "UPDATE tasks SET status = 'running', rate_deferred = NULL, started_at_ms = ?1, "
        "run_started_at_ms = "
        "CASE WHEN phase = 'execute' OR run_started_at_ms IS NULL THEN ?1 "
        "ELSE run_started_at_ms END, expires_at_ms = CASE WHEN expires_at_ms IS NULL "
        "AND ttl_s IS NOT NULL THEN ?1 + CAST(ttl_s * 1000 AS INTEGER) ELSE expires_at_ms END "
        "WHERE id IN (SELECT value FROM json_each(?2)) "
        "AND (status = 'pending' OR status = 'paused') "
        f"RETURNING {TASK_COLUMNS}",
        (now, json.dumps(wanted)),
    )
    position = {task_id: i for i, task_id in enumerate(wanted)}
    rows.sort(key=lambda row: position[row[0]])
    if not effective:
        return [task_row(row) for row in rows]
    return [
        replace(task_row(row), effective_priority=effective.get(row[0], row[_PRIORITY]))
        for row in rows
    ]


def claim_next(
    core: Core,
    limit: int,
    max_priority: int,
    preempt_priority: int,
    now: int,
    aging: flow.Aging | None = None,
) -> tuple[list[TaskRow], bool]:
    """Walk and claim in one step; the claimed rows and whether the walk was exhausted."""
    pick, exhausted = walk(core, limit, max_priority, preempt_priority, now, aging)
    if pick is None:
        return [], exhausted
    return claim_rows(core, [r[0] for r in pick.out], now, pick.effective), exhausted


def claim_ids(core: Core, ids: Iterable[int], now: int) -> list[TaskRow]:
    """Claim chosen rows (the Dispatcher's gate picked them from a peek), in dispatch order, each
    only while its group has room: a limit lowered since the peek still holds."""
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    if not all(isinstance(i, int) and -(2**63) <= i < 2**63 for i in wanted):
        raise InvalidRequest("an integer is outside SQLite's 64-bit range")
    rows = core.all(
        f"SELECT {CLAIM_COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?)) "
        "AND (status = 'pending' OR status = 'paused')",
        (json.dumps(wanted),),
    )
    policy = load_policy(core)
    running = busy(core).running
    paused = flow.load(core).paused_at(now)
    keep: list[int] = []
    total = 0
    for row in sorted(rows, key=_order):
        group = row[_GROUP]
        if group is not None:
            if group in paused:
                continue
            room = policy.limit(group)
            if room is not None and running[group] >= room:
                continue
        if not _fits(total, row, len(keep)):
            break
        if group is not None:
            running[group] += 1
        total += row[CLAIM_SIZE]
        keep.append(row[0])
    return claim_rows(core, keep, now)
