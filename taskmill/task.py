"""Submissions: the dedup key, canonical JSON payloads and ``TaskSubmission``.

Everything here is pure (no bus, no I/O): a submission is turned into the wire struct
``bus.kinds.Submission`` by ``TaskSubmission.to_wire`` at submit time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from bus.errors import PayloadTooLarge, SerializationError
from bus.kinds import Submission
from bus.limits import (
    MAX_DEPENDENCIES,
    MAX_GROUP_CHARS,
    MAX_KEY_CHARS,
    MAX_LABEL_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_TASK_TYPE_CHARS,
    check_text,
    tag_problem,
)
from taskmill.payload import decode_payload
from taskmill.priority import Priority
from taskmill.records import EPOCH, ms_to_datetime
from taskmill.retry import RetryPolicy, seconds
from taskmill.schedules import CronSchedule, RecurringSchedule

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "DependencyFailure",
    "DuplicateStrategy",
    "TaskSubmission",
    "canonical_json",
    "decode_payload",
    "generate_dedup_key",
]


def generate_dedup_key(task_type: str, data: bytes | None) -> str:
    """The 64-hex dedup key: SHA-256 of ``task_type`` (UTF-8), ``b":"`` and ``data``.

    Nothing follows the colon when ``data`` is None, so every key-less, payload-less submission
    of one type has the same key.
    """
    digest = hashlib.sha256(task_type.encode("utf-8") + b":")
    if data is not None:
        digest.update(data)
    return digest.hexdigest()


def _json_default(obj: object) -> Any:
    # Called by json for values it cannot encode natively. A dataclass instance becomes its
    # field dict (shallow: nested dataclasses come back here in turn); anything else is refused.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def canonical_json(obj: object, what: str = "payload") -> bytes:
    """Encode ``obj`` as canonical JSON bytes: sorted keys, no spaces, UTF-8, no NaN.

    Dataclass instances (nested ones too) are encoded as the dict of their fields, so equal
    content always gives equal bytes and therefore the same dedup key. Raises
    ``SerializationError`` for anything JSON cannot encode: sets, bytes, arbitrary objects,
    NaN and infinities, non-str keys that cannot be sorted, circular references.
    """
    try:
        text = json.dumps(
            obj,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"cannot encode {what} as JSON: {exc}") from exc
    return text.encode("utf-8")


def _instant_ms(when: datetime | float) -> int:
    """An instant as epoch ms: an aware datetime (naive = UTC) or epoch seconds."""
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            when = when.replace(tzinfo=UTC)
        return (when - EPOCH) // timedelta(milliseconds=1)
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise TypeError(f"run_at must be a datetime or epoch seconds, got {when!r}")
    if not math.isfinite(when):
        raise ValueError(f"run_at must be a finite instant, got {when}")
    return math.floor(when * 1000)


def _non_negative(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


_UNSET: Any = object()


class DuplicateStrategy(StrEnum):
    """What a submission does when an active task already has its key.

    ``SKIP`` (the default): the v1 outcomes (upgraded, requeued or duplicate). ``SUPERSEDE``:
    the new submission replaces the task (outcome ``superseded``; history ``superseded``).
    ``REJECT``: nothing changes (outcome ``rejected``). docs/semantics.md gives the rules.
    """

    SKIP = "skip"
    SUPERSEDE = "supersede"
    REJECT = "reject"


class TtlFrom(StrEnum):
    """Where a task's TTL is counted from."""

    SUBMISSION = "submission"
    FIRST_ATTEMPT = "first_attempt"


class DependencyFailure(StrEnum):
    """What becomes of a task when one of its dependencies ends without completing (fails,
    is dead-lettered, cancelled or expires, or itself fails for a dependency)."""

    CANCEL = "cancel"
    """The task goes to history as ``dependency_failed``, and so do the tasks waiting for it."""
    FAIL = "fail"
    """As ``CANCEL`` (kept apart so a submission can say which it means)."""
    IGNORE = "ignore"
    """The dependency no longer counts: the task starts once the others have completed."""


class TaskSubmission:
    """A task to submit, built fluently or with keyword arguments.

    ``TaskSubmission("upload-part").key("etag").priority(Priority.HIGH)`` and
    ``TaskSubmission("upload-part", key="etag", priority=Priority.HIGH)`` are equal. Every
    builder method returns the submission itself. Because the builder methods own the short
    names, the values are read back through ``explicit_key``, ``display_label``,
    ``priority_level``, ``payload_bytes``, ``group_key``, ``is_fail_fast``, the four
    ``expected_*_bytes`` attributes and ``dedup_key``.

    Validation happens as values are set (``ValueError`` for a priority outside 0..=255, a
    negative byte count, text that is too long or not valid UTF-8 (``bus.limits``: task type
    and group 256 characters, key and label 1,024), ``SerializationError`` from
    ``payload_json``); the 1 MiB payload cap is checked by ``to_wire`` at submit time
    (``PayloadTooLarge``).
    """

    def __init__(
        self,
        task_type: str,
        *,
        key: str | None = None,
        label: str | None = None,
        priority: int | None = None,
        payload: bytes | None = None,
        payload_json: Any = _UNSET,
        expected_read_bytes: int = 0,
        expected_write_bytes: int = 0,
        expected_net_rx_bytes: int = 0,
        expected_net_tx_bytes: int = 0,
        group: str | None = None,
        fail_fast: bool = True,
        parent_id: int | None = None,
        run_after: float | timedelta | None = None,
        run_at: datetime | float | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        ttl: float | timedelta | None = None,
        ttl_from: TtlFrom = TtlFrom.SUBMISSION,
        on_duplicate: DuplicateStrategy | str = DuplicateStrategy.SKIP,
        tags: dict[str, str] | None = None,
        recurring: RecurringSchedule | None = None,
        cron: CronSchedule | None = None,
    ) -> None:
        if not isinstance(task_type, str) or not task_type:
            raise ValueError(f"task_type must be a non-empty str, got {task_type!r}")
        check_text("task_type", task_type, MAX_TASK_TYPE_CHARS)
        if payload is not None and payload_json is not _UNSET:
            raise ValueError("give either payload or payload_json, not both")
        if run_after is not None and run_at is not None:
            raise ValueError("give either run_after or run_at, not both")
        if recurring is not None and cron is not None:
            raise ValueError("give either recurring or cron, not both")
        self.task_type: str = task_type
        """The task type: selects the executor and prefixes the dedup key."""
        self._key: str | None = None
        self._label: str | None = None
        self._priority: Priority = Priority.NORMAL
        self._priority_given = False
        """Whether the priority was given (``priority=`` or ``.priority()``): a child spawned
        without one takes its parent's aged priority when aging raised it above its own."""
        self._payload: bytes | None = None
        self._group: str | None = None
        self._fail_fast = True
        self._run_after: float | None = None
        self._run_at_ms: int | None = None
        self._retry: RetryPolicy | None = None
        self._max_retries: int | None = None
        self._timeout: float | None = None
        self._ttl: float | None = None
        self._ttl_from = TtlFrom.SUBMISSION
        self._on_duplicate = DuplicateStrategy.SKIP.value
        """The strategy's value: what ``to_wire`` sends, read without an enum lookup."""
        self._tags: dict[str, str] | None = None
        self._depends_on: list[int | TaskSubmission] = []
        self._on_dependency_failure = DependencyFailure.CANCEL
        self._schedule: RecurringSchedule | CronSchedule | None = None
        self.expected_read_bytes = 0
        """Disk bytes this task expects to read (used by the IO budget)."""
        self.expected_write_bytes = 0
        """Disk bytes this task expects to write."""
        self.expected_net_rx_bytes = 0
        """Network bytes this task expects to receive."""
        self.expected_net_tx_bytes = 0
        """Network bytes this task expects to send."""
        self.parent_id: int | None = parent_id
        """The parent task's id; set by ``TaskContext.spawn_child``, not by users."""
        if key is not None:
            self.key(key)
        if label is not None:
            self.label(label)
        if priority is not None:
            self.priority(priority)
        if payload is not None:
            self.payload(payload)
        if payload_json is not _UNSET:
            self.payload_json(payload_json)
        self.expected_io(expected_read_bytes, expected_write_bytes)
        self.expected_net_io(expected_net_rx_bytes, expected_net_tx_bytes)
        self.group(group)
        self.fail_fast(fail_fast)
        if run_after is not None:
            self.run_after(run_after)
        if run_at is not None:
            self.run_at(run_at)
        if retry is not None:
            self.retry(retry)
        if max_retries is not None:
            self.max_retries(max_retries)
        if timeout is not None:
            self.timeout(timeout)
        if ttl is not None:
            self.ttl(ttl, from_=ttl_from)
        if on_duplicate != DuplicateStrategy.SKIP.value:
            self.on_duplicate(on_duplicate)
        if tags is not None:
            self.tags(tags)
        for schedule in (recurring, cron):
            if schedule is not None:
                self._set_schedule(schedule)

    # -- builder -------------------------------------------------------------------------------

    def key(self, key: str) -> TaskSubmission:
        """Set an explicit dedup key; its UTF-8 bytes are hashed instead of the payload."""
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r}")
        self._key = check_text("key", key, MAX_KEY_CHARS)
        return self

    def label(self, label: str) -> TaskSubmission:
        """Set the human-readable label (default: the explicit key, else the task type)."""
        if not isinstance(label, str):
            raise TypeError(f"label must be a str, got {label!r}")
        self._label = check_text("label", label, MAX_LABEL_CHARS)
        return self

    def priority(self, priority: int) -> TaskSubmission:
        """Set the priority (0..=255, lower is more urgent); ``ValueError`` outside the range.
        Without one a task is submitted at ``Priority.NORMAL``."""
        self._priority = Priority(priority)
        self._priority_given = True
        return self

    def _default_priority(self, priority: int) -> TaskSubmission:
        """The priority it has when none is given (a typed task's type's priority)."""
        self._priority = Priority(priority)
        self._priority_given = False
        return self

    def payload_json(self, value: Any) -> TaskSubmission:
        """Set the payload to the canonical JSON encoding of ``value`` (dataclasses included).

        Raises ``SerializationError`` when ``value`` cannot be encoded.
        """
        self._payload = canonical_json(value)
        return self

    def payload(self, data: bytes | bytearray | memoryview | None) -> TaskSubmission:
        """Set the payload to raw bytes (``None`` removes it)."""
        if data is not None and not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, got {type(data).__name__}")
        self._payload = None if data is None else bytes(data)
        return self

    def expected_io(self, read_bytes: int, write_bytes: int) -> TaskSubmission:
        """Declare the disk bytes this task expects to read and write."""
        self.expected_read_bytes = _non_negative("expected read bytes", read_bytes)
        self.expected_write_bytes = _non_negative("expected write bytes", write_bytes)
        return self

    def expected_net_io(self, rx_bytes: int, tx_bytes: int) -> TaskSubmission:
        """Declare the network bytes this task expects to receive and send."""
        self.expected_net_rx_bytes = _non_negative("expected net rx bytes", rx_bytes)
        self.expected_net_tx_bytes = _non_negative("expected net tx bytes", tx_bytes)
        return self

    def group(self, group: str | None) -> TaskSubmission:
        """Put the task in a concurrency group (``None``: no group)."""
        if group is not None and not isinstance(group, str):
            raise TypeError(f"group must be a str, got {group!r}")
        self._group = group if group is None else check_text("group", group, MAX_GROUP_CHARS)
        return self

    def fail_fast(self, fail_fast: bool) -> TaskSubmission:
        """On a parent: cancel the siblings and fail at once when a child fails (default True)."""
        self._fail_fast = bool(fail_fast)
        return self

    def run_after(self, delay: float | timedelta) -> TaskSubmission:
        """Not dispatched before ``delay`` seconds after it is submitted (replaces a
        ``run_at``); 0 runs it at once."""
        self._run_after = seconds("run_after", delay)
        self._run_at_ms = None
        return self

    def run_at(self, when: datetime | float) -> TaskSubmission:
        """Not dispatched before ``when``: an aware ``datetime`` (naive means UTC) or epoch
        seconds (replaces a ``run_after``); a past instant runs it at once."""
        self._run_at_ms = _instant_ms(when)
        self._run_after = None
        return self

    def retry(self, policy: RetryPolicy) -> TaskSubmission:
        """This task's retry policy (default: its type's, else the scheduler's)."""
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry takes a RetryPolicy, got {policy!r}")
        self._retry = policy
        return self

    def max_retries(self, n: int) -> TaskSubmission:
        """How many retries this task gets, whatever its retry policy says."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"max_retries must be an int, got {n!r}")
        self._max_retries = _non_negative("max_retries", n)
        return self

    def timeout(self, limit: float | timedelta) -> TaskSubmission:
        """The longest one run may take (> 0 seconds): past it the run is cancelled and counts
        as a retryable failure. Default: its type's ``task_timeout``, else none."""
        self._timeout = seconds("timeout", limit, positive=True)
        return self

    def ttl(self, ttl: float | timedelta, from_: TtlFrom = TtlFrom.SUBMISSION) -> TaskSubmission:
        """How long the task may wait to start (> 0 seconds), counted from its submission or
        from its first attempt; past it, a task that is not running expires (history
        ``expired``, event ``Expired``) and never runs. Default: its type's ``task_ttl``, else
        the builder's ``default_ttl``, else none; a child without one inherits what is left of
        its parent's."""
        self._ttl = seconds("ttl", ttl, positive=True)
        self._ttl_from = TtlFrom(from_)
        return self

    def on_duplicate(self, strategy: DuplicateStrategy | str) -> TaskSubmission:
        """What to do when an active task already has this key: ``DuplicateStrategy.SKIP``
        (default), ``SUPERSEDE`` (replace it) or ``REJECT``; ``ValueError`` for anything else."""
        try:
            self._on_duplicate = DuplicateStrategy(strategy).value
        except ValueError:
            choices = ", ".join(s.value for s in DuplicateStrategy)
            raise ValueError(
                f"unknown duplicate strategy {strategy!r}; choose one of {choices}"
            ) from None
        return self

    def tag(self, key: str, value: str) -> TaskSubmission:
        """Add the tag ``key`` = ``value`` (replacing a tag of the same key). ``ValueError``,
        with the tags unchanged, past 32 tags or for a key over 64 bytes or a value over 256
        bytes of UTF-8."""
        return self.tags({key: value})

    def tags(self, tags: dict[str, str]) -> TaskSubmission:
        """Add several tags at once (all or none: see ``tag``)."""
        if not isinstance(tags, dict):
            raise TypeError(f"tags must be a dict of str to str, got {tags!r}")
        merged = {**(self._tags or {}), **tags}
        problem = tag_problem(merged)
        if problem is not None:
            raise ValueError(problem)
        self._tags = merged or None
        return self

    def depends_on(self, dependency: int | TaskSubmission) -> TaskSubmission:
        """Wait for ``dependency`` to complete before this task may start (it is ``blocked``
        until then): a task id, or another ``TaskSubmission`` of the same ``submit_batch``
        (earlier or later in it; it stands for the task that submission inserts, or the active
        task holding its key). One already completed counts as done; one that ended otherwise
        refuses the submission (``DependencyFailedError``) unless the policy is ``IGNORE``."""
        if isinstance(dependency, TaskSubmission):
            self._depends_on.append(dependency)
        elif isinstance(dependency, bool) or not isinstance(dependency, int):
            raise TypeError(f"a dependency is a task id or a TaskSubmission, got {dependency!r}")
        elif dependency < 1:
            raise ValueError(f"a task id is a positive integer, got {dependency}")
        else:
            self._depends_on.append(dependency)
        if len(self._depends_on) > MAX_DEPENDENCIES:
            count = len(self._depends_on)
            del self._depends_on[MAX_DEPENDENCIES:]
            raise ValueError(f"{count} dependencies; a task may have at most {MAX_DEPENDENCIES}")
        return self

    def depends_on_all(self, dependencies: Iterable[int | TaskSubmission]) -> TaskSubmission:
        """``depends_on`` each of ``dependencies``; all or none of them are added."""
        items = list(dependencies)
        if len(self._depends_on) + len(items) > MAX_DEPENDENCIES:
            raise ValueError(
                f"{len(self._depends_on) + len(items)} dependencies; a task may have at most "
                f"{MAX_DEPENDENCIES}"
            )
        before = list(self._depends_on)
        try:
            for dependency in items:
                self.depends_on(dependency)
        except (TypeError, ValueError):
            self._depends_on = before
            raise
        return self

    def on_dependency_failure(self, policy: DependencyFailure) -> TaskSubmission:
        """What a dependency ending without completing does to this task (default
        ``DependencyFailure.CANCEL``)."""
        self._on_dependency_failure = DependencyFailure(policy)
        return self

    def recurring(
        self,
        every: float | timedelta,
        initial_delay: float | timedelta | None = None,
        max_executions: int | None = None,
    ) -> TaskSubmission:
        """Run again ``every`` seconds after each successful completion (a new task of the same
        key), the first time after ``initial_delay`` (default: at once), at most
        ``max_executions`` times (default: no end). Replaces a ``cron``."""
        return self._set_schedule(RecurringSchedule(every, initial_delay, max_executions))

    def cron(self, expr: str, max_executions: int | None = None) -> TaskSubmission:
        """Run at each minute the cron expression ``expr`` matches, in UTC: first at the next
        matching minute after submission (unless ``run_after``/``run_at`` says otherwise),
        then at the next one after each successful completion. ``ValueError`` for an
        expression that is not five valid fields. Replaces a ``recurring``."""
        return self._set_schedule(CronSchedule(expr, max_executions))

    def _set_schedule(self, schedule: RecurringSchedule | CronSchedule) -> TaskSubmission:
        if not isinstance(schedule, RecurringSchedule | CronSchedule):
            raise TypeError(f"expected a RecurringSchedule or a CronSchedule, got {schedule!r}")
        if self.parent_id is not None:
            raise ValueError("a recurring task cannot have a parent")
        self._schedule = schedule
        return self

    # -- reading back --------------------------------------------------------------------------

    @property
    def dependencies(self) -> list[int | TaskSubmission]:
        """The dependencies given with ``depends_on``, in order."""
        return list(self._depends_on)

    @property
    def dependency_failure(self) -> DependencyFailure:
        """The policy given with ``on_dependency_failure`` (default ``CANCEL``)."""
        return self._on_dependency_failure

    @property
    def explicit_key(self) -> str | None:
        """The key given with ``.key()``, or None."""
        return self._key

    @property
    def display_label(self) -> str:
        """The effective label: the one set, else the explicit key, else the task type."""
        if self._label is not None:
            return self._label
        return self._key if self._key is not None else self.task_type

    @property
    def priority_level(self) -> Priority:
        """The submission's priority."""
        return self._priority

    @property
    def payload_bytes(self) -> bytes | None:
        """The payload bytes, or None."""
        return self._payload

    @property
    def group_key(self) -> str | None:
        """The concurrency group, or None."""
        return self._group

    @property
    def is_fail_fast(self) -> bool:
        """The fail-fast flag (default True)."""
        return self._fail_fast

    @property
    def run_after_s(self) -> float | None:
        """The delay given with ``run_after``, or None."""
        return self._run_after

    @property
    def run_at_time(self) -> datetime | None:
        """The instant given with ``run_at`` (UTC), or None."""
        return None if self._run_at_ms is None else ms_to_datetime(self._run_at_ms)

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """The policy given with ``retry``, or None."""
        return self._retry

    @property
    def retry_limit(self) -> int | None:
        """The count given with ``max_retries``, or None."""
        return self._max_retries

    @property
    def duplicate_strategy(self) -> DuplicateStrategy:
        """The strategy given with ``on_duplicate`` (default ``SKIP``)."""
        return DuplicateStrategy(self._on_duplicate)

    @property
    def tag_map(self) -> dict[str, str]:
        """The tags given with ``tag``/``tags`` (a copy)."""
        return dict(self._tags or {})

    @property
    def timeout_s(self) -> float | None:
        """The time limit given with ``timeout``, or None."""
        return self._timeout

    @property
    def schedule(self) -> RecurringSchedule | CronSchedule | None:
        """The schedule given with ``recurring`` or ``cron``, or None."""
        return self._schedule

    def due_at_ms(self, now_ms: int | None = None) -> int | None:
        """The instant (epoch ms) this task becomes due if submitted at ``now_ms`` (default:
        this machine's clock), or None for at once (a cron task: at its first matching minute,
        which the Store works out)."""
        if self._run_at_ms is not None:
            return self._run_at_ms
        delay = self._run_after
        if delay is None and isinstance(self._schedule, RecurringSchedule):
            delay = self._schedule.initial_delay
        if delay is None:
            return None
        if now_ms is None:
            now_ms = time.time_ns() // 1_000_000
        return now_ms + math.ceil(delay * 1000)

    @property
    def dedup_data(self) -> bytes | None:
        """What the dedup key hashes: the explicit key's UTF-8 bytes, else the payload."""
        if self._key is not None:
            return self._key.encode("utf-8")
        return self._payload

    @property
    def dedup_key(self) -> str:
        """The 64-hex dedup key (``generate_dedup_key(task_type, dedup_data)``)."""
        return generate_dedup_key(self.task_type, self.dedup_data)

    def copy(self) -> TaskSubmission:
        """An independent copy (handy to derive several submissions from a template)."""
        other = TaskSubmission.__new__(TaskSubmission)
        other.__dict__.update(self.__dict__)
        other._depends_on = list(self._depends_on)
        return other

    def to_wire(
        self, now_ms: int | None = None, positions: Mapping[int, int] | None = None
    ) -> Submission:
        """The wire struct the Store receives; ``PayloadTooLarge`` over 1 MiB. A ``run_after``
        delay counts from ``now_ms`` (default: now, on this machine's clock). ``positions``:
        ``id(submission)`` → its position, for the submissions sent in the same batch, which
        this one's dependencies may name (``wire_batch``)."""
        if self._payload is not None and len(self._payload) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"payload of {len(self._payload)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
            )
        if self._schedule is not None and self.parent_id is not None:
            raise ValueError("a recurring task cannot have a parent")
        wire = self._plain_wire(now_ms)
        return self._with_dependencies(wire, positions or {}) if self._depends_on else wire

    def _plain_wire(self, now_ms: int | None) -> Submission:
        return Submission(  # positional, in field order: cheaper than keywords
            self.task_type,
            self.dedup_key,
            self.display_label,
            int(self._priority),
            self._payload,
            self.expected_read_bytes,
            self.expected_write_bytes,
            self.expected_net_rx_bytes,
            self.expected_net_tx_bytes,
            self._group,
            self._fail_fast,
            self.parent_id,
            self.due_at_ms(now_ms),
            None if self._retry is None else self._retry.to_wire(),
            self._max_retries,
            self._timeout,
            self._ttl,
            self._ttl_from.value,
            self._tags,  # never changed in place: ``tags`` makes a new dict
            self._on_duplicate,
            recurring=None if self._schedule is None else self._schedule.to_wire(),
        )

    def _with_dependencies(self, wire: Submission, positions: Mapping[int, int]) -> Submission:
        """``wire`` with the dependencies: ids as they are, submissions of the batch by their
        position in it."""
        ids: list[int] = []
        members: list[int] = []
        for dependency in self._depends_on:
            if isinstance(dependency, int):
                ids.append(dependency)
                continue
            position = positions.get(id(dependency))
            if position is None:
                raise ValueError(
                    f"{self!r} depends on {dependency!r}, which is not in the same batch: submit "
                    "it first and depend on its id, or submit both in one submit_batch"
                )
            members.append(position)
        return dataclasses.replace(
            wire,
            depends_on=ids or None,
            depends_on_index=members or None,
            on_dependency_failure=self._on_dependency_failure.value,
        )

    def _state(self) -> tuple[object, ...]:
        return (
            self.task_type, self._key, self._label, self._priority, self._payload,
            self.expected_read_bytes, self.expected_write_bytes, self.expected_net_rx_bytes,
            self.expected_net_tx_bytes, self._group, self._fail_fast, self.parent_id,
            self._run_after, self._run_at_ms, self._retry, self._max_retries, self._timeout,
            self._ttl, self._ttl_from, self._on_duplicate, self._tags, self._on_dependency_failure,
            tuple(d if isinstance(d, int) else id(d) for d in self._depends_on), self._schedule,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskSubmission):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable builder

    def __repr__(self) -> str:
        parts = [repr(self.task_type)]
        if self._key is not None:
            parts.append(f"key={self._key!r}")
        if self._label is not None:
            parts.append(f"label={self._label!r}")
        parts.append(f"priority={self._priority!r}")
        if self._payload is not None:
            parts.append(f"payload=<{len(self._payload)} bytes>")
        if self._group is not None:
            parts.append(f"group={self._group!r}")
        if self._run_after is not None:
            parts.append(f"run_after={self._run_after:g}")
        if self._run_at_ms is not None:
            parts.append(f"run_at={self.run_at_time!r}")
        if self._retry is not None:
            parts.append(f"retry={self._retry!r}")
        if self._max_retries is not None:
            parts.append(f"max_retries={self._max_retries}")
        if self._timeout is not None:
            parts.append(f"timeout={self._timeout:g}")
        if self._ttl is not None:
            parts.append(f"ttl={self._ttl:g}, ttl_from={self._ttl_from.value!r}")
        if self._on_duplicate != DuplicateStrategy.SKIP.value:
            parts.append(f"on_duplicate={self._on_duplicate!r}")
        if self._tags:
            parts.append(f"tags={self._tags!r}")
        if self._depends_on:
            named = [d if isinstance(d, int) else d.display_label for d in self._depends_on]
            parts.append(f"depends_on={named!r}")
            parts.append(f"on_dependency_failure={self._on_dependency_failure.value!r}")
        if isinstance(self._schedule, RecurringSchedule):
            parts.append(f"recurring={self._schedule!r}")
        elif self._schedule is not None:
            parts.append(f"cron={self._schedule!r}")
        return f"TaskSubmission({', '.join(parts)})"


def wire_batch(
    submissions: Sequence[TaskSubmission], now_ms: int | None = None
) -> list[Submission]:
    """The wire structs of one batch: a submission's dependencies on others of the batch are
    sent as their positions (``Submission.depends_on_index``)."""
    positions = None
    if any(s._depends_on for s in submissions):
        positions = {id(s): i for i, s in enumerate(submissions)}
    return [s.to_wire(now_ms, positions) for s in submissions]
