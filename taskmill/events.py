"""Scheduler events: one frozen dataclass per event type, and their wire conversion.

On the bus an event is ``bus.kinds_run.Event(type, data, at_ms)`` (``PublishedEvent`` adds the
publisher's ``seq``): ``type`` is the event's ``.type`` string and ``data`` its fields.
``event_to_wire`` and ``event_from_wire`` convert both ways. An event type this version does not
know decodes to ``UnknownEvent`` rather than raising, so an older subscriber keeps working when a
newer scheduler adds event types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from bus.kinds_run import Event, PublishedEvent
from taskmill.records import datetime_to_ms, ms_to_datetime

__all__ = [
    "Cancelled",
    "Completed",
    "DeadLettered",
    "DependencyFailed",
    "Dispatched",
    "Expired",
    "Failed",
    "GroupPaused",
    "GroupResumed",
    "HostResources",
    "Paused",
    "Preempted",
    "Progress",
    "RecurringCompleted",
    "Resumed",
    "SchedulerEvent",
    "Superseded",
    "TaskEvent",
    "Unblocked",
    "UnknownEvent",
    "Waiting",
    "event_from_message",
    "event_from_wire",
    "event_to_wire",
]

# Metadata every event carries: not part of the event's data, and not compared (two deliveries
# of the same event are equal).
_META = ("seq", "at")


@dataclass(frozen=True)
class SchedulerEvent:
    """Base of every scheduler event.

    ``seq`` is the publisher's sequence number (0 before publication) and ``at`` the UTC time
    the event happened (None when unknown); both are keyword-only and ignored by ``==``.
    """

    TYPE: ClassVar[str] = ""

    seq: int = field(default=0, kw_only=True, compare=False)
    at: datetime | None = field(default=None, kw_only=True, compare=False)

    @property
    def type(self) -> str:
        """The event type: ``"dispatched"``, ``"completed"``, ``"failed"``, ..."""
        return self.TYPE

    def data(self) -> dict[str, Any]:
        """The event's own fields (no ``seq``/``at``), as sent on the wire."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _META
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "seq", "at" (ISO 8601 or None), **data}``: JSON-serialisable."""
        return {
            "type": self.type,
            "seq": self.seq,
            "at": None if self.at is None else self.at.isoformat(),
            **self.data(),
        }


@dataclass(frozen=True)
class TaskEvent(SchedulerEvent):
    """An event about one task: carries its ``task_id``, ``task_type``, ``key`` and ``label``."""

    task_id: int
    task_type: str
    key: str
    label: str
    tags: dict[str, str] = field(default_factory=dict, kw_only=True, hash=False)
    """The task's tags ({} for an untagged task)."""


@dataclass(frozen=True)
class Dispatched(TaskEvent):
    """The task was sent to an executor (again, for a parent's ``finalize``)."""

    TYPE: ClassVar[str] = "dispatched"

    base_priority: int | None = None
    """The task's own priority."""
    effective_priority: int | None = None
    """The priority it was dispatched at: its own, or more urgent when aging raised it."""


@dataclass(frozen=True)
class Completed(TaskEvent):
    """The task completed."""

    TYPE: ClassVar[str] = "completed"


@dataclass(frozen=True)
class Failed(TaskEvent):
    """The task failed with ``error``; ``will_retry`` when it goes back to pending, then after
    ``retry_after`` seconds (None: at once)."""

    TYPE: ClassVar[str] = "failed"

    error: str
    will_retry: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class DeadLettered(TaskEvent):
    """A retryable failure with no retries left: the task went to history as ``dead_letter``
    after ``retry_count`` retries (``retry_dead_letter`` submits it again)."""

    TYPE: ClassVar[str] = "dead_lettered"

    error: str
    retry_count: int = 0


@dataclass(frozen=True)
class Preempted(TaskEvent):
    """The running task was paused for more urgent work (or by ``pause_all``)."""

    TYPE: ClassVar[str] = "preempted"


@dataclass(frozen=True)
class Cancelled(TaskEvent):
    """The task was cancelled."""

    TYPE: ClassVar[str] = "cancelled"


@dataclass(frozen=True)
class Expired(TaskEvent):
    """The task's TTL ran out before it started: it went to history as ``expired`` (``age``:
    seconds since it was submitted)."""

    TYPE: ClassVar[str] = "expired"

    age: float = 0.0


@dataclass(frozen=True)
class Superseded(TaskEvent):
    """A submission with ``DuplicateStrategy.SUPERSEDE`` replaced the task (its fields are the
    old version's): ``new_task_id`` holds the key now (the same id when replaced in place). A
    running task superseded is cancelled too (a ``Cancelled`` event comes first)."""

    TYPE: ClassVar[str] = "superseded"

    new_task_id: int | None = None


@dataclass(frozen=True)
class Unblocked(TaskEvent):
    """The task's last dependency completed: it may be dispatched now (or when due)."""

    TYPE: ClassVar[str] = "unblocked"


@dataclass(frozen=True)
class DependencyFailed(TaskEvent):
    """A dependency (``failed_dependency``) ended without completing: the task went to history
    as ``dependency_failed`` and never runs."""

    TYPE: ClassVar[str] = "dependency_failed"

    failed_dependency: int = 0
    error: str = ""


@dataclass(frozen=True)
class RecurringCompleted(TaskEvent):
    """A run of a recurring task completed (after its ``Completed``): ``execution_count`` runs
    so far (1 after the first); ``next_run`` is when the next instance is due, None after the
    last run (or while the schedule is paused)."""

    TYPE: ClassVar[str] = "recurring_completed"

    execution_count: int = 0
    next_run: datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.next_run, int) and not isinstance(self.next_run, bool):
            object.__setattr__(self, "next_run", ms_to_datetime(self.next_run))  # from the wire

    def data(self) -> dict[str, Any]:
        """The event's fields as sent on the wire (``next_run`` as epoch ms)."""
        data = super().data()
        if isinstance(self.next_run, datetime):
            data["next_run"] = datetime_to_ms(self.next_run)
        return data


@dataclass(frozen=True)
class Progress(TaskEvent):
    """The task reported progress: ``percent`` in 0..1 and an optional ``message``.

    Once it reported bytes (``ctx.progress.add_bytes`` and the like): ``bytes_done``,
    ``bytes_total`` (None while unknown), ``throughput_bps`` (smoothed bytes per second) and
    ``eta_s`` (seconds left at that rate, None while the total or the rate is unknown);
    ``percent`` is then ``bytes_done / bytes_total`` when the total is known."""

    TYPE: ClassVar[str] = "progress"

    percent: float
    message: str | None = None
    bytes_done: int | None = None
    bytes_total: int | None = None
    throughput_bps: float | None = None
    eta_s: float | None = None


@dataclass(frozen=True)
class Waiting(TaskEvent):
    """The task's executor returned with ``children_count`` unfinished children."""

    TYPE: ClassVar[str] = "waiting"

    children_count: int


@dataclass(frozen=True)
class Paused(SchedulerEvent):
    """``pause_all()``: dispatching stopped."""

    TYPE: ClassVar[str] = "paused"


@dataclass(frozen=True)
class Resumed(SchedulerEvent):
    """``resume_all()``: dispatching restarted."""

    TYPE: ClassVar[str] = "resumed"


@dataclass(frozen=True)
class GroupPaused(SchedulerEvent):
    """``pause_group``: the group's tasks do not start (``pending_count`` of them waiting,
    ``running_count`` still running, which finish their run)."""

    TYPE: ClassVar[str] = "group_paused"

    group: str
    pending_count: int = 0
    running_count: int = 0


@dataclass(frozen=True)
class GroupResumed(SchedulerEvent):
    """``resume_group`` (or the end a pause was given): ``resumed_count`` tasks may start."""

    TYPE: ClassVar[str] = "group_resumed"

    group: str
    resumed_count: int = 0


@dataclass(frozen=True)
class Resources(SchedulerEvent):
    """The ResourceMonitor's readings, every sampling interval (for dashboards).

    Rates are smoothed bytes/s; ``pressure`` is the combined backpressure and ``breakdown`` its
    ``(source, value)`` pairs.
    """

    TYPE: ClassVar[str] = "resources"

    cpu: float = 0.0
    disk_read_bps: float = 0.0
    disk_write_bps: float = 0.0
    net_rx_bps: float = 0.0
    net_tx_bps: float = 0.0
    pressure: float = 0.0
    breakdown: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        pairs = tuple((str(name), float(value)) for name, value in self.breakdown)
        object.__setattr__(self, "breakdown", pairs)


@dataclass(frozen=True)
class HostResources(SchedulerEvent):
    """An executor host's own readings of its machine, sent with each heartbeat by a host that
    samples (``taskmill worker --sample-resources``); rates are smoothed bytes/s."""

    TYPE: ClassVar[str] = "host_resources"

    host: str = ""
    machine: str = ""
    cpu: float = 0.0
    disk_read_bps: float = 0.0
    disk_write_bps: float = 0.0
    net_rx_bps: float = 0.0
    net_tx_bps: float = 0.0


@dataclass(frozen=True)
class UnknownEvent(SchedulerEvent):
    """An event of a type this version does not know, kept as its type string and raw data."""

    event_type: str = ""
    raw: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def type(self) -> str:
        """The event type as received."""
        return self.event_type

    def data(self) -> dict[str, Any]:
        """The raw data as received."""
        return dict(self.raw)


EVENT_TYPES: dict[str, type[SchedulerEvent]] = {
    cls.TYPE: cls
    for cls in (
        Dispatched, Completed, Failed, DeadLettered, Preempted, Cancelled, Expired, Progress,
        Waiting, Paused, Resumed, Resources, HostResources, Superseded, GroupPaused,
        GroupResumed, Unblocked, DependencyFailed, RecurringCompleted,
    )
}  # fmt: skip
"""Every known event class by its ``type`` string."""


def event_to_wire(event: SchedulerEvent) -> Event:
    """The wire ``Event`` of ``event`` (``at`` as epoch ms, 0 when unknown; ``seq`` dropped)."""
    at_ms = 0 if event.at is None else datetime_to_ms(event.at)
    return Event(type=event.type, data=event.data(), at_ms=at_ms)


def event_from_wire(
    type: str,  # the wire field name
    data: dict[str, Any],
    seq: int = 0,
    at_ms: int = 0,
) -> SchedulerEvent:
    """The event of a wire ``(type, data)``; ``at_ms`` 0 means "time unknown".

    Unknown keys in ``data`` are ignored and missing optional fields take their defaults; a
    missing required field raises ``ValueError``. An unknown ``type`` gives ``UnknownEvent``.
    """
    at = ms_to_datetime(at_ms) if at_ms else None
    cls = EVENT_TYPES.get(type)
    if cls is None:
        return UnknownEvent(event_type=type, raw=dict(data), seq=seq, at=at)
    kwargs: dict[str, Any] = {}
    for name, required in _FIELDS[cls]:
        if name in data:
            kwargs[name] = data[name]
        elif required:
            raise ValueError(f"{type!r} event without its {name!r} field")
    return cls(**kwargs, seq=seq, at=at)


_FIELDS: dict[type[SchedulerEvent], tuple[tuple[str, bool], ...]] = {
    cls: tuple(
        (f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(cls)
        if f.name not in _META
    )
    for cls in EVENT_TYPES.values()
}
"""The data fields of each event class, and whether the wire must carry them."""


def event_from_message(message: Event | PublishedEvent) -> SchedulerEvent:
    """The event carried by a bus ``Event`` or ``PublishedEvent`` (keeping the latter's seq)."""
    seq = message.seq if isinstance(message, PublishedEvent) else 0
    return event_from_wire(message.type, message.data, seq=seq, at_ms=message.at_ms)
