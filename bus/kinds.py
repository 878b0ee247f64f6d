"""Every message kind of the protocol, one small frozen dataclass each, in one registry.

Kinds are grouped by the socket they travel on; ``docs/protocol.md`` gives sender, receiver,
socket and reply for each. Times are epoch milliseconds (``*_ms``), payloads opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bus.protocol import Message, message
from bus.structs import (
    HistoryRow as HistoryRow,
)
from bus.structs import (
    Outcome as Outcome,
)
from bus.structs import (
    Submission as Submission,
)
from bus.structs import (
    TaskResult as TaskResult,
)
from bus.structs import (
    TaskRow as TaskRow,
)
from bus.structs import (
    Transition as Transition,
)

# -- generic replies and the control path (every actor) ----------------------------------------


@message("ok")
@dataclass(frozen=True, slots=True)
class Ok(Message):
    value: Any = None


@message("error")
@dataclass(frozen=True, slots=True)
class Error(Message):
    code: int
    reason: str


@message("pong")
@dataclass(frozen=True, slots=True)
class Pong(Message):
    name: str


@message("ping", reply=Pong)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    pass


@message("stats.reply")
@dataclass(frozen=True, slots=True)
class StatsReply(Message):
    name: str
    counters: dict[str, Any]


@message("stats", reply=StatsReply)
@dataclass(frozen=True, slots=True)
class Stats(Message):
    pass


@message("stop", reply=Ok)
@dataclass(frozen=True, slots=True)
class Stop(Message):
    pass


# -- the Store (ROUTER, requests from clients, the Dispatcher and executor hosts) ---------------


@message("store.submit.reply")
@dataclass(frozen=True, slots=True)
class SubmitReply(Message):
    outcomes: list[Outcome]


@message("store.submit", reply=SubmitReply)
@dataclass(frozen=True, slots=True)
class Submit(Message):
    """Submit one or more tasks in one transaction (all or nothing)."""

    submissions: list[Submission]
    request_id: str | None = None


@message("store.task.reply")
@dataclass(frozen=True, slots=True)
class TaskReply(Message):
    task: TaskRow | None


@message("store.task", reply=TaskReply)
@dataclass(frozen=True, slots=True)
class GetTask(Message):
    id: int | None = None
    key: str | None = None


@message("store.tasks.reply")
@dataclass(frozen=True, slots=True)
class TasksReply(Message):
    tasks: list[TaskRow]


@message("store.tasks", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class ListTasks(Message):
    status: str
    limit: int = 100


@message("store.counts.reply")
@dataclass(frozen=True, slots=True)
class CountsReply(Message):
    pending: int
    running: int
    paused: int
    waiting: int


@message("store.counts", reply=CountsReply)
@dataclass(frozen=True, slots=True)
class Counts(Message):
    pass


@message("store.lookup.reply")
@dataclass(frozen=True, slots=True)
class LookupReply(Message):
    location: str  # active | history | not_found
    task: TaskRow | None = None
    history: HistoryRow | None = None


@message("store.lookup", reply=LookupReply)
@dataclass(frozen=True, slots=True)
class Lookup(Message):
    key: str


@message("store.history.reply")
@dataclass(frozen=True, slots=True)
class HistoryReply(Message):
    rows: list[HistoryRow]
    next_offset: int | None = None
    """Set when rows were left out to keep the reply within a frame: ask again from there."""


@message("store.history", reply=HistoryReply)
@dataclass(frozen=True, slots=True)
class History(Message):
    """History newest first, optionally filtered by type, key or status."""

    limit: int = 50
    offset: int = 0
    task_type: str | None = None
    key: str | None = None
    status: str | None = None


@message("store.stats.reply")
@dataclass(frozen=True, slots=True)
class TypeStatsReply(Message):
    count: int
    avg_duration_ms: float
    avg_read_bytes: float
    avg_write_bytes: float
    failure_rate: float


@message("store.stats", reply=TypeStatsReply)
@dataclass(frozen=True, slots=True)
class HistoryStats(Message):
    task_type: str


@message("store.throughput.reply")
@dataclass(frozen=True, slots=True)
class ThroughputReply(Message):
    read_bytes_per_sec: float
    write_bytes_per_sec: float
    net_rx_bytes_per_sec: float = 0.0
    net_tx_bytes_per_sec: float = 0.0


@message("store.throughput", reply=ThroughputReply)
@dataclass(frozen=True, slots=True)
class AvgThroughput(Message):
    task_type: str
    n: int = 20


@message("store.learned.reply")
@dataclass(frozen=True, slots=True)
class LearnedReply(Message):
    """Learned expected bytes per type: ``{type: [read, write, net_rx, net_tx]}``."""

    by_type: dict[str, list[float]]


@message("store.learned", reply=LearnedReply)
@dataclass(frozen=True, slots=True)
class LearnedIO(Message):
    task_types: list[str]
    min_runs: int = 5
    window: int = 20


@message("store.prune", reply=Ok)
@dataclass(frozen=True, slots=True)
class Prune(Message):
    """Delete history beyond the newest ``keep`` rows, or older than ``days``; Ok(value=deleted)."""

    keep: int | None = None
    days: float | None = None


@message("store.peek", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Peek(Message):
    """The most urgent dispatchable rows: finalize-ready parents first, then pending ones."""

    limit: int
    skip_groups: list[str] = field(default_factory=list)


@message("store.claim", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Claim(Message):
    """Atomically move these rows to ``running``; the reply holds those actually claimed."""

    ids: list[int]
    now_ms: int = 0


@message("store.claim_next.reply")
@dataclass(frozen=True, slots=True)
class ClaimNextReply(Message):
    tasks: list[TaskRow]
    held_by_group: bool = False


@message("store.claim_next", reply=ClaimNextReply)
@dataclass(frozen=True, slots=True)
class ClaimNext(Message):
    """Peek and claim in one request when the Dispatcher's gate is open: up to ``limit`` of the
    most urgent rows, stopping at the first above ``max_priority`` (throttled) or in a group
    (the GroupLimiter decides those: ``held_by_group`` tells the Dispatcher to ask it)."""

    limit: int
    max_priority: int = 255
    skip_groups: list[str] = field(default_factory=list)
    now_ms: int = 0


@message("store.finish.reply")
@dataclass(frozen=True, slots=True)
class FinishReply(Message):
    transitions: list[Transition]


@message("store.finish", reply=FinishReply)
@dataclass(frozen=True, slots=True)
class Finish(Message):
    """Apply executor results (completion, retry or failure) in one transaction."""

    results: list[TaskResult]
    max_retries: int = 3


@message("store.preempt", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Preempt(Message):
    """Move running rows to ``paused`` (started_at cleared, retries unchanged)."""

    ids: list[int]


@message("store.resume", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class ResumePaused(Message):
    """Paused rows back to pending, unless a running task at or above the threshold and strictly
    more urgent exists (anti-thrash)."""

    preempt_priority: int


@message("store.cancel.reply")
@dataclass(frozen=True, slots=True)
class CancelReply(Message):
    transitions: list[Transition]


@message("store.cancel", reply=CancelReply)
@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Cancel a task and, first, its children; each gets a ``cancelled`` history row."""

    id: int


@message("store.release", reply=FinishReply)
@dataclass(frozen=True, slots=True)
class Release(Message):
    """Running rows of a lost host go back to pending with retry_count + 1 and ``error``.

    With ``max_retries`` set, a row that has already used its retries fails instead.
    """

    ids: list[int]
    error: str = "executor host lost"
    max_retries: int | None = None
    count_retry: bool = True
    """False for runs that never reached a host (an orphaned claim): no attempt was made."""


# -- Store notifications (PUB, one-way, to the Dispatcher) --------------------------------------


@message("store.changed")
@dataclass(frozen=True, slots=True)
class StoreChanged(Message):
    """Something became dispatchable. ``min_priority`` is the most urgent new priority."""

    min_priority: int = 255
    count: int = 0
    running_below: list[int] = field(default_factory=list)
    """When the change may preempt: the tasks running as it committed, less urgent than it."""
