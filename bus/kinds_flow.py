"""The kinds of flow control: rate limits, paused groups and fair shares.

The GroupLimiter owns this policy (``limiter.*``) and keeps it in the Store (``store.*``), where
the claim applies it; ``store.flow`` reads what is in force, for snapshots and the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.kinds import Ok
from bus.protocol import Message, message, struct

# -- the Store (ROUTER "store") ------------------------------------------------------------------


@message("store.pause_group.reply")
@dataclass(frozen=True, slots=True)
class GroupPauseReply(Message):
    """``changed`` False: the group was paused already (its end set anew) / was not paused."""

    changed: bool
    pending_count: int = 0
    running_count: int = 0


@message("store.pause_group", reply=GroupPauseReply)
@dataclass(frozen=True, slots=True)
class PauseGroup(Message):
    """Pause a group's dispatch (persisted); ``until_ms``: resume then (epoch ms, future)."""

    group: str
    until_ms: int | None = None


@message("store.resume_group", reply=GroupPauseReply)
@dataclass(frozen=True, slots=True)
class ResumeGroup(Message):
    """Resume a paused group; ``pending_count`` is how many of its tasks may start again.
    ``due_only``: only if its time to resume has come."""

    group: str
    due_only: bool = False


@struct
@dataclass(frozen=True, slots=True)
class RateLimitRow:
    scope: str
    permits: int
    interval_ms: int
    burst: int
    available_tokens: float


@struct
@dataclass(frozen=True, slots=True)
class PausedGroupRow:
    group: str
    paused_at_ms: int
    resume_at_ms: int | None
    paused_task_count: int


@struct
@dataclass(frozen=True, slots=True)
class GroupAllocationRow:
    """A group with a weight or a minimum: its weight (the default one if it has none of its
    own), its minimum, its running and pending tasks, its limit (None: unlimited)."""

    group: str
    weight: float
    min_slots: int | None
    running: int
    pending: int
    cap: int | None


@message("store.flow.reply")
@dataclass(frozen=True, slots=True)
class FlowReply(Message):
    rate_limits: list[RateLimitRow] = field(default_factory=list)
    paused_groups: list[PausedGroupRow] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)
    default_weight: float = 1.0
    min_slots: dict[str, int] = field(default_factory=dict)
    allocations: list[GroupAllocationRow] = field(default_factory=list)
    aging: list[int | None] | None = None
    """Priority aging in the claim: [grace_ms, interval_ms, max_effective, urgent or None]."""
    weight_changes: list[tuple[str, float, float]] = field(default_factory=list)
    """In a reply to ``store.set_flow``: each group whose weight the change changed, (group,
    previous weight, new weight), read in the change's transaction."""


@message("store.flow", reply=FlowReply)
@dataclass(frozen=True, slots=True)
class GetFlow(Message):
    """The rate limits in force (with the tokens available now), the paused groups, the
    weights."""


@message("store.set_flow", reply=FlowReply)
@dataclass(frozen=True, slots=True)
class SetFlow(Message):
    """Change one layer (``configured`` or ``runtime``) of the rate limits and fair shares:
    ``replace`` clears the layer first. ``rates``: scope (``type:<t>``, ``group:<g>``) →
    [permits, interval_ms, burst], or None to remove the scope's limit; ``weights`` /
    ``min_slots``: group → value, or None to remove the layer's value (at runtime, a weight -1
    or a minimum 0 removes the configured one too); ``default_weight`` None keeps it;
    ``reset_weights`` (runtime): every group's weight removed. The reply is the policy after
    the change."""

    layer: str
    rates: dict[str, list[int] | None] = field(default_factory=dict)
    weights: dict[str, float | None] = field(default_factory=dict)
    min_slots: dict[str, int | None] = field(default_factory=dict)
    default_weight: float | None = None
    replace: bool = False
    reset_weights: bool = False


# -- the GroupLimiter (ROUTER "limiter") --------------------------------------------------------


@message("limiter.set_rate_limit", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetRateLimit(Message):
    """Set (``rate`` [permits, interval_ms, burst]) or remove (None) the rate limit of
    ``scope`` (``type:<t>`` or ``group:<g>``) at runtime; kept across restarts."""

    scope: str
    rate: list[int] | None = None


CLEARED_WEIGHT = -1.0
"""A runtime weight (``store.set_flow``) that removes a group's weight, the configured one too."""


@message("limiter.set_weight", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetGroupWeight(Message):
    """Set a group's fair-share weight at runtime (> 0), or remove it (None: the group has the
    default weight, whatever it was built with); kept across restarts. Publishes
    ``group_weight_changed`` when the group's weight changed."""

    group: str
    weight: float | None = None


@message("limiter.set_minimum_slots", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetGroupMinimumSlots(Message):
    """Set a group's minimum slots at runtime (0: none, whatever it was built with); kept across
    restarts."""

    group: str
    n: int


@message("limiter.reset_weights", reply=Ok)
@dataclass(frozen=True, slots=True)
class ResetGroupWeights(Message):
    """Remove every group's weight at runtime (each has the default weight, which stays);
    publishes ``group_weight_changed`` for each group whose weight changed."""


@message("limiter.pause_group", reply=GroupPauseReply)
@dataclass(frozen=True, slots=True)
class PauseGroupRequest(Message):
    """Pause a group (``until_ms``: resume then); publishes ``group_paused`` when it changed."""

    group: str
    until_ms: int | None = None


@message("limiter.resume_group", reply=GroupPauseReply)
@dataclass(frozen=True, slots=True)
class ResumeGroupRequest(Message):
    """Resume a group; publishes ``group_resumed`` when it was paused."""

    group: str
