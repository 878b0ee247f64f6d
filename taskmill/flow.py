"""Flow control's public types: ``RateLimit``, ``AgingConfig`` and what snapshots report.

They only describe: the GroupLimiter keeps the policy in the Store, where the claim applies it
(see docs/semantics.md, "Flow control").
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from bus.kinds_flow import (
    GroupAllocationRow,
    PausedGroupRow,
    PauseGroupRequest,
    RateLimitRow,
    ResetGroupWeights,
    ResumeGroupRequest,
    SetGroupMinimumSlots,
    SetGroupWeight,
    SetRateLimit,
)
from taskmill.priority import Priority
from taskmill.records import _ToDict, datetime_to_ms, ms_to_datetime
from taskmill.retry import seconds

__all__ = ["AgingConfig", "GroupAllocationInfo", "PausedGroupInfo", "RateLimit", "RateLimitInfo"]


def _positive_int(name: str, n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"{name} must be an integer > 0, got {n!r}")
    return n


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: ``permits`` tasks per ``interval`` (seconds), bursts of up to ``burst``.

    ``RateLimit.per_second(10)``, ``RateLimit.per_minute(600)`` (burst = permits), and
    ``.with_burst(b)`` for another burst."""

    permits: int
    interval: float
    burst: int

    def __post_init__(self) -> None:
        _positive_int("a rate limit's permits", self.permits)
        _positive_int("a rate limit's burst", self.burst)
        interval = self.interval
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ValueError(f"a rate limit's interval must be seconds > 0, got {interval!r}")
        if not math.isfinite(interval) or round(interval * 1000) <= 0:
            raise ValueError(f"a rate limit's interval must be at least 1 ms, got {interval!r}")

    @classmethod
    def per_second(cls, n: int) -> RateLimit:
        return cls(_positive_int("a rate", n), 1.0, n)

    @classmethod
    def per_minute(cls, n: int) -> RateLimit:
        return cls(_positive_int("a rate", n), 60.0, n)

    def with_burst(self, burst: int) -> RateLimit:
        return replace(self, burst=_positive_int("a rate limit's burst", burst))

    def to_wire(self) -> tuple[int, int, int]:
        """(permits, interval_ms, burst)."""
        return (self.permits, round(self.interval * 1000), self.burst)


@dataclass(frozen=True)
class AgingConfig:
    """Priority aging: a task that waited ``grace_period`` seconds is ordered one level more
    urgent per ``interval`` seconds waited beyond it, up to ``max_effective_priority``; it is
    never ordered less urgent than its own priority, and its stored priority never changes.
    ``urgent_threshold``: with fair shares, tasks at least this urgent (after aging) start
    ahead of any share (None: none do)."""

    grace_period: float | timedelta = 300.0
    interval: float | timedelta = 60.0
    max_effective_priority: int = Priority.HIGH
    urgent_threshold: int | None = None

    def __post_init__(self) -> None:
        grace = seconds("grace_period", self.grace_period)
        interval = seconds("interval", self.interval, positive=True)
        if interval <= 0 or round(interval * 1000) <= 0:
            raise ValueError(f"an aging interval must be at least 1 ms, got {self.interval!r}")
        cap = Priority(self.max_effective_priority)
        if self.urgent_threshold is not None:
            urgent = Priority(self.urgent_threshold)
            if urgent > cap:
                raise ValueError(
                    "urgent_threshold must be at least as urgent as max_effective_priority"
                )
        object.__setattr__(self, "grace_period", grace)
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "max_effective_priority", cap)

    def to_wire(self) -> tuple[int, int, int, int | None]:
        """(grace_ms, interval_ms, max_effective, urgent)."""
        grace = seconds("grace_period", self.grace_period)
        interval = seconds("interval", self.interval)
        return (
            round(grace * 1000),
            round(interval * 1000),
            int(self.max_effective_priority),
            None if self.urgent_threshold is None else int(self.urgent_threshold),
        )

    @classmethod
    def from_wire(cls, row: list[int | None]) -> AgingConfig:
        grace_ms, interval_ms, cap, urgent = row
        assert grace_ms is not None and interval_ms is not None and cap is not None
        return cls(grace_ms / 1000, interval_ms / 1000, cap, urgent)


@dataclass(frozen=True)
class RateLimitInfo(_ToDict):
    """A rate limit in force: ``scope`` ``"type:<task type>"`` or ``"group:<group>"``, its
    ``permits`` per ``interval`` seconds, ``burst``, and the tokens available now."""

    scope: str
    permits: int
    interval: float
    burst: int
    available_tokens: float

    @classmethod
    def from_wire(cls, row: RateLimitRow) -> RateLimitInfo:
        return cls(row.scope, row.permits, row.interval_ms / 1000, row.burst, row.available_tokens)


@dataclass(frozen=True)
class PausedGroupInfo(_ToDict):
    """A paused group: since when, until when (None: until resumed), and how many of its tasks
    wait to start."""

    group: str
    paused_at: datetime
    resume_at: datetime | None
    paused_task_count: int

    @classmethod
    def from_wire(cls, row: PausedGroupRow) -> PausedGroupInfo:
        resume = None if row.resume_at_ms is None else ms_to_datetime(row.resume_at_ms)
        return cls(row.group, ms_to_datetime(row.paused_at_ms), resume, row.paused_task_count)


@dataclass(frozen=True)
class GroupAllocationInfo(_ToDict):
    """A group with a weight or minimum slots (``snapshot().group_allocations``): its weight
    (the default one when it has none of its own), its minimum (None: none), its running and
    pending tasks and its limit (``cap``, None: unlimited). ``allocated_slots`` is always 0 in
    a snapshot: slots are given claim by claim, not held."""

    group: str
    weight: float
    allocated_slots: int
    running: int
    pending: int
    min_slots: int | None
    cap: int | None

    @classmethod
    def from_wire(cls, row: GroupAllocationRow) -> GroupAllocationInfo:
        return cls(row.group, row.weight, 0, row.running, row.pending, row.min_slots, row.cap)


def until_ms(until: datetime | float | timedelta | None) -> int | None:
    """A pause's end as epoch ms: a ``datetime`` (an instant), or seconds / a ``timedelta``
    from now."""
    if until is None:
        return None
    if isinstance(until, datetime):
        return datetime_to_ms(until)
    delay = seconds("until", until, positive=True)
    return int((time.time() + delay) * 1000)


# -- the messages of the runtime controls (Scheduler, Client and AsyncClient send the same) -----


def _scope_name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} must be a non-empty string, got {name!r}")
    return name


def set_rate_limit(kind: str, name: str, limit: RateLimit | None) -> SetRateLimit:
    """``kind`` "type" or "group"; ``limit`` None removes the limit."""
    scope = f"{kind}:{_scope_name('task type' if kind == 'type' else 'group', name)}"
    if limit is None:
        return SetRateLimit(scope)
    if not isinstance(limit, RateLimit):
        raise TypeError(f"expected a RateLimit or None, got {limit!r}")
    return SetRateLimit(scope, list(limit.to_wire()))


def check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ValueError(f"a group weight must be a number > 0, got {weight!r}")
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"a group weight must be a number > 0, got {weight!r}")
    return float(weight)


MAX_MINIMUM_SLOTS = 2**31 - 1


def check_minimum_slots(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_MINIMUM_SLOTS:
        raise ValueError(
            f"a group's minimum slots must be an integer in 0..{MAX_MINIMUM_SLOTS}, got {n!r}"
        )
    return n


def set_group_weight(group: str, weight: float) -> SetGroupWeight:
    return SetGroupWeight(_scope_name("group", group), check_weight(weight))


def remove_group_weight(group: str) -> SetGroupWeight:
    return SetGroupWeight(_scope_name("group", group), None)


def set_group_minimum_slots(group: str, n: int) -> SetGroupMinimumSlots:
    return SetGroupMinimumSlots(_scope_name("group", group), check_minimum_slots(n))


def reset_group_weights() -> ResetGroupWeights:
    return ResetGroupWeights()


def pause_group(group: str, until: datetime | float | timedelta | None) -> PauseGroupRequest:
    when = until_ms(until)
    if when is not None and when <= time.time() * 1000:
        raise ValueError(f"a pause's end must be in the future, got {until!r}")
    return PauseGroupRequest(_scope_name("group", group), when)


def resume_group(group: str) -> ResumeGroupRequest:
    return ResumeGroupRequest(_scope_name("group", group))
