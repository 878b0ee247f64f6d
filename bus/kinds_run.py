"""Message kinds of running work: Dispatcher controls, executor hosts, the event stream's welcome,
pressure.

Same registry as ``bus.kinds``; ``docs/protocol.md`` documents each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bus.kinds import Ok, TaskResult, TaskRow
from bus.protocol import Message, message, struct

# -- Dispatcher controls (ROUTER "dispatcher", requests from clients) ---------------------------


@message("dispatcher.start", reply=Ok)
@dataclass(frozen=True, slots=True)
class Start(Message):
    """Begin dispatching (an embedded Dispatcher starts idle until ``Scheduler.run``)."""


@message("dispatcher.pause_all", reply=Ok)
@dataclass(frozen=True, slots=True)
class PauseAll(Message):
    pass


@message("dispatcher.resume_all", reply=Ok)
@dataclass(frozen=True, slots=True)
class ResumeAll(Message):
    pass


@message("dispatcher.set_max_concurrency", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetMaxConcurrency(Message):
    n: int


@message("dispatcher.cancel", reply=Ok)
@dataclass(frozen=True, slots=True)
class CancelTask(Message):
    """Cancel a task (cascading to its children); Ok(value=True) if an active task had that id.
    ``recurring``: end the schedule ``id`` names as well (``store.cancel``)."""

    id: int
    recurring: bool = False


@message("dispatcher.cancel_where", reply=Ok)
@dataclass(frozen=True, slots=True)
class CancelTasks(Message):
    """Cancel every active task of ``group``, of ``task_type`` or with the tag ``tag`` ([key,
    value]) — exactly one — as ``dispatcher.cancel`` does; Ok(value=[the cancelled ids])."""

    group: str | None = None
    task_type: str | None = None
    tag: list[str] | None = None


@struct
@dataclass(frozen=True, slots=True)
class ProgressRow:
    """A run's latest progress: the fraction and message it reported and, once it reported
    bytes, its byte counts, smoothed rate (bytes/s) and the seconds left at that rate."""

    task_id: int
    percent: float
    message: str | None
    reported_at_ms: int
    run_id: int = 0
    bytes_done: int | None = None
    bytes_total: int | None = None
    throughput_bps: float | None = None
    eta_s: float | None = None


@struct
@dataclass(frozen=True, slots=True)
class RunningTask:
    task: TaskRow
    started_at_ms: int
    progress: ProgressRow | None = None


@struct
@dataclass(frozen=True, slots=True)
class HostInfo:
    """An executor host as the Dispatcher sees it."""

    host_id: str
    task_types: list[str]
    capacity: int
    running: int
    heartbeat_age_s: float = 0.0
    """Seconds since the Dispatcher last heard from it (``dispatcher.hosts``)."""


@message("dispatcher.state.reply")
@dataclass(frozen=True, slots=True)
class DispatcherState(Message):
    running: list[RunningTask]
    max_concurrency: int
    is_paused: bool
    pressure: float = 0.0
    pressure_breakdown: list[tuple[str, float]] = field(default_factory=list)
    hosts: int = 0
    resources: dict[str, float] = field(default_factory=dict)
    host_resources: dict[str, dict[str, float]] = field(default_factory=dict)
    host_list: list[HostInfo] = field(default_factory=list)


@message("dispatcher.state", reply=DispatcherState)
@dataclass(frozen=True, slots=True)
class GetState(Message):
    pass


@message("dispatcher.hosts.reply")
@dataclass(frozen=True, slots=True)
class HostsReply(Message):
    hosts: list[HostInfo]
    paused: bool = False


@message("dispatcher.hosts", reply=HostsReply)
@dataclass(frozen=True, slots=True)
class GetHosts(Message):
    """The executor hosts connected now, and whether dispatching is paused: what the CLI's
    ``ping`` lists and the metrics endpoint shows, without the running tasks ``dispatcher.state``
    carries."""


@message("dispatcher.shutdown", reply=Ok)
@dataclass(frozen=True, slots=True)
class Shutdown(Message):
    """Stop dispatching; with ``drain_s`` let running tasks finish that long, then cancel the rest.

    Replies once no task is running any more (or all were cancelled).
    """

    drain_s: float = 0.0


# -- the GroupLimiter (ROUTER "limiter"): group policy, kept in the Store where claims apply it --


@message("limiter.set_limit", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetGroupLimit(Message):
    """Override one group's limit (0 blocks the group); ``limit`` None removes the override."""

    group: str
    limit: int | None = None


@message("limiter.set_default", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetDefaultGroupLimit(Message):
    """The limit of groups without an override; 0 means unlimited."""

    n: int


@message("limiter.state.reply")
@dataclass(frozen=True, slots=True)
class LimiterState(Message):
    default: int
    overrides: dict[str, int]
    running: dict[str, int]
    ready: bool = True


@message("limiter.state", reply=LimiterState)
@dataclass(frozen=True, slots=True)
class GetLimiterState(Message):
    pass


# -- executor hosts (DEALER host <-> ROUTER "hosts" on the Dispatcher) --------------------------


@message("host.hello")
@dataclass(frozen=True, slots=True)
class HostHello(Message):
    """A host announces itself: at start, after reconnecting, and when a Dispatcher that does
    not know it (a restarted one) asks. ``running[i]`` is a task it runs as run ``run_ids[i]``."""

    host_id: str
    task_types: list[str]
    capacity: int
    running: list[int] = field(default_factory=list)
    run_ids: list[int] = field(default_factory=list)


@message("host.heartbeat")
@dataclass(frozen=True, slots=True)
class HostHeartbeat(Message):
    """``readings``: the host's own smoothed readings of its machine (``cpu``, ``disk_read_bps``,
    ``disk_write_bps``, ``net_rx_bps``, ``net_tx_bps``), empty when it does not sample; hosts
    that name the same ``machine`` share its disks and network."""

    host_id: str
    running: list[int] = field(default_factory=list)
    readings: dict[str, float] = field(default_factory=dict)
    machine: str = ""


@message("host.welcome")
@dataclass(frozen=True, slots=True)
class HostWelcome(Message):
    """The Dispatcher's answer to a hello and to every heartbeat; ``known`` False asks the host to
    say hello again (the Dispatcher restarted, or had declared it lost)."""

    dispatcher_id: str
    known: bool = True


@message("host.run")
@dataclass(frozen=True, slots=True)
class RunTasks(Message):
    """Run these tasks; ``run_ids[i]`` identifies the run of ``tasks[i]`` in its results."""

    tasks: list[TaskRow]
    run_ids: list[int] = field(default_factory=list)


@message("host.cancel")
@dataclass(frozen=True, slots=True)
class CancelRuns(Message):
    ids: list[int]
    hook: bool = False
    """The tasks were cancelled or superseded (not preempted, not stopped by a shutdown): the
    host calls their executors' ``on_cancel``."""


@message("host.results")
@dataclass(frozen=True, slots=True)
class RunResults(Message):
    host_id: str
    results: list[TaskResult]


@message("host.ack")
@dataclass(frozen=True, slots=True)
class AckResults(Message):
    """These runs' results are committed: the host forgets them. Until then it keeps them and
    sends them again after reconnecting, so a Dispatcher restart loses no result."""

    run_ids: list[int]


@message("host.progress")
@dataclass(frozen=True, slots=True)
class RunProgress(Message):
    host_id: str
    items: list[ProgressRow]


# -- the event stream (the events themselves are in ``bus.events``) ---------------------------


@message("event.welcome")
@dataclass(frozen=True, slots=True)
class Welcome(Message):
    """Sent on topic ``welcome.<token>`` when that subscription arrives: the subscriber is live."""

    seq: int


# -- pressure (PUSH to the ResourceMonitor, from any process) -----------------------------------


@message("monitor.pressure")
@dataclass(frozen=True, slots=True)
class PressureReading(Message):
    source: str
    value: float
    at_ms: int = 0


@message("monitor.readings")
@dataclass(frozen=True, slots=True)
class Readings(Message):
    """Smoothed resource readings and pressure, from the ResourceMonitor to the Dispatcher."""

    cpu: float
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float
    pressure: float = 0.0
    breakdown: list[tuple[str, float]] = field(default_factory=list)
    at_ms: int = 0
