"""Flow control where the claim runs: rate limits, paused groups and fair shares.

The GroupLimiter keeps this policy in the Store ahead of time (``store.set_flow``,
``store.pause_group``), like the group limits, so the claim applies it in its own transaction
and no task waits on a round trip. Read once and kept in memory (``Core.cached``) until it
changes; a claim without any of it reads nothing more than before.

**Rate limits** are token buckets, one per scope (``type:<task type>``, ``group:<group>``):
``burst`` tokens at most, refilled continuously at ``permits`` per ``interval_ms``, full when the
limit is first set. A claimed task takes one token of each of its scopes.

A group whose bucket is empty is passed over, like a full group, until its next token: its
tasks stay in the queue unchanged (a claim passes a group over at no cost, so rewriting them
would only add writes), and the Dispatcher is woken when the token is due (``next_wake``). A
task whose type's bucket is empty cannot be passed over so: its type's tasks lie anywhere in the
dispatch order, and every claim would walk them again. It is scheduled for that bucket's next
token instead — after the tokens already promised to the tasks it denied before, so the denied
tasks come back one token apart, not all at once — and the claim goes on with the tasks behind.

The buckets are written in the claim's transaction (``rate_buckets``). A restarted Store goes on
from the tokens left, refilled for the time that passed: a restart never hands out a fresh
burst beyond what the limit allows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.store.core import Core
from bus.errors import InvalidRequest
from bus.kinds_flow import CLEARED_WEIGHT

LAYERS = ("configured", "runtime")
SCOPE_KINDS = ("type", "group")
DEFAULT_WEIGHT = ""
"""The ``group_key`` of the default weight in ``group_shares``."""
CLEARED = CLEARED_WEIGHT
"""A runtime weight that removes the group's weight, the configured one too: the group has the
default weight (kept across restarts, like every runtime value)."""
_CLEARED_STORED = math.inf
"""How ``group_shares`` holds ``CLEARED`` (its weights must be > 0; no weight given is
infinite)."""


@dataclass(frozen=True, slots=True)
class Rate:
    permits: int
    interval_ms: int
    burst: int

    @property
    def step_ms(self) -> float:
        """Milliseconds between two tokens."""
        return self.interval_ms / self.permits


def check_rate(permits: object, interval_ms: object, burst: object) -> Rate:
    for name, value in (("permits", permits), ("interval", interval_ms), ("burst", burst)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InvalidRequest(f"a rate limit's {name} must be an integer > 0, got {value!r}")
    assert isinstance(permits, int) and isinstance(interval_ms, int) and isinstance(burst, int)
    return Rate(permits, interval_ms, burst)


def check_scope(scope: object) -> str:
    if not isinstance(scope, str) or scope.partition(":")[0] not in SCOPE_KINDS:
        raise InvalidRequest(
            f"a rate limit scope is 'type:<task type>' or 'group:<group>', got {scope!r}"
        )
    if not scope.partition(":")[2]:
        raise InvalidRequest(f"a rate limit scope names its task type or group, got {scope!r}")
    return scope


def check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise InvalidRequest(f"a group weight must be a number > 0, got {weight!r}")
    if not math.isfinite(weight):
        raise InvalidRequest(f"a group weight must be finite, got {weight!r}")
    return float(weight)


def check_slots(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidRequest(f"a group's minimum slots must be an integer >= 0, got {n!r}")
    return n


@dataclass(slots=True)
class Bucket:
    tokens: float
    at_ms: int
    next_ms: int
    """A task type's bucket: the latest due time given to a task it denied. A group's: when the
    next token is due, which the group, passed over, waits for."""
    dirty: bool = False
    again_ms: int = 0
    """The latest due time given to a task denied again (see ``deny``); not kept on disk: after
    a restart the denied tasks meet the bucket as it is."""

    def refill(self, rate: Rate, now: int) -> None:
        """Not a change to write: the kept (tokens, at_ms) give the same tokens at any later
        time (only ``take`` and ``deny`` make a bucket ``dirty``)."""
        if now > self.at_ms:
            self.tokens += (now - self.at_ms) / rate.step_ms
            self.at_ms = now
        if self.tokens > rate.burst:  # also when the limit was lowered
            self.tokens = float(rate.burst)

    def has_token(self) -> bool:
        return self.tokens >= 1.0 - 1e-9

    def take(self) -> None:
        self.tokens -= 1.0
        self.dirty = True

    def token_ms(self, rate: Rate, now: int) -> int:
        """When the bucket (refilled to ``now``), which has no whole token, has one: later
        than ``now`` (a wake-up at ``now`` would be forgotten as past), and a float error of a
        millionth of a millisecond is not a millisecond more."""
        return now + max(math.ceil((1.0 - self.tokens) * rate.step_ms - 1e-6), 1)

    def deny(self, rate: Rate, now: int, waited: bool = False) -> int:
        """The due time of a task denied now: the next token not yet promised to another.

        A task that ``waited`` already (a rate limit deferred it, and it came due and found the
        bucket a fraction short) goes ahead of the tasks first denied, in a line of its own. A
        claim comes a few milliseconds after a due time, more or fewer each time, and a bucket
        holding one token at most cannot bank the difference: sent behind every promised task,
        such a task would leave its token unused (a limit would run at half its rate); sent to
        the very next token with the others that waited, all but one would be denied again at
        every token."""
        step = math.ceil(rate.step_ms)
        if waited:
            due = self.again_ms = max(self.token_ms(rate, now), self.again_ms + step)
        else:
            due = self.next_ms = max(self.token_ms(rate, now), self.next_ms + step)
        self.dirty = True
        return due


@dataclass(slots=True)
class FlowPolicy:
    """The rate limits, fair shares and pauses in force (runtime values win)."""

    layers: dict[str, dict[str, Rate | None]] = field(
        default_factory=lambda: {layer: {} for layer in LAYERS}
    )
    rates: dict[str, Rate] = field(default_factory=dict)
    type_rates: dict[str, Rate] = field(default_factory=dict)
    group_rates: dict[str, Rate] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    min_slots: dict[str, int] = field(default_factory=dict)
    weighted: bool = False
    """Any weight or minimum set: the claim shares slots among groups (``fair``)."""
    paused: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """Group → (paused at, resume at or None), epoch ms."""
    pauses: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Group → its past pauses (paused at, ended at), from ``group_pause_log``."""

    def weight(self, group: str | None) -> float:
        if group is None:
            return self.default_weight
        return self.weights.get(group, self.default_weight)

    def paused_at(self, now: int) -> set[str]:
        """The groups paused at ``now`` (a pause whose time to resume has come is over)."""
        return {g for g, (_, until) in self.paused.items() if until is None or until > now}

    def paused_ms(self, group: str, since: int, now: int) -> int:
        """How long ``group`` was paused between ``since`` and ``now``: the time aging does not
        count for a task of the group submitted at ``since``."""
        spans = list(self.pauses.get(group, ()))
        current = self.paused.get(group)
        if current is not None:
            spans.append((current[0], now if current[1] is None else min(current[1], now)))
        return sum(max(0, min(end, now) - max(start, since)) for start, end in spans)

    def next_resume(self, now: int) -> int | None:
        times = [until for _, until in self.paused.values() if until is not None and until > now]
        return min(times, default=None)


def load(core: Core) -> FlowPolicy:
    return core.cached("flow_policy", lambda: _read(core))


def _read(core: Core) -> FlowPolicy:
    policy = FlowPolicy()
    for layer, scope, permits, interval_ms, burst in core.all(
        "SELECT layer, scope, permits, interval_ms, burst FROM rate_limits"
    ):
        rate = None if permits is None else Rate(permits, interval_ms, burst)
        policy.layers[layer][scope] = rate
    merged = {**policy.layers["configured"], **policy.layers["runtime"]}
    policy.rates = {scope: rate for scope, rate in merged.items() if rate is not None}
    for scope, rate in policy.rates.items():
        kind, _, name = scope.partition(":")
        (policy.type_rates if kind == "type" else policy.group_rates)[name] = rate
    shares: dict[str, dict[str, tuple[float | None, int | None]]] = {g: {} for g in LAYERS}
    for layer, group, weight, slots in core.all(
        "SELECT layer, group_key, weight, min_slots FROM group_shares"
    ):
        shares[layer][group] = (weight, slots)
    for layer in LAYERS:  # the runtime layer last: its values win
        for group, (weight, slots) in shares[layer].items():
            if group == DEFAULT_WEIGHT:
                if weight is not None:
                    policy.default_weight = weight
                continue
            if weight == _CLEARED_STORED:
                policy.weights.pop(group, None)
            elif weight is not None:
                policy.weights[group] = weight
            if slots == 0:  # a runtime 0 removes the configured minimum
                policy.min_slots.pop(group, None)
            elif slots is not None:
                policy.min_slots[group] = slots
    policy.weighted = bool(policy.weights or policy.min_slots)
    for group, paused_at, resume_at in core.all(
        "SELECT group_key, paused_at_ms, resume_at_ms FROM paused_groups"
    ):
        policy.paused[group] = (paused_at, resume_at)
    for group, paused_at, ended_at in core.all(
        "SELECT group_key, paused_at_ms, ended_at_ms FROM group_pause_log"
    ):
        policy.pauses.setdefault(group, []).append((paused_at, ended_at))
    return policy


def set_flow(
    core: Core,
    layer: str,
    rates: Mapping[str, tuple[int, int, int] | None],
    weights: Mapping[str, float | None],
    min_slots: Mapping[str, int | None],
    default_weight: float | None,
    replace: bool,
    reset_weights: bool = False,
) -> None:
    """Change one layer: ``replace`` clears it first. A rate None removes the scope's limit (in
    the runtime layer: the configured one too, across restarts); a weight or minimum None
    removes the layer's value; in the runtime layer a weight ``CLEARED`` or a minimum 0 removes
    the configured one too, and ``reset_weights`` does so for every group's weight (the
    default weight stays). Everything is checked before anything is written."""
    if layer not in LAYERS:
        raise InvalidRequest(f"a flow policy layer is one of {LAYERS}, got {layer!r}")
    checked_rates = {
        check_scope(scope): None if rate is None else check_rate(*_triple(rate))
        for scope, rate in rates.items()
    }
    for group in (*weights, *min_slots):
        if not isinstance(group, str) or not group:
            raise InvalidRequest(f"a group name must be a non-empty string, got {group!r}")
    runtime = layer == "runtime"
    checked_weights = {
        g: w if w is None or (runtime and w == CLEARED) else check_weight(w)
        for g, w in weights.items()
    }
    checked_slots = {g: None if n is None else check_slots(n) for g, n in min_slots.items()}
    if default_weight is not None:
        default_weight = check_weight(default_weight)
    core.forget("flow_policy")
    core.forget("rate_buckets")
    core.forget("rate_waits")
    if replace:
        core.run("DELETE FROM rate_limits WHERE layer = ?", (layer,))
        core.run("DELETE FROM group_shares WHERE layer = ?", (layer,))
    for scope, rate in checked_rates.items():
        if rate is None and layer == "configured":
            core.run("DELETE FROM rate_limits WHERE layer = ? AND scope = ?", (layer, scope))
        else:
            values = (
                (None, None, None) if rate is None else (rate.permits, rate.interval_ms, rate.burst)
            )
            core.run(
                "INSERT OR REPLACE INTO rate_limits VALUES (?, ?, ?, ?, ?)", (layer, scope, *values)
            )
        if rate is None and layer == "runtime":
            core.run("DELETE FROM rate_buckets WHERE scope = ?", (scope,))
        if layer == "runtime":
            undefer(core, scope)
    if reset_weights and runtime:
        core.run(
            "UPDATE group_shares SET weight = NULL WHERE layer = 'runtime' AND group_key != ''"
        )
        for (group,) in core.all(
            "SELECT group_key FROM group_shares WHERE layer = 'configured' AND group_key != '' "
            "AND weight IS NOT NULL"
        ):
            checked_weights.setdefault(group, CLEARED)
        core.run(
            "DELETE FROM group_shares WHERE layer = 'runtime' AND weight IS NULL "
            "AND min_slots IS NULL"
        )
    if default_weight is not None:
        checked_weights[DEFAULT_WEIGHT] = default_weight
    for group, weight in checked_weights.items():
        _set_share(core, layer, group, "weight", _CLEARED_STORED if weight == CLEARED else weight)
    for group, slots in checked_slots.items():
        _set_share(core, layer, group, "min_slots", slots)


def _triple(rate: object) -> tuple[object, object, object]:
    if not isinstance(rate, list | tuple) or len(rate) != 3:
        raise InvalidRequest(f"a rate limit is (permits, interval_ms, burst), got {rate!r}")
    return rate[0], rate[1], rate[2]


def _set_share(core: Core, layer: str, group: str, column: str, value: float | None) -> None:
    core.run(
        "INSERT INTO group_shares (layer, group_key) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (layer, group),
    )
    core.run(
        f"UPDATE group_shares SET {column} = ? WHERE layer = ? AND group_key = ?",
        (value, layer, group),
    )
    core.run(
        "DELETE FROM group_shares WHERE layer = ? AND group_key = ? "
        "AND weight IS NULL AND min_slots IS NULL",
        (layer, group),
    )


@dataclass(frozen=True, slots=True)
class Aging:
    """Priority aging: a task waiting longer than ``grace_ms`` is ordered one level more urgent
    per ``interval_ms`` waited beyond it, never past ``max_effective`` (and never less urgent
    than its own priority); ``urgent``: what fair shares let go first (None: nothing)."""

    grace_ms: int
    interval_ms: int
    max_effective: int
    urgent: int | None = None

    def effective(self, priority: int, created_at_ms: int, now: int, paused_ms: int = 0) -> int:
        """``paused_ms``: how long the task's group was paused since the task was submitted,
        which does not count as waiting."""
        if priority <= self.max_effective:
            return priority
        steps = (now - created_at_ms - paused_ms - self.grace_ms) // self.interval_ms
        return max(priority - steps, self.max_effective) if steps > 0 else priority


# -- buckets -----------------------------------------------------------------------------------


def buckets(core: Core) -> dict[str, Bucket]:
    """Every bucket kept so far, by scope (a scope without one starts full when first used)."""
    return core.cached(
        "rate_buckets",
        lambda: {
            scope: Bucket(tokens, at_ms, next_ms)
            for scope, tokens, at_ms, next_ms in core.all(
                "SELECT scope, tokens, at_ms, next_ms FROM rate_buckets"
            )
        },
    )


class Gate:
    """The rate limits of one claim: takes tokens, or says when a denied task is due."""

    def __init__(self, core: Core, policy: FlowPolicy, now: int) -> None:
        self._core = core
        self._policy = policy
        self._now = now
        self._buckets = buckets(core)
        # This claim is the wake-up of every group whose token is due by now: it looks at them
        # again, and a group still short is woken for its next token anew (``_wait``).
        pending = waits(core)
        for scope in [scope for scope, at in pending.items() if at <= now]:
            del pending[scope]

    def _bucket(self, scope: str, rate: Rate) -> Bucket:
        bucket = self._buckets.get(scope)
        if bucket is None:
            bucket = self._buckets[scope] = Bucket(float(rate.burst), self._now, 0, dirty=True)
        bucket.refill(rate, self._now)
        return bucket

    def group_open(self, group: str) -> bool:
        """Whether the group's bucket, if it has one, holds a token now; when it does not, the
        Dispatcher is to be woken when it will (``next_wake``)."""
        rate = self._policy.group_rates.get(group)
        if rate is None:
            return True
        bucket = self._bucket("group:" + group, rate)
        if bucket.has_token():
            return True
        self._wait(group, bucket, rate)
        return False

    def wake_at(self, group: str) -> int:
        """When the group ``group_open`` found without a token will have one."""
        return waits(self._core)["group:" + group]

    def _wait(self, group: str, bucket: Bucket, rate: Rate) -> int:
        wake = bucket.token_ms(rate, self._now)
        waits(self._core)["group:" + group] = wake
        if bucket.next_ms != wake:
            bucket.next_ms, bucket.dirty = wake, True
        return wake

    def admit(self, task_type: str, group: str | None, waited: bool = False) -> tuple[str, int]:
        """Take a token of each of the task's scopes: ``("take", 0)``. Or, taking none: the
        group's bucket is empty, ``("group", when its next token is due)``; the task type's is,
        ``("type", the task's due time)``. ``waited``: a rate limit deferred the task before
        (see ``Bucket.deny``)."""
        taken: list[Bucket] = []
        if group is not None:
            rate = self._policy.group_rates.get(group)
            if rate is not None:
                bucket = self._bucket("group:" + group, rate)
                if not bucket.has_token():
                    return "group", self._wait(group, bucket, rate)
                taken.append(bucket)
        rate = self._policy.type_rates.get(task_type)
        if rate is not None:
            bucket = self._bucket("type:" + task_type, rate)
            if not bucket.has_token():
                return "type", bucket.deny(rate, self._now, waited)
            taken.append(bucket)
        for bucket in taken:
            bucket.take()
        return "take", 0

    def save(self) -> None:
        """Write the buckets this claim changed (in its transaction)."""
        rows = []
        for scope, bucket in self._buckets.items():
            if bucket.dirty:
                rows.append((scope, bucket.tokens, bucket.at_ms, bucket.next_ms))
                bucket.dirty = False
        if rows:
            self._core.many("INSERT OR REPLACE INTO rate_buckets VALUES (?, ?, ?, ?)", rows)


def waits(core: Core) -> dict[str, int]:
    """The groups passed over for a token: scope → when it is due (kept in memory, rebuilt from
    the buckets)."""
    return core.cached(
        "rate_waits",
        lambda: {
            scope: bucket.next_ms
            for scope, bucket in buckets(core).items()
            if scope.startswith("group:") and bucket.next_ms
        },
    )


def next_wake(core: Core) -> int | None:
    """When the first group passed over for a token may start again, or None. A wake-up is
    forgotten by the next claim after its time (``Gate``), never by the clock alone: a claim
    that took a millisecond must not lose the wake-up it has just set."""
    return min(waits(core).values(), default=None)


def defer(core: Core, task_id: int, due_ms: int) -> None:
    """A task a rate limit denied waits, scheduled, for its token (marked, so that a change of
    the limit can bring it back: ``undefer``)."""
    core.run(
        "UPDATE tasks SET status = 'scheduled', due_at_ms = ?, rate_deferred = 1 WHERE id = ?",
        (due_ms, task_id),
    )


def undefer(core: Core, scope: str) -> None:
    """The limit of ``scope`` changed: the tasks it deferred are due at once, to meet the new
    bucket (a limit raised or removed must not leave them waiting for the old one's tokens)."""
    kind, _, name = scope.partition(":")
    column = "task_type" if kind == "type" else "group_key"
    core.run(
        "UPDATE tasks SET status = 'pending', due_at_ms = NULL, rate_deferred = NULL "
        f"WHERE status = 'scheduled' AND rate_deferred IS NOT NULL AND {column} = ?",
        (name,),
    )
    core.run("UPDATE rate_buckets SET next_ms = 0 WHERE scope = ?", (scope,))


def rate_state(core: Core, now: int) -> list[tuple[str, int, int, int, float]]:
    """Each rate limit in force: (scope, permits, interval_ms, burst, tokens available now)."""
    policy = load(core)
    kept = buckets(core)
    out = []
    for scope, rate in sorted(policy.rates.items()):
        bucket = kept.get(scope)
        if bucket is None:
            tokens = float(rate.burst)
        else:
            elapsed = max(0, now - bucket.at_ms)
            tokens = min(float(rate.burst), bucket.tokens + elapsed / rate.step_ms)
        out.append((scope, rate.permits, rate.interval_ms, rate.burst, tokens))
    return out


# -- paused groups -----------------------------------------------------------------------------


def _waiting(core: Core, group: str) -> int:
    """The group's tasks that have not started: pending, scheduled, or paused by preemption."""
    return int(
        core.value(
            "SELECT count(*) FROM tasks WHERE group_key = ? "
            "AND status IN ('pending', 'scheduled', 'paused')",
            (group,),
        )
    )


def pause_group(core: Core, group: str, until_ms: int | None, now: int) -> tuple[int, int] | None:
    """Pause ``group`` (until ``until_ms``, or until resumed): (its waiting tasks, its running
    ones), or None when it was paused already (its time to resume is then set anew)."""
    if not isinstance(group, str) or not group:
        raise InvalidRequest(f"a group name must be a non-empty string, got {group!r}")
    if until_ms is not None and (isinstance(until_ms, bool) or not isinstance(until_ms, int)):
        raise InvalidRequest(f"a pause's end must be a time in epoch ms, got {until_ms!r}")
    if until_ms is not None and until_ms <= now:
        raise InvalidRequest("a pause's end must be in the future")
    policy = load(core)
    already = group in policy.paused_at(now)
    core.forget("flow_policy")
    if group in policy.paused and not already:  # a pause whose end passed, not resumed yet
        _log_pause(core, group, policy.paused[group], now)
    if already:
        core.run("UPDATE paused_groups SET resume_at_ms = ? WHERE group_key = ?", (until_ms, group))
        return None
    core.run("INSERT OR REPLACE INTO paused_groups VALUES (?, ?, ?)", (group, now, until_ms))
    running = core.value(
        "SELECT count(*) FROM tasks WHERE status = 'running' AND group_key = ?", (group,)
    )
    return _waiting(core, group), int(running)


def resume_group(core: Core, group: str, now: int, due_only: bool = False) -> int | None:
    """Resume ``group``: its waiting tasks (now free to start), or None when it was not paused.
    ``due_only``: only when its time to resume has come (the GroupLimiter's timer)."""
    if not isinstance(group, str) or not group:
        raise InvalidRequest(f"a group name must be a non-empty string, got {group!r}")
    pause = load(core).paused.get(group)
    if pause is None or (due_only and (pause[1] is None or pause[1] > now)):
        return None
    core.forget("flow_policy")
    core.run("DELETE FROM paused_groups WHERE group_key = ?", (group,))
    _log_pause(core, group, pause, now)
    if pause[1] is None or pause[1] > now:
        return _waiting(core, group)
    # The claim lets the group's tasks start once its time to resume has come, maybe before
    # this: those it started since count as resumed too.
    started = core.value(
        "SELECT count(*) FROM tasks WHERE group_key = ? AND started_at_ms >= ?", (group, pause[1])
    )
    return _waiting(core, group) + int(started)


def _log_pause(core: Core, group: str, pause: tuple[int, int | None], now: int) -> None:
    """Keep an ended pause for aging, and forget those that ended before the oldest active
    task was submitted (ids follow submission times: the first row is the oldest)."""
    start, until = pause
    end = now if until is None else min(until, now)
    if end > start:
        core.run("INSERT OR REPLACE INTO group_pause_log VALUES (?, ?, ?)", (group, start, end))
    oldest = core.value("SELECT created_at_ms FROM tasks ORDER BY id LIMIT 1")
    if oldest is None:
        core.run("DELETE FROM group_pause_log")
    else:
        core.run("DELETE FROM group_pause_log WHERE ended_at_ms <= ?", (oldest,))


def paused_state(core: Core) -> list[tuple[str, int, int | None, int]]:
    """Each paused group: (group, paused at, resume at or None, its waiting tasks)."""
    return [
        (group, at, until, _waiting(core, group))
        for group, (at, until) in sorted(load(core).paused.items())
    ]
