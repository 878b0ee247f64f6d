"""Public records and results: task rows, history rows, statistics, lookups, outcomes.

Records are frozen dataclasses built from the wire structs of ``bus.kinds`` (``from_row`` /
``from_reply`` / ``from_wire``). Times travel as epoch milliseconds and are turned into
timezone-aware UTC ``datetime`` here; statuses are ``str`` enums that compare equal to their value.
``to_dict`` gives JSON-serialisable dicts: datetimes as ISO 8601 strings, payloads as base64.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from bus.clock import EPOCH, datetime_to_ms, ms_to_datetime
from bus.kinds import HistoryRow, LookupReply, Outcome, ScheduleRow, TaskRow, TypeStatsReply
from bus.kinds_run import HostInfo
from taskmill.priority import Priority

__all__ = [
    "EPOCH",
    "EstimatedProgress",
    "HistoryStatus",
    "HostSummary",
    "OutcomeKind",
    "ParentResolution",
    "QueueDepth",
    "RecurringScheduleInfo",
    "SubmitOutcome",
    "TaskHistoryRecord",
    "TaskLookup",
    "TaskMetrics",
    "TaskRecord",
    "TaskStatus",
    "TypeStats",
    "datetime_to_ms",
    "ms_to_datetime",
]


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_datetime(ms)


def _jsonable(value: Any) -> Any:
    """A field value as JSON-able data (datetimes ISO 8601, bytes base64, enums by value)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Priority):
        return int(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-serialisable dict (ISO 8601 times, base64 payload)."""
        result: dict[str, Any] = _jsonable(self)
        return result


class TaskStatus(StrEnum):
    """Status of an active task."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    """Preempted (it resumes ahead of the pending tasks of its priority), or of a paused
    group."""
    WAITING = "waiting"
    BLOCKED = "blocked"
    """Waiting for its dependencies to complete: never dispatched until then."""


class HistoryStatus(StrEnum):
    """Status of a finished task in history."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"
    """A retryable failure whose retries were used up: kept apart, to be retried by hand."""
    EXPIRED = "expired"
    SUPERSEDED = "superseded"
    """Replaced by a submission of the same key with ``DuplicateStrategy.SUPERSEDE``."""
    DEPENDENCY_FAILED = "dependency_failed"
    """A dependency ended without completing (see ``DependencyFailure``)."""


@dataclass(frozen=True)
class TaskRecord(_ToDict):
    """An active task (pending, running, paused or waiting).

    A task that is not due yet (a ``run_after`` in the future, or a retry waiting out its delay)
    is ``pending`` here; ``run_after`` says when it is due, and the snapshot counts those apart
    (``scheduled_count``).
    """

    id: int
    task_type: str
    key: str
    """The 64-hex dedup hash."""
    label: str
    priority: Priority
    status: TaskStatus
    payload: bytes | None = None
    expected_read_bytes: int = 0
    expected_write_bytes: int = 0
    expected_net_rx_bytes: int = 0
    expected_net_tx_bytes: int = 0
    retry_count: int = 0
    last_error: str | None = None
    created_at: datetime = EPOCH
    started_at: datetime | None = None
    requeue: bool = False
    """Set when a submission arrived while the task ran: it runs again after completing."""
    requeue_priority: Priority | None = None
    parent_id: int | None = None
    fail_fast: bool = True
    group_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict, hash=False)
    """The task's tags (its own and those inherited from its parent)."""
    run_after: datetime | None = None
    """When the task is (or was) due: its ``run_after``/``run_at``, a retry's delay, a recurring
    task's next run; None: due as soon as it was submitted."""

    @classmethod
    def from_row(cls, row: TaskRow) -> TaskRecord:
        """The record of a wire ``TaskRow``."""
        return cls(
            id=row.id,
            status=TaskStatus(_ACTIVE_STATUS.get(row.status, row.status)),
            **_task_fields(row),
            requeue=row.requeue,
            requeue_priority=(
                None if row.requeue_priority is None else Priority(row.requeue_priority)
            ),
            run_after=_opt_dt(row.due_at_ms),
        )


_ACTIVE_STATUS = {"scheduled": "pending"}
"""Store statuses that users see as another: a task not due yet is pending."""


def _task_fields(row: TaskRow | HistoryRow) -> dict[str, Any]:
    """The fields an active task and a finished run share, converted from the wire."""
    return {
        "task_type": row.task_type,
        "key": row.key,
        "label": row.label,
        "priority": Priority(row.priority),
        "payload": row.payload,
        "expected_read_bytes": row.expected_read_bytes,
        "expected_write_bytes": row.expected_write_bytes,
        "expected_net_rx_bytes": row.expected_net_rx_bytes,
        "expected_net_tx_bytes": row.expected_net_tx_bytes,
        "retry_count": row.retry_count,
        "last_error": row.last_error,
        "created_at": ms_to_datetime(row.created_at_ms),
        "started_at": _opt_dt(row.started_at_ms),
        "parent_id": row.parent_id,
        "fail_fast": row.fail_fast,
        "group_key": row.group_key,
        "tags": dict(row.tags) if row.tags else {},
    }


@dataclass(frozen=True)
class TaskHistoryRecord(_ToDict):
    """A finished run: its own ``id``, the ``task_id`` it came from, and the task's fields.

    ``requeue`` and ``requeue_priority`` are always False / None here; they exist so a history
    record has every ``TaskRecord`` field.
    """

    id: int
    task_id: int
    task_type: str
    key: str
    label: str
    priority: Priority
    status: HistoryStatus
    payload: bytes | None = None
    expected_read_bytes: int = 0
    expected_write_bytes: int = 0
    expected_net_rx_bytes: int = 0
    expected_net_tx_bytes: int = 0
    retry_count: int = 0
    last_error: str | None = None
    created_at: datetime = EPOCH
    started_at: datetime | None = None
    requeue: bool = False
    requeue_priority: Priority | None = None
    parent_id: int | None = None
    fail_fast: bool = True
    group_key: str | None = None
    actual_read_bytes: int = 0
    actual_write_bytes: int = 0
    actual_net_rx_bytes: int = 0
    actual_net_tx_bytes: int = 0
    completed_at: datetime = EPOCH
    duration_ms: int | None = None
    result: bytes | None = None
    """What the executor returned (a parent: its ``finalize``): bytes as returned, anything
    else as JSON (``result_json()``); None when it returned None or did not complete."""
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def from_row(cls, row: HistoryRow) -> TaskHistoryRecord:
        """The record of a wire ``HistoryRow``."""
        return cls(
            id=row.id,
            task_id=row.task_id,
            status=HistoryStatus(row.status),
            **_task_fields(row),
            actual_read_bytes=row.actual_read_bytes,
            actual_write_bytes=row.actual_write_bytes,
            actual_net_rx_bytes=row.actual_net_rx_bytes,
            actual_net_tx_bytes=row.actual_net_tx_bytes,
            completed_at=ms_to_datetime(row.completed_at_ms),
            duration_ms=row.duration_ms,
            result=row.result,
        )

    def result_json(self) -> Any:
        """The result decoded from JSON (None without a result); ``ValueError`` when the
        executor returned bytes that are not JSON."""
        if self.result is None:
            return None
        return json.loads(self.result)

    @property
    def metrics(self) -> TaskMetrics:
        """The actual IO bytes the executor recorded."""
        return TaskMetrics(
            self.actual_read_bytes,
            self.actual_write_bytes,
            self.actual_net_rx_bytes,
            self.actual_net_tx_bytes,
        )


@dataclass(frozen=True)
class TaskMetrics(_ToDict):
    """IO bytes an executor reported (``TaskContext.record_*_bytes``)."""

    read_bytes: int = 0
    write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


@dataclass(frozen=True)
class TypeStats(_ToDict):
    """History statistics of one task type.

    ``count`` = completed + failed runs; the averages are over completed runs;
    ``failure_rate`` = failed / max(count, 1).
    """

    count: int = 0
    avg_duration_ms: float = 0.0
    avg_read_bytes: float = 0.0
    avg_write_bytes: float = 0.0
    failure_rate: float = 0.0

    @classmethod
    def from_reply(cls, reply: TypeStatsReply) -> TypeStats:
        """The statistics of a Store ``TypeStatsReply``."""
        return cls(
            count=reply.count,
            avg_duration_ms=float(reply.avg_duration_ms),
            avg_read_bytes=float(reply.avg_read_bytes),
            avg_write_bytes=float(reply.avg_write_bytes),
            failure_rate=float(reply.failure_rate),
        )


@dataclass(frozen=True)
class TaskLookup(_ToDict):
    """Where a dedup key was found: ``"active"`` (a ``TaskRecord``), ``"history"`` (the newest
    ``TaskHistoryRecord``) or ``"not_found"`` (``record`` None)."""

    location: Literal["active", "history", "not_found"]
    record: TaskRecord | TaskHistoryRecord | None = None

    @property
    def found(self) -> bool:
        """True unless the location is ``"not_found"``."""
        return self.location != "not_found"

    @classmethod
    def from_reply(cls, reply: LookupReply) -> TaskLookup:
        """The lookup result of a Store ``LookupReply``."""
        if reply.location == "active" and reply.task is not None:
            return cls("active", TaskRecord.from_row(reply.task))
        if reply.location == "history" and reply.history is not None:
            return cls("history", TaskHistoryRecord.from_row(reply.history))
        if reply.location == "not_found":
            return cls("not_found", None)
        raise ValueError(f"inconsistent lookup reply: location {reply.location!r}")


@dataclass(frozen=True)
class EstimatedProgress(_ToDict):
    """Progress of a running task: what it reported, what is extrapolated, and the best value.

    See ``taskmill.progress.estimate_progress`` for how ``percent`` is chosen (0..1).
    """

    task_id: int
    task_type: str
    key: str
    label: str
    reported_percent: float | None
    extrapolated_percent: float | None
    percent: float
    bytes_done: int | None = None
    """Bytes the task reported done (None: it reported no bytes)."""
    bytes_total: int | None = None
    """The bytes it expects in all, when it said."""
    throughput_bps: float | None = None
    """Its smoothed rate, bytes per second."""
    eta_s: float | None = None
    """Seconds left at that rate, when the total and a rate are known."""


class OutcomeKind(StrEnum):
    """What a submission did: inserted a task, upgraded or requeued one, or nothing."""

    INSERTED = "inserted"
    UPGRADED = "upgraded"
    REQUEUED = "requeued"
    DUPLICATE = "duplicate"
    SUPERSEDED = "superseded"
    """The submission replaced the active task of its key (``DuplicateStrategy.SUPERSEDE``)."""
    REJECTED = "rejected"
    """An active task had the key and the submission said ``DuplicateStrategy.REJECT``."""


@dataclass(frozen=True)
class SubmitOutcome(_ToDict):
    """The result of one submission: ``kind`` and the task ``id`` (None for a duplicate or a
    rejection); for ``superseded``, ``id`` is the task now holding the key and ``replaced_id``
    the one it replaced (the same id when it was replaced in place)."""

    kind: OutcomeKind
    id: int | None = None
    replaced_id: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", OutcomeKind(self.kind))
        if (self.id is None) != (self.kind in _NO_ID):
            raise ValueError(
                f"a {self.kind.value} outcome needs id None iff duplicate or rejected: {self.id}"
            )

    def is_inserted(self) -> bool:
        """A new task was inserted."""
        return self.kind is OutcomeKind.INSERTED

    def is_upgraded(self) -> bool:
        """An existing pending or paused task's priority was raised."""
        return self.kind is OutcomeKind.UPGRADED

    def is_requeued(self) -> bool:
        """A running or paused task was marked to run again after it completes."""
        return self.kind is OutcomeKind.REQUEUED

    def is_duplicate(self) -> bool:
        """Nothing changed: an active task already had the key."""
        return self.kind is OutcomeKind.DUPLICATE

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "id"}``, plus ``replaced_id`` for a superseded outcome."""
        data = super().to_dict()
        if self.replaced_id is None:
            del data["replaced_id"]
        return data

    def is_superseded(self) -> bool:
        """The submission replaced the active task of its key."""
        return self.kind is OutcomeKind.SUPERSEDED

    def is_rejected(self) -> bool:
        """Nothing changed: an active task had the key, and the submission said reject."""
        return self.kind is OutcomeKind.REJECTED

    @classmethod
    def from_wire(cls, outcome: Outcome) -> SubmitOutcome:
        """The outcome of a wire ``Outcome``."""
        kind = _OUTCOME_KINDS.get(outcome.kind)
        task_id = outcome.id
        if kind is None or (kind not in _NO_ID and type(task_id) is not int):
            return cls(OutcomeKind(outcome.kind), task_id)  # raises ValueError, as it should
        if kind is _SUPERSEDED or kind is _REJECTED:
            return cls(kind, task_id, outcome.replaced_id)
        # A batch of 1,000 submits builds 1,000 outcomes: skip the checks just made, and fill
        # the instance's dict directly (cheaper than object.__setattr__ per field).
        made = object.__new__(cls)
        fields = made.__dict__
        fields["kind"] = kind
        fields["id"] = None if kind is _DUPLICATE else task_id
        fields["replaced_id"] = None
        return made


_OUTCOME_KINDS = {kind.value: kind for kind in OutcomeKind}
_DUPLICATE = OutcomeKind.DUPLICATE
_SUPERSEDED = OutcomeKind.SUPERSEDED
_REJECTED = OutcomeKind.REJECTED
_NO_ID = frozenset({OutcomeKind.DUPLICATE, OutcomeKind.REJECTED})


class ParentResolution(StrEnum):
    """What becomes of a ``waiting`` parent once its children are checked.

    ``WAITING``: children are still unfinished. ``FINALIZE``: all finished and none failed, so
    its ``finalize`` runs. ``FAILED``: a child failed, so the parent fails (``finalize`` is not
    called).
    """

    WAITING = "waiting"
    FINALIZE = "finalize"
    FAILED = "failed"


@dataclass(frozen=True)
class QueueDepth(_ToDict):
    """How many tasks wait to run (``pending``) at one priority in one group (None: none)."""

    priority: Priority
    group: str | None
    count: int

    @classmethod
    def from_wire(cls, row: tuple[int, str | None, int]) -> QueueDepth:
        priority, group, count = row
        return cls(Priority(priority), group, count)


@dataclass(frozen=True)
class HostSummary(_ToDict):
    """An executor host connected to the Dispatcher: the task types it runs, how many at once
    (``capacity``) and how many it runs now."""

    host_id: str
    task_types: list[str]
    capacity: int
    running: int

    @classmethod
    def from_wire(cls, info: HostInfo) -> HostSummary:
        return cls(info.host_id, list(info.task_types), info.capacity, info.running)


@dataclass(frozen=True)
class RecurringScheduleInfo(_ToDict):
    """A recurring schedule (``store.recurring_schedules()``).

    ``task_id`` names the schedule: the id its first submission returned (the controls take it,
    or the id of an instance still active). ``interval`` (seconds) or ``cron`` says when it
    recurs; ``next_run`` is when the instance waiting to start is due (None while it runs, or
    when none waits: paused); ``execution_count`` counts the runs completed.
    """

    task_id: int
    task_type: str
    label: str
    interval: float | None
    cron: str | None
    next_run: datetime | None
    execution_count: int
    max_executions: int | None
    paused: bool
    key: str = ""
    """The 64-hex dedup hash every instance has."""

    @classmethod
    def from_row(cls, row: ScheduleRow) -> RecurringScheduleInfo:
        return cls(
            task_id=row.id,
            task_type=row.task_type,
            label=row.label,
            interval=row.interval_s,
            cron=row.cron,
            next_run=_opt_dt(row.next_run_ms),
            execution_count=row.execution_count,
            max_executions=row.max_executions,
            paused=row.paused,
            key=row.key,
        )
