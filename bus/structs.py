"""The records nested inside messages: tasks, history rows, outcomes, results, transitions.

Registered with ``@struct`` so the codec decodes them back into these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.protocol import struct


@struct
@dataclass(frozen=True, slots=True)
class RetrySpec:
    """A retry policy on the wire: the delay before retry n (0-based) is ``constant``:
    ``initial_s``; ``linear``: min(initial_s + n * increment_s, max_s); ``exponential``:
    min(initial_s * multiplier**n, max_s); ``exponential_jitter``: uniform in [0, that];
    ``none``: no retries. ``max_retries`` None: the next layer's (type, default, builder)."""

    strategy: str
    initial_s: float = 0.0
    increment_s: float = 0.0
    max_s: float | None = None
    multiplier: float = 2.0
    max_retries: int | None = None


@struct
@dataclass(frozen=True, slots=True)
class RecurSpec:
    """A recurring schedule on the wire: every ``interval_s`` seconds after each completion,
    or at each minute the UTC cron expression ``cron`` matches (exactly one of the two); at
    most ``max_executions`` runs (None: no end)."""

    interval_s: float | None = None
    cron: str | None = None
    max_executions: int | None = None


@struct
@dataclass(frozen=True, slots=True)
class Submission:
    """One submission as the Store receives it; ``key`` is the 64-hex dedup hash."""

    task_type: str
    key: str
    label: str
    priority: int = 128
    payload: bytes | None = None
    expected_read_bytes: int = 0
    expected_write_bytes: int = 0
    expected_net_rx_bytes: int = 0
    expected_net_tx_bytes: int = 0
    group_key: str | None = None
    fail_fast: bool = True
    parent_id: int | None = None
    due_at_ms: int | None = None
    """Not dispatched before this instant (epoch ms); None or a past instant: at once."""
    retry: RetrySpec | None = None
    """This task's retry policy; None: its type's, else the default."""
    max_retries: int | None = None
    """Overrides the policy's ``max_retries``."""
    timeout_s: float | None = None
    """A run longer than this is cancelled and counts as a retryable failure."""
    ttl_s: float | None = None
    """Expires (never runs) when not started this long after ``ttl_from``; None: the type's or
    the default TTL, if any."""
    ttl_from: str = "submission"
    """``submission`` or ``first_attempt``."""
    tags: dict[str, str] | None = None
    """Key/value metadata (``bus.limits``: ``MAX_TAGS`` tags, keys and values of bounded UTF-8
    size); None: none. A child's are added to its parent's (the child's win)."""
    on_duplicate: str = "skip"
    """What to do when an active task has the key: ``skip`` (the v1 outcomes), ``supersede``
    (replace it) or ``reject`` (outcome ``rejected``, nothing changed)."""
    depends_on: list[int] | None = None
    """Ids of tasks this one waits for (it is ``blocked`` until each has completed)."""
    depends_on_index: list[int] | None = None
    """Positions, in the same ``store.submit`` batch, of the submissions this one waits for
    (the task each of them inserted, or the active task holding its key)."""
    on_dependency_failure: str = "cancel"
    """``cancel``, ``fail`` or ``ignore``: what a dependency ending without completing does."""
    recurring: RecurSpec | None = None
    """Runs again after each completion (a new task of the same key), per this schedule."""


@struct
@dataclass(frozen=True, slots=True)
class TaskRow:
    """An active task (a row of the ``tasks`` table)."""

    id: int
    task_type: str
    key: str
    label: str
    priority: int
    status: str
    payload: bytes | None = None
    expected_read_bytes: int = 0
    expected_write_bytes: int = 0
    expected_net_rx_bytes: int = 0
    expected_net_tx_bytes: int = 0
    retry_count: int = 0
    last_error: str | None = None
    created_at_ms: int = 0
    started_at_ms: int | None = None
    requeue: bool = False
    requeue_priority: int | None = None
    parent_id: int | None = None
    fail_fast: bool = True
    group_key: str | None = None
    phase: str = "execute"
    """``execute`` or ``finalize``: which executor method a dispatch of this row runs."""
    due_at_ms: int | None = None
    """Status ``scheduled`` until this instant; then ``pending``."""
    retry: RetrySpec | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    expires_at_ms: int | None = None
    """When the task expires if it has not started (epoch ms); None: never, or not yet known
    (a TTL counted from the first attempt)."""
    tags: dict[str, str] | None = None
    """The task's tags (its own and its parent's); None: none."""
    effective_priority: int | None = None
    """The priority the claim ordered this row by when priority aging raised it (a claimed row
    only); None: its own ``priority``."""


@struct
@dataclass(frozen=True, slots=True)
class HistoryRow:
    """A terminal run (a row of the ``history`` table)."""

    id: int
    task_id: int
    task_type: str
    key: str
    label: str
    priority: int
    status: str
    payload: bytes | None = None
    expected_read_bytes: int = 0
    expected_write_bytes: int = 0
    expected_net_rx_bytes: int = 0
    expected_net_tx_bytes: int = 0
    actual_read_bytes: int = 0
    actual_write_bytes: int = 0
    actual_net_rx_bytes: int = 0
    actual_net_tx_bytes: int = 0
    retry_count: int = 0
    last_error: str | None = None
    created_at_ms: int = 0
    started_at_ms: int | None = None
    completed_at_ms: int = 0
    duration_ms: int | None = None
    parent_id: int | None = None
    fail_fast: bool = True
    group_key: str | None = None
    result: bytes | None = None
    """What the run (a parent's: its finalize) returned, encoded (bytes as is, else JSON)."""
    tags: dict[str, str] | None = None


@struct
@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # inserted | upgraded | requeued | duplicate | superseded | rejected
    id: int | None
    priority: int = 128
    replaced_id: int | None = None
    """For ``superseded``: the task replaced (``id`` itself when it was replaced in place)."""


@struct
@dataclass(frozen=True, slots=True)
class TaskResult:
    """What an executor run ended with, reported by a host and applied by the Store."""

    id: int
    outcome: str  # ok | error | cancelled
    error: str | None = None
    retryable: bool = False
    phase: str = "execute"
    read_bytes: int = 0
    write_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    finished_at_ms: int = 0
    run_id: int = 0
    """The Dispatcher's id of this run (a task preempted and resumed has several)."""
    retry_after_s: float | None = None
    """For a retryable error: the delay the executor asked for (wins over the policy's)."""
    result: bytes | None = None
    """For ok: the executor's return value, encoded (bytes as is, else JSON)."""


@struct
@dataclass(frozen=True, slots=True)
class Transition:
    """A state change the Store committed, for the Dispatcher to publish as an event.

    ``result``: completed | retry | failed | dead_letter | expired | requeued | waiting |
    cancelled | superseded | finalize | unblocked | dependency_failed | recurring |
    schedule_cancelled | ignored. A ``recurring`` transition follows the ``completed`` one of a
    recurring task's run (same id).
    """

    id: int
    result: str
    task_type: str = ""
    key: str = ""
    label: str = ""
    priority: int = 128
    error: str | None = None
    children_count: int = 0
    was_running: bool = False
    group_key: str | None = None
    duration_ms: int | None = None
    """For completed runs: how long the run took (for the duration histogram)."""
    retry_after_s: float | None = None
    """For ``retry``: the delay before the next attempt (None: at once)."""
    retry_count: int = 0
    """For ``dead_letter``: the retries made."""
    age_s: float | None = None
    """For ``expired``: how long the task had existed (since it was created)."""
    tags: dict[str, str] | None = None
    """The task's tags, for its event."""
    new_task_id: int | None = None
    """For ``superseded``: the task that replaced it (its own id when replaced in place)."""
    failed_dependency: int | None = None
    """For ``dependency_failed``: the dependency whose end failed this task."""
    execution_count: int = 0
    """For ``recurring``: the runs of the schedule completed so far."""
    next_run_ms: int | None = None
    """For ``recurring``: when the next instance is due (epoch ms); None when none follows
    (the last run, or the schedule is paused)."""


@struct
@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A recurring schedule (a row of the ``recurring`` table), with its next instance's due
    time."""

    id: int
    """The id of the schedule's first task; the controls take it or a later instance's."""
    task_type: str
    key: str
    label: str
    interval_s: float | None
    cron: str | None
    next_run_ms: int | None
    """When the instance waiting to start is due; None while it runs, or none waits."""
    execution_count: int
    max_executions: int | None
    paused: bool
