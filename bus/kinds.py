"""Every message kind of the protocol, one small frozen dataclass each, in one registry.

Kinds are grouped by the socket they travel on; ``docs/protocol.md`` gives sender, receiver,
socket and reply for each. Times are epoch milliseconds (``*_ms``), payloads opaque bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bus.protocol import Message, message, struct
from bus.structs import (
    HistoryRow as HistoryRow,
)
from bus.structs import (
    Outcome as Outcome,
)
from bus.structs import (
    RecurSpec as RecurSpec,
)
from bus.structs import (
    RetrySpec as RetrySpec,
)
from bus.structs import (
    ScheduleRow as ScheduleRow,
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
    transitions: list[Transition] = field(default_factory=list)
    """What the submissions did to other tasks (superseded ones, children cancelled with them):
    the Store hands these to the Dispatcher with ``store.changed``."""


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
    next_due_ms: int | None = None
    """For ``store.peek``: when the earliest task scheduled for later is due (epoch ms)."""
    next_offset: int | None = None
    """For ``store.tasks``: set when rows were left out to keep the reply within a frame: ask
    again from there."""


@message("store.tasks", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class ListTasks(Message):
    """Active tasks of one status, as many as fit in a reply (``next_offset`` for the rest)."""

    status: str
    limit: int = 100
    offset: int = 0


@message("store.counts.reply")
@dataclass(frozen=True, slots=True)
class CountsReply(Message):
    pending: int
    running: int
    paused: int
    waiting: int
    scheduled: int = 0
    """Not due yet (a ``run_after`` in the future, or a retry waiting out its delay)."""
    blocked: int = 0
    """Waiting for dependencies to complete."""


@message("store.counts", reply=CountsReply)
@dataclass(frozen=True, slots=True)
class Counts(Message):
    pass


@message("store.depth.reply")
@dataclass(frozen=True, slots=True)
class DepthReply(Message):
    rows: list[tuple[int, str | None, int]]
    """``(priority, group or None, pending tasks)``, by priority then group."""


@message("store.depth", reply=DepthReply)
@dataclass(frozen=True, slots=True)
class Depth(Message):
    """The queue's depth: pending tasks by priority and group (for dashboards)."""


@message("store.children", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Children(Message):
    """The active children of a task, oldest first."""

    parent_id: int
    limit: int = 100


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


@struct
@dataclass(frozen=True, slots=True)
class ClaimSpec:
    """What a claim may take: up to ``limit`` rows, none less urgent than ``max_priority`` (the
    throttle floor), with ``preempt_priority`` the threshold under which a running task holds
    back every less urgent one (resuming after preemption)."""

    limit: int
    max_priority: int = 255
    preempt_priority: int = -1
    now_ms: int = 0
    pushes_seen: int = 0
    """The ``push`` of the latest ``store.changed`` with rows the sender had handled when it
    counted ``limit``: rows the Store pushed after that one took slots ``limit`` still counts
    as free, and the Store takes them off (0: the sender has handled none)."""


@message("store.peek", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Peek(Message):
    """The rows a ``store.claim_next`` of ``claim`` would take now (no payload), in dispatch
    order: for a Dispatcher whose gate must look at each candidate (IO budgets) before
    ``store.claim``."""

    claim: ClaimSpec


@message("store.claim", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Claim(Message):
    """Atomically move these rows to ``running``, each while its group has room; the reply holds
    those actually claimed, in dispatch order."""

    ids: list[int]
    now_ms: int = 0


@message("store.claim_next.reply")
@dataclass(frozen=True, slots=True)
class ClaimNextReply(Message):
    tasks: list[TaskRow]
    exhausted: bool = True
    """True when nothing more can be claimed until something changes (a submission, a finish,
    a limit, the pressure, the next due time): the Dispatcher does not ask again before then."""
    next_due_ms: int | None = None
    """When the earliest task scheduled for later is due (epoch ms): the Dispatcher's alarm."""
    transitions: list[Transition] = field(default_factory=list)
    """Tasks the claim found expired (history ``expired``), for their events."""


@message("store.claim_next", reply=ClaimNextReply)
@dataclass(frozen=True, slots=True)
class ClaimNext(Message):
    """Walk the queue and claim, in one transaction: priority order, group limits, the throttle
    floor and the preemption rule applied where the rows are."""

    claim: ClaimSpec


@message("store.finish.reply")
@dataclass(frozen=True, slots=True)
class FinishReply(Message):
    transitions: list[Transition]
    claimed: list[TaskRow] = field(default_factory=list)
    exhausted: bool = True
    next_due_ms: int | None = None


@message("store.finish", reply=FinishReply)
@dataclass(frozen=True, slots=True)
class Finish(Message):
    """Apply executor results (completion, retry or failure) in one transaction and, with
    ``claim``, claim the next rows in the same transaction (the slots the results freed)."""

    results: list[TaskResult]
    max_retries: int = 3
    claim: ClaimSpec | None = None


@message("store.preempt", reply=TasksReply)
@dataclass(frozen=True, slots=True)
class Preempt(Message):
    """Move running rows to ``paused`` (started_at cleared, retries unchanged)."""

    ids: list[int]


@message("store.cancel.reply")
@dataclass(frozen=True, slots=True)
class CancelReply(Message):
    transitions: list[Transition]


@message("store.cancel", reply=CancelReply)
@dataclass(frozen=True, slots=True)
class Cancel(Message):
    """Cancel a task and, first, its children; each gets a ``cancelled`` history row."""

    id: int
    recurring: bool = False
    """Also end the recurring schedule ``id`` names (its first task's id, or an active
    instance's), even when no instance of it is active (a ``schedule_cancelled`` transition)."""


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


@message("store.ids.reply")
@dataclass(frozen=True, slots=True)
class IdsReply(Message):
    ids: list[int]


@message("store.dependencies", reply=IdsReply)
@dataclass(frozen=True, slots=True)
class Dependencies(Message):
    """The ids of the active tasks ``id`` still waits for (``dependents`` False), or of the
    blocked tasks that wait for ``id`` (``dependents`` True), in id order."""

    id: int
    dependents: bool = False


# -- Store notifications (PUB, one-way, to the Dispatcher) --------------------------------------


@message("store.changed")
@dataclass(frozen=True, slots=True)
class StoreChanged(Message):
    """Something became dispatchable. ``min_priority`` is the most urgent new priority; to the
    Dispatcher, ``claimed`` holds the rows its standing claim took in the same transaction."""

    min_priority: int = 255
    count: int = 0
    claimed: list[TaskRow] = field(default_factory=list)
    exhausted: bool = True
    next_due_ms: int | None = None
    standing: bool = False
    """The Dispatcher's standing claim ran for this change: ``claimed`` is all it needs (and
    ``exhausted`` False asks it to claim again)."""
    transitions: list[Transition] = field(default_factory=list)
    """With ``standing``: tasks the claim found expired."""
    push: int = 0
    """With ``claimed`` rows: this push's number, larger than every earlier one's (the
    Dispatcher names the latest it handled in its next claim's ``pushes_seen``); else 0."""


# -- group policy (the GroupLimiter keeps it in the Store, where the claim applies it) -----------


@message("store.groups.reply")
@dataclass(frozen=True, slots=True)
class GroupsReply(Message):
    configured_default: int
    configured: dict[str, int]
    runtime_default: int | None
    runtime: dict[str, int]
    running: dict[str, int]


@message("store.groups", reply=GroupsReply)
@dataclass(frozen=True, slots=True)
class GetGroups(Message):
    """The group policy's two layers and the running count of every group."""


@message("store.set_groups", reply=Ok)
@dataclass(frozen=True, slots=True)
class SetGroups(Message):
    """Change one layer of the group policy (``configured`` or ``runtime``): ``replace`` clears
    it first, ``default`` None keeps the default, a limit None removes that group's value."""

    layer: str
    default: int | None = None
    limits: dict[str, int | None] = field(default_factory=dict)
    replace: bool = False


# -- time and failure: results, dead letter ---------------------------------------------------


@message("store.result", reply=HistoryReply)
@dataclass(frozen=True, slots=True)
class GetResult(Message):
    """The newest terminal history row of a task (any status: completed, failed, cancelled,
    dead_letter): zero or one row, with its ``result``."""

    task_id: int


@message("store.expire", reply=FinishReply)
@dataclass(frozen=True, slots=True)
class Expire(Message):
    """The sweep: tasks past their TTL that have not started (pending, paused, scheduled) go to
    history as ``expired``, at most ``limit`` of them; one ``expired`` transition each."""

    limit: int = 500


@message("store.dead_letter", reply=HistoryReply)
@dataclass(frozen=True, slots=True)
class DeadLetter(Message):
    """History rows with status ``dead_letter``, newest first."""

    limit: int = 50
    offset: int = 0


@message("store.retry_dead_letter", reply=SubmitReply)
@dataclass(frozen=True, slots=True)
class RetryDeadLetter(Message):
    """Submit a dead-lettered task again (retry_count 0) and remove its dead-letter row; one
    outcome (``duplicate`` when an active task has its key). ``INVALID`` for an id that is no
    dead-letter row."""

    history_id: int


# -- flow control: tags, bulk cancellation ------------------------------------------------------


@message("store.cancel_where", reply=CancelReply)
@dataclass(frozen=True, slots=True)
class CancelWhere(Message):
    """Cancel every active task of ``group``, of ``task_type`` or with the tag ``tag``
    ([key, value]) — exactly one of the three — with their children, in one transaction."""

    group: str | None = None
    task_type: str | None = None
    tag: list[str] | None = None


@message("store.task_ids_by_tags", reply=IdsReply)
@dataclass(frozen=True, slots=True)
class TaskIdsByTags(Message):
    """Ids of the active tasks having every tag of ``tags`` (and ``status``: pending, running,
    paused or waiting), in id order, at most ``limit``."""

    tags: dict[str, str]
    status: str | None = None
    limit: int = 100_000


@message("store.tag_counts.reply")
@dataclass(frozen=True, slots=True)
class TagCountsReply(Message):
    counts: list[tuple[str, int]]
    """(value, active tasks with it), most first."""


@message("store.count_by_tag", reply=TagCountsReply)
@dataclass(frozen=True, slots=True)
class CountByTag(Message):
    """The values of tag ``key`` among the active tasks, with their counts."""

    key: str


# -- recurring schedules ----------------------------------------------------------------------


@message("store.pause_recurring", reply=Ok)
@dataclass(frozen=True, slots=True)
class PauseRecurring(Message):
    """Insert no next instance of the schedule ``id`` names (its first task's id, or an active
    instance's) until it is resumed; an instance already there still runs. Ok(value=True)
    when there is such a schedule."""

    id: int


@message("store.resume_recurring", reply=SubmitReply)
@dataclass(frozen=True, slots=True)
class ResumeRecurring(Message):
    """Resume a paused schedule: when none of its instances is active, the next is inserted at
    once (one ``inserted`` outcome; else ``duplicate``). No outcome: no such schedule."""

    id: int


@message("store.recurring.reply")
@dataclass(frozen=True, slots=True)
class RecurringReply(Message):
    schedules: list[ScheduleRow]


@message("store.recurring_schedules", reply=RecurringReply)
@dataclass(frozen=True, slots=True)
class RecurringSchedules(Message):
    """Every recurring schedule, by id."""


# -- operations: the figures the metrics endpoint shows --------------------------------------


QUEUE_STATUSES = ("pending", "running", "paused", "waiting", "scheduled", "blocked")
"""The statuses of active tasks, as ``QueueCount`` names them."""


@struct
@dataclass(frozen=True, slots=True)
class QueueCount:
    """Active tasks of one status, priority tier (``bus.tiers``) and task type."""

    status: str
    tier: str
    task_type: str | None
    """None: pending tasks the Store did not split by type (the queue was too deep to)."""
    count: int
    ready_since_ms: int | None = None
    """For ``pending``: since when the longest-waiting of them has been ready to run (epoch ms)."""


@struct
@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Latencies since the actor started: ``counts[i]`` of them at most ``bounds[i]`` seconds
    and over ``bounds[i-1]``; the last count is those over every bound."""

    bounds: list[float]
    counts: list[int]
    sum_s: float = 0.0


@message("store.metrics.reply")
@dataclass(frozen=True, slots=True)
class StoreMetrics(Message):
    counts: list[QueueCount]
    running_by_group: dict[str, int] = field(default_factory=dict)
    submitted: int = 0
    """Tasks inserted since the Store started (duplicates, upgrades and requeues not counted)."""
    transactions: LatencyHistogram | None = None


@message("store.metrics", reply=StoreMetrics)
@dataclass(frozen=True, slots=True)
class GetStoreMetrics(Message):
    """One aggregate read of the queue for the metrics endpoint, made once per scrape interval:
    counts by status, tier and type, running tasks per group, the Store's own counters."""
