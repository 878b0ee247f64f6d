"""Scheduler events: one message kind per event type, the same classes from producer to subscriber.

A ``completed`` event is the kind ``event.completed``, its body the map of ``Completed``'s fields
(``docs/protocol.md``, "Kinds: events"). The Dispatcher, the GroupLimiter and the ResourceMonitor
build these classes and push them to the EventPublisher, which numbers each (``seq``) and
publishes it; a subscriber decodes it back into the same class (``taskmill.events`` re-exports
them). Several travel as one ``events`` message, each as ``[type, body]``.

Every event carries ``seq`` (0 until the publisher numbers it) and ``at_ms`` (when it happened,
epoch milliseconds; 0 while unknown, and the publisher stamps its own clock), keyword-only and
ignored by ``==``: two deliveries of one event are equal. ``at`` is ``at_ms`` as a UTC datetime,
and the constructors also take ``at=`` (a datetime) instead. Times stay integers on the way:
only a reader of ``at`` pays for a datetime.

An event kind this version does not know (``event.<type>`` from a newer peer) decodes to
``UnknownEvent``, its type and raw fields kept, instead of failing; the EventPublisher publishes
it as it came.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bus.clock import datetime_to_ms, ms_to_datetime
from bus.errors import ErrorCode, ProtocolError
from bus.frozen import speed_up_init
from bus.protocol import Message, family, message

__all__ = [
    "EVENT_TYPES", "Cancelled", "Completed", "DeadLettered", "DependencyFailed", "Dispatched",
    "EventBatch", "Expired", "Failed", "GroupPaused", "GroupResumed", "GroupWeightChanged",
    "HostResources", "Paused", "Preempted", "Progress", "RecurringCompleted", "Resources",
    "Resumed", "SchedulerEvent", "Superseded", "TaskEvent", "Unblocked", "UnknownEvent",
    "Waiting", "stamp", "topic_for",
]  # fmt: skip

PREFIX = "event."
"""The kinds of events: ``event.<type>``."""

_META = ("seq", "at_ms")
"""The fields every event carries that are not its data."""

if not TYPE_CHECKING:
    from dataclasses import InitVar


@dataclass(frozen=True, slots=True)
class SchedulerEvent(Message):
    """Base of every scheduler event.

    ``seq`` is the publisher's sequence number (0 before publication) and ``at_ms`` the epoch
    milliseconds when the event happened (0 when unknown; ``at`` as a UTC datetime); both are
    keyword-only and ignored by ``==``.
    """

    TYPE: ClassVar[str] = ""
    TOPIC: ClassVar[bytes] = b""
    """``task.<type>`` for an event about one task, ``scheduler.<type>`` for the others."""

    seq: int = field(default=0, kw_only=True, compare=False)
    at_ms: int = field(default=0, kw_only=True, compare=False)
    if not TYPE_CHECKING:  # an argument of the constructor, not a field (``at`` is a property)
        at: InitVar[datetime | None] = field(default=None, kw_only=True)

        def __post_init__(self, at: datetime | None) -> None:
            if at is not None:
                _set_at_ms(self, datetime_to_ms(at))

    if TYPE_CHECKING:

        @property
        def at(self) -> datetime | None:
            """When the event happened, in UTC (None when unknown)."""

    @property
    def type(self) -> str:
        """The event type: ``"dispatched"``, ``"completed"``, ``"failed"``, ..."""
        return self.TYPE

    def data(self) -> dict[str, Any]:
        """The event's own fields (no ``seq``/``at``)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _META
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"type", "seq", "at" (ISO 8601 or None), **data}``: JSON-serialisable."""
        at = self.at
        return {
            "type": self.type,
            "seq": self.seq,
            "at": None if at is None else at.isoformat(),
            **self.data(),
        }


def _at(self: SchedulerEvent) -> datetime | None:
    """When the event happened, in UTC (None when unknown)."""
    return ms_to_datetime(self.at_ms) if self.at_ms else None


if not TYPE_CHECKING:
    SchedulerEvent.at = property(_at)
_set_seq = SchedulerEvent.__dict__["seq"].__set__
_set_at_ms = SchedulerEvent.__dict__["at_ms"].__set__


def stamp(event: SchedulerEvent, seq: int, at_ms: int) -> None:
    """Number an event, and time it if it came untimed (``at_ms`` 0), in place: what the
    EventPublisher does to the events it has just decoded, which are its own. Cheaper than a
    copy, and events are numbered one by one on every task's path."""
    _set_seq(event, seq)
    if not event.at_ms:
        _set_at_ms(event, at_ms)


@dataclass(frozen=True, slots=True)
class UnknownEvent(SchedulerEvent):
    """An event of a type this version does not know, kept as its type string and raw data."""

    event_type: str = ""
    raw: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def KIND(self) -> str:  # type: ignore[override]  # each unknown event is of its own kind
        """The kind it came as (``event.<type>``): it is published as it came."""
        return PREFIX + self.event_type

    @property
    def TOPIC(self) -> bytes:  # type: ignore[override]  # each unknown event is of its own kind
        """``task.<type>`` when it names a task (a non-nil ``task_id``), else
        ``scheduler.<type>``."""
        return topic_for(self.event_type, self.raw)

    @property
    def type(self) -> str:
        """The event type as received."""
        return self.event_type

    def data(self) -> dict[str, Any]:
        """The raw data as received."""
        return dict(self.raw)


speed_up_init(UnknownEvent)


def _decode_unknown(kind: str, body: dict[str, Any]) -> UnknownEvent:
    seq, at_ms = body.pop("seq", 0), body.pop("at_ms", 0)
    if type(seq) is not int or type(at_ms) is not int:
        raise ProtocolError(ErrorCode.MALFORMED, f"{kind}: seq and at_ms must be int")
    return UnknownEvent(event_type=kind[len(PREFIX) :], raw=body, seq=seq, at_ms=at_ms)


def _encode_unknown(event: UnknownEvent) -> dict[str, Any]:
    return {**event.raw, "seq": event.seq, "at_ms": event.at_ms}


family(PREFIX, SchedulerEvent, UnknownEvent, _decode_unknown, _encode_unknown)

E = TypeVar("E", bound=SchedulerEvent)

EVENT_TYPES: dict[str, type[SchedulerEvent]] = {}
"""Every known event class by its ``type`` string."""


def event(cls: type[E]) -> type[E]:
    """Register an event class as the kind ``event.<TYPE>``, on topic ``task.<TYPE>`` (an event
    about one task) or ``scheduler.<TYPE>``."""
    family_name = b"task." if issubclass(cls, TaskEvent) else b"scheduler."
    cls.TOPIC = family_name + cls.TYPE.encode("ascii")
    EVENT_TYPES[cls.TYPE] = cls
    return message(PREFIX + cls.TYPE)(cls)


def topic_for(event_type: str, data: Mapping[str, Any]) -> bytes:
    """The topic of an event of type ``event_type`` with the fields ``data``: ``task.<type>`` or
    ``scheduler.<type>``, general to specific so that a SUB prefix filter selects a family.

    A known type's is its class's ``TOPIC`` (an event about one task, or about the scheduler);
    an unknown type is a task event when it names a task (a non-nil ``task_id``).
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is not None:
        return cls.TOPIC
    family_name = b"scheduler." if data.get("task_id") is None else b"task."
    return family_name + event_type.encode("utf-8")


@dataclass(frozen=True, slots=True)
class TaskEvent(SchedulerEvent):
    """An event about one task: carries its ``task_id``, ``task_type``, ``key`` and ``label``."""

    task_id: int
    task_type: str
    key: str
    label: str
    tags: dict[str, str] = field(default_factory=dict, kw_only=True, hash=False)
    """The task's tags ({} for an untagged task)."""


@event
@dataclass(frozen=True, slots=True)
class Dispatched(TaskEvent):
    """The task was sent to an executor (again, for a parent's ``finalize``)."""

    TYPE: ClassVar[str] = "dispatched"

    base_priority: int | None = None
    """The task's own priority."""
    effective_priority: int | None = None
    """The priority it was dispatched at: its own, or more urgent when aging raised it."""
    phase: str = field(default="execute", compare=False)
    """``execute``, or ``finalize`` for a parent whose children all ended (not compared, as
    ``wait_ms``: events equal before these fields travelled stay equal)."""
    wait_ms: int | None = field(default=None, compare=False)
    """Milliseconds from submission to this start, on a task's first run (else None)."""


@event
@dataclass(frozen=True, slots=True)
class Completed(TaskEvent):
    """The task completed."""

    TYPE: ClassVar[str] = "completed"

    duration_ms: int | None = field(default=None, compare=False)
    """How long the run took, when known (not compared)."""


@event
@dataclass(frozen=True, slots=True)
class Failed(TaskEvent):
    """The task failed with ``error``; ``will_retry`` when it goes back to pending, then after
    ``retry_after`` seconds (None: at once)."""

    TYPE: ClassVar[str] = "failed"

    error: str
    will_retry: bool = False
    retry_after: float | None = None


@event
@dataclass(frozen=True, slots=True)
class DeadLettered(TaskEvent):
    """A retryable failure with no retries left: the task went to history as ``dead_letter``
    after ``retry_count`` retries (``retry_dead_letter`` submits it again)."""

    TYPE: ClassVar[str] = "dead_lettered"

    error: str
    retry_count: int = 0


@event
@dataclass(frozen=True, slots=True)
class Preempted(TaskEvent):
    """The running task was paused for more urgent work (or by ``pause_all``)."""

    TYPE: ClassVar[str] = "preempted"


@event
@dataclass(frozen=True, slots=True)
class Cancelled(TaskEvent):
    """The task was cancelled."""

    TYPE: ClassVar[str] = "cancelled"


@event
@dataclass(frozen=True, slots=True)
class Expired(TaskEvent):
    """The task's TTL ran out before it started: it went to history as ``expired`` (``age``:
    seconds since it was submitted)."""

    TYPE: ClassVar[str] = "expired"

    age: float = 0.0


@event
@dataclass(frozen=True, slots=True)
class Superseded(TaskEvent):
    """A submission with ``DuplicateStrategy.SUPERSEDE`` replaced the task (its fields are the
    old version's): ``new_task_id`` holds the key now (the same id when replaced in place). A
    running task superseded is cancelled too (a ``Cancelled`` event comes first)."""

    TYPE: ClassVar[str] = "superseded"

    new_task_id: int | None = None


@event
@dataclass(frozen=True, slots=True)
class Unblocked(TaskEvent):
    """The task's last dependency completed: it may be dispatched now (or when due)."""

    TYPE: ClassVar[str] = "unblocked"


@event
@dataclass(frozen=True, slots=True)
class DependencyFailed(TaskEvent):
    """A dependency (``failed_dependency``) ended without completing: the task went to history
    as ``dependency_failed`` and never runs."""

    TYPE: ClassVar[str] = "dependency_failed"

    failed_dependency: int = 0
    error: str = ""


@event
@dataclass(frozen=True, slots=True)
class RecurringCompleted(TaskEvent):
    """A run of a recurring task completed (after its ``Completed``): ``execution_count`` runs
    so far (1 after the first); ``next_run`` is when the next instance is due, None after the
    last run (or while the schedule is paused). It travels as ``next_run_ms`` (epoch ms); the
    constructor takes either."""

    TYPE: ClassVar[str] = "recurring_completed"

    execution_count: int = 0
    next_run_ms: int | None = None
    if not TYPE_CHECKING:
        next_run: InitVar[datetime | None] = None

        def __post_init__(self, at: datetime | None, next_run: datetime | None) -> None:
            SchedulerEvent.__post_init__(self, at)
            if next_run is not None:
                _set_next_run_ms(self, datetime_to_ms(next_run))

    if TYPE_CHECKING:

        @property
        def next_run(self) -> datetime | None:
            """When the next instance is due, in UTC; None when none follows."""

    def data(self) -> dict[str, Any]:
        """The event's fields, ``next_run`` as epoch ms (as before it travelled as
        ``next_run_ms``)."""
        data = SchedulerEvent.data(self)
        data["next_run"] = data.pop("next_run_ms")
        return data


def _next_run(self: RecurringCompleted) -> datetime | None:
    """When the next instance is due, in UTC; None when none follows."""
    return None if self.next_run_ms is None else ms_to_datetime(self.next_run_ms)


if not TYPE_CHECKING:
    RecurringCompleted.next_run = property(_next_run)
_set_next_run_ms = RecurringCompleted.__dict__["next_run_ms"].__set__


@event
@dataclass(frozen=True, slots=True)
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


@event
@dataclass(frozen=True, slots=True)
class Waiting(TaskEvent):
    """The task's executor returned with ``children_count`` unfinished children."""

    TYPE: ClassVar[str] = "waiting"

    children_count: int


@event
@dataclass(frozen=True, slots=True)
class Paused(SchedulerEvent):
    """``pause_all()``: dispatching stopped."""

    TYPE: ClassVar[str] = "paused"


@event
@dataclass(frozen=True, slots=True)
class Resumed(SchedulerEvent):
    """``resume_all()``: dispatching restarted."""

    TYPE: ClassVar[str] = "resumed"


@event
@dataclass(frozen=True, slots=True)
class GroupPaused(SchedulerEvent):
    """``pause_group``: the group's tasks do not start (``pending_count`` of them waiting,
    ``running_count`` still running, which finish their run)."""

    TYPE: ClassVar[str] = "group_paused"

    group: str
    pending_count: int = 0
    running_count: int = 0


@event
@dataclass(frozen=True, slots=True)
class GroupWeightChanged(SchedulerEvent):
    """A runtime change (``set_group_weight``, ``remove_group_weight``,
    ``reset_group_weights``) changed ``group``'s fair-share weight from ``previous_weight`` to
    ``new_weight`` (the default weight when it has none of its own)."""

    TYPE: ClassVar[str] = "group_weight_changed"

    group: str
    previous_weight: float = 1.0
    new_weight: float = 1.0


@event
@dataclass(frozen=True, slots=True)
class GroupResumed(SchedulerEvent):
    """``resume_group`` (or the end a pause was given): ``resumed_count`` tasks may start."""

    TYPE: ClassVar[str] = "group_resumed"

    group: str
    resumed_count: int = 0


@event
@dataclass(frozen=True, slots=True)
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


@event
@dataclass(frozen=True, slots=True)
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


@message("events")
@dataclass(frozen=True, slots=True)
class EventBatch(Message):
    """Several events in one message, in the order they happened: pushed to the EventPublisher
    (unnumbered), and published by it (numbered, a run of one topic)."""

    events: list[SchedulerEvent]
