"""``SchedulerSnapshot``: a point-in-time view of the scheduler for dashboards.

The embedded ``Scheduler`` and both clients build it alike, from the Dispatcher's state and the
Store's counts (``from_state``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.kinds import CountsReply
from bus.kinds_flow import FlowReply
from bus.kinds_run import DispatcherState
from taskmill.flow import AgingConfig, GroupAllocationInfo, PausedGroupInfo, RateLimitInfo
from taskmill.records import EstimatedProgress, HostSummary, TaskRecord, _ToDict

__all__ = ["SchedulerSnapshot"]


@dataclass(frozen=True)
class SchedulerSnapshot(_ToDict):
    """A point-in-time view of the scheduler for dashboards; ``to_dict()`` is JSON-able."""

    running: list[TaskRecord] = field(default_factory=list)
    pending_count: int = 0
    """Tasks ready to run (due)."""
    paused_count: int = 0
    waiting_count: int = 0
    scheduled_count: int = 0
    """Tasks not due yet: a ``run_after`` in the future, or a retry waiting out its delay."""
    blocked_count: int = 0
    """Tasks waiting for their dependencies."""
    progress: list[EstimatedProgress] = field(default_factory=list)
    pressure: float = 0.0
    pressure_breakdown: list[tuple[str, float]] = field(default_factory=list)
    max_concurrency: int = 0
    is_paused: bool = False
    resources: dict[str, float] = field(default_factory=dict)
    """Smoothed readings when monitoring is on: ``cpu`` (0..1), ``disk_read_bps``,
    ``disk_write_bps``, ``net_rx_bps``, ``net_tx_bps`` (bytes/s)."""
    host_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    """Host id → the readings an executor host reports of its own machine (the keys of
    ``resources``), for the hosts that sample theirs (on other machines than the monitor)."""
    hosts: list[HostSummary] = field(default_factory=list)
    """The executor hosts connected to the Dispatcher, by host id."""
    rate_limits: list[RateLimitInfo] = field(default_factory=list)
    """Every rate limit in force, with the tokens its bucket holds now."""
    paused_groups: list[PausedGroupInfo] = field(default_factory=list)
    group_allocations: list[GroupAllocationInfo] = field(default_factory=list)
    """Each group with a weight or minimum slots, with its running and pending tasks."""
    aging_config: AgingConfig | None = None
    """Priority aging in force (None: none)."""

    @classmethod
    def from_state(
        cls,
        state: DispatcherState,
        counts: CountsReply,
        progress: list[EstimatedProgress],
        flow: FlowReply | None = None,
    ) -> SchedulerSnapshot:
        """The snapshot of the Dispatcher's state and the Store's counts (and the estimates)."""
        return cls(
            running=[TaskRecord.from_row(r.task) for r in state.running],
            pending_count=counts.pending,
            paused_count=counts.paused,
            waiting_count=counts.waiting,
            scheduled_count=counts.scheduled,
            blocked_count=counts.blocked,
            progress=progress,
            pressure=state.pressure,
            pressure_breakdown=[(name, value) for name, value in state.pressure_breakdown],
            max_concurrency=state.max_concurrency,
            is_paused=state.is_paused,
            resources=dict(state.resources),
            host_resources={host: dict(r) for host, r in state.host_resources.items()},
            hosts=[HostSummary.from_wire(h) for h in state.host_list],
            rate_limits=[]
            if flow is None
            else [RateLimitInfo.from_wire(r) for r in flow.rate_limits],
            paused_groups=(
                [] if flow is None else [PausedGroupInfo.from_wire(p) for p in flow.paused_groups]
            ),
            group_allocations=(
                [] if flow is None else [GroupAllocationInfo.from_wire(a) for a in flow.allocations]
            ),
            aging_config=None
            if flow is None or flow.aging is None
            else AgingConfig.from_wire(flow.aging),
        )
