"""Configuration values: retention, store, shutdown, scheduler, group limits and sampling.

All are plain values with validated fields (``ValueError`` for a value out of range), built once
and passed down; nothing here reads the environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from taskmill.priority import Priority

__all__ = [
    "GroupLimits",
    "RetentionPolicy",
    "SamplerConfig",
    "SchedulerConfig",
    "ShutdownMode",
    "StoreConfig",
]


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _number(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


@dataclass(frozen=True)
class RetentionPolicy:
    """How much history the Store keeps: the newest ``keep`` rows, or rows newer than ``days``.

    Build it with ``RetentionPolicy.max_count(n)`` (default 10,000 rows) or
    ``RetentionPolicy.max_age_days(d)``; exactly one of ``keep`` and ``days`` is set
    (``RetentionPolicy()`` is ``max_count(10_000)``).
    """

    DEFAULT_MAX_COUNT: ClassVar[int] = 10_000

    keep: int | None = None
    days: float | None = None

    def __post_init__(self) -> None:
        if self.keep is not None and self.days is not None:
            raise ValueError("a retention policy sets one of keep and days, not both")
        if self.keep is None and self.days is None:
            object.__setattr__(self, "keep", self.DEFAULT_MAX_COUNT)
        if self.keep is not None:
            _count("keep", self.keep)
        if self.days is not None:
            object.__setattr__(self, "days", _number("days", self.days, allow_zero=True))

    @classmethod
    def max_count(cls, n: int = DEFAULT_MAX_COUNT) -> RetentionPolicy:
        """Keep the newest ``n`` history rows."""
        return cls(keep=n, days=None)

    @classmethod
    def max_age_days(cls, days: float) -> RetentionPolicy:
        """Keep history rows completed within the last ``days`` days."""
        return cls(keep=None, days=days)


@dataclass(frozen=True)
class StoreConfig:
    """Settings of the task store: its history ``retention_policy``, applied every
    ``prune_every`` terminal transitions (100)."""

    retention_policy: RetentionPolicy = field(default_factory=RetentionPolicy.max_count)
    prune_every: int = 100

    def __post_init__(self) -> None:
        if _count("prune_every", self.prune_every) == 0:
            raise ValueError("prune_every must be >= 1")


@dataclass(frozen=True)
class ShutdownMode:
    """What ``run`` does when its token is cancelled.

    ``ShutdownMode.HARD`` (the default) cancels running tasks at once;
    ``ShutdownMode.graceful(timeout_s)`` stops dispatching and lets running tasks finish for up
    to ``timeout_s`` seconds before cancelling what is left. A cancelled task's token is
    cancelled first, and its executor gets up to a second to return on its own.
    """

    HARD: ClassVar[ShutdownMode]
    """Cancel every running task at once."""

    kind: Literal["hard", "graceful"] = "hard"
    timeout_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("hard", "graceful"):
            raise ValueError(f"shutdown kind must be 'hard' or 'graceful', got {self.kind!r}")
        timeout = _number("timeout_s", self.timeout_s, allow_zero=True)
        object.__setattr__(self, "timeout_s", timeout)
        if self.kind == "hard" and timeout != 0.0:
            raise ValueError("a hard shutdown has no timeout")

    @classmethod
    def graceful(cls, timeout_s: float) -> ShutdownMode:
        """Drain running tasks for up to ``timeout_s`` seconds, then cancel the rest."""
        return cls("graceful", timeout_s)

    @property
    def is_graceful(self) -> bool:
        """True for a graceful shutdown."""
        return self.kind == "graceful"


ShutdownMode.HARD = ShutdownMode("hard", 0.0)


@dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler's settings, with the documented defaults.

    ``default_group_concurrency`` 0 means groups are unlimited unless overridden in
    ``group_concurrency`` (group -> limit, where 0 blocks the group).
    """

    max_concurrency: int = 4
    max_retries: int = 3
    preempt_priority: Priority = Priority.REALTIME
    poll_interval: float = 0.5
    """Seconds between dispatch cycles when nothing wakes the dispatcher earlier."""
    shutdown_mode: ShutdownMode = ShutdownMode.HARD
    default_group_concurrency: int = 0
    group_concurrency: dict[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _count("max_concurrency", self.max_concurrency)
        _count("max_retries", self.max_retries)
        object.__setattr__(self, "preempt_priority", Priority(self.preempt_priority))
        object.__setattr__(self, "poll_interval", _number("poll_interval", self.poll_interval))
        if not isinstance(self.shutdown_mode, ShutdownMode):
            raise TypeError(f"shutdown_mode must be a ShutdownMode, got {self.shutdown_mode!r}")
        # Validate and take a private copy, so later changes to the caller's dict do not leak in.
        limits = GroupLimits(self.default_group_concurrency, dict(self.group_concurrency))
        object.__setattr__(self, "group_concurrency", limits.overrides)

    def group_limits(self) -> GroupLimits:
        """A fresh ``GroupLimits`` holding this configuration's group settings."""
        return GroupLimits(self.default_group_concurrency, dict(self.group_concurrency))


class GroupLimits:
    """Per-group concurrency limits: a ``default`` and per-group ``overrides``.

    The effective limit of a group is its override if set (0 blocks the group), else the
    default if it is > 0, else unlimited (``None``). Limits can change at runtime.
    """

    def __init__(self, default: int = 0, overrides: dict[str, int] | None = None) -> None:
        self._default = _count("default group concurrency", default)
        self._overrides: dict[str, int] = {}
        for group, limit in (overrides or {}).items():
            self.set_limit(group, limit)

    @property
    def default(self) -> int:
        """The default limit (0: groups without an override are unlimited)."""
        return self._default

    @property
    def overrides(self) -> dict[str, int]:
        """A copy of the per-group overrides."""
        return dict(self._overrides)

    def set_default(self, n: int) -> None:
        """Set the default limit of groups without an override (0: unlimited)."""
        self._default = _count("default group concurrency", n)

    def set_limit(self, group: str, n: int) -> None:
        """Override the limit of ``group`` (0 blocks it)."""
        if not isinstance(group, str):
            raise TypeError(f"group must be a str, got {group!r}")
        self._overrides[group] = _count(f"limit of group {group!r}", n)

    def remove_limit(self, group: str) -> None:
        """Drop the override of ``group`` so the default applies again (no error if none)."""
        self._overrides.pop(group, None)

    def limit_for(self, group: str | None) -> int | None:
        """The effective limit of ``group``; None means unlimited (and for tasks with no group)."""
        if group is None:
            return None
        if group in self._overrides:
            return self._overrides[group]
        return self._default if self._default > 0 else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GroupLimits):
            return NotImplemented
        return (self._default, self._overrides) == (other._default, other._overrides)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"GroupLimits(default={self._default}, overrides={self._overrides!r})"


@dataclass(frozen=True)
class SamplerConfig:
    """Resource sampling: every ``interval`` seconds (1.0), each series smoothed by an EWMA
    with weight ``ewma_alpha`` (0.3) on the newest sample; the first sample is taken as is.

    ``interfaces`` and ``disks``: the network interfaces and disks the built-in sampler counts,
    as names or shell patterns (``("eth0", "nvme*")``); None (the default) counts the physical
    ones only, leaving out loopback, virtual interfaces and disks, and partitions."""

    interval: float = 1.0
    ewma_alpha: float = 0.3
    interfaces: tuple[str, ...] | None = None
    disks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "interval", _number("interval", self.interval))
        for name in ("interfaces", "disks"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{name} must be a list of names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        alpha = float(self.ewma_alpha)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        object.__setattr__(self, "ewma_alpha", alpha)
