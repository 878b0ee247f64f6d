"""Submitting: validation, the four outcomes, and idempotent retries by ``request_id``.

Outcomes (docs/semantics.md "Submit outcomes"), applied in order within a batch:

1. no active row has the key → insert → ``inserted``;
2. the row is pending or paused and the new priority is strictly more urgent → raised →
   ``upgraded``;
3. the row is running or paused → marked for requeue when none is marked yet, or when the new
   priority is strictly more urgent than the marked one → ``requeued``;
4. else ``duplicate`` (id None).

These are the rules of ``on_duplicate`` ``skip`` (the default). A submission that says
``reject`` gets ``rejected`` (id None, nothing changed) where an active row has its key, and one
that says ``supersede`` replaces that row (``actors.store.supersede``).

A batch with one invalid submission is rejected whole before anything is written. New keys are
inserted first, in order and many rows per statement; then each submission whose key was taken
meets its row, in order. Submissions of different keys do not touch each other's rows, so this
gives the outcomes of applying them one at a time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import msgpack

from actors.store import dependencies, lifecycle
from actors.store.core import Core
from actors.store.queries import by_key
from actors.store.schema import index_tags, key8, stored_retry_spec, stored_tags
from actors.store.supersede import supersede
from bus.cron import check_cron
from bus.errors import InvalidRequest, PayloadTooLarge
from bus.kinds import Outcome, RecurSpec, RetrySpec, Submission, Transition
from bus.limits import (
    DUPLICATE_STRATEGIES,
    MAX_GROUP_CHARS,
    MAX_LABEL_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_TASK_TYPE_CHARS,
    tag_problem,
)


def validate(sub: Submission, index: int, batch_size: int = 1) -> None:
    """Raise ``InvalidRequest`` or ``PayloadTooLarge`` for a submission the Store cannot take.

    One set of checks for every submission: a second, quicker check of the usual case saved
    too little of a task's cost end to end to be worth keeping two lists of rules in step."""
    where = f"submission {index}"
    if not isinstance(sub, Submission):
        raise InvalidRequest(f"{where}: not a Submission")
    if not isinstance(sub.task_type, str) or not sub.task_type:
        raise InvalidRequest(f"{where}: task_type must be a non-empty string")
    if len(sub.task_type) > MAX_TASK_TYPE_CHARS:
        raise InvalidRequest(f"{where}: task_type longer than {MAX_TASK_TYPE_CHARS} characters")
    if not isinstance(sub.key, str) or not _is_key(sub.key):
        raise InvalidRequest(f"{where}: key must be 64 lowercase hex characters (a SHA-256)")
    if not isinstance(sub.label, str):
        raise InvalidRequest(f"{where}: label must be a string")
    if len(sub.label) > MAX_LABEL_CHARS:
        raise InvalidRequest(f"{where}: label longer than {MAX_LABEL_CHARS} characters")
    if not _is_int(sub.priority) or not 0 <= sub.priority <= 255:
        raise InvalidRequest(
            f"{where}: priority must be an integer in 0..255, got {sub.priority!r}"
        )
    if sub.payload is not None:
        if not isinstance(sub.payload, bytes):
            raise InvalidRequest(f"{where}: payload must be bytes")
        if len(sub.payload) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"{where}: payload of {len(sub.payload)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes"
            )
    for name in (
        "expected_read_bytes",
        "expected_write_bytes",
        "expected_net_rx_bytes",
        "expected_net_tx_bytes",
    ):
        value = getattr(sub, name)
        if not _is_int(value) or not 0 <= value < 2**63:
            raise InvalidRequest(f"{where}: {name} must be a non-negative integer")
    if sub.group_key is not None and not isinstance(sub.group_key, str):
        raise InvalidRequest(f"{where}: group_key must be a string or None")
    if sub.group_key is not None and len(sub.group_key) > MAX_GROUP_CHARS:
        raise InvalidRequest(f"{where}: group_key longer than {MAX_GROUP_CHARS} characters")
    if not isinstance(sub.fail_fast, bool):
        raise InvalidRequest(f"{where}: fail_fast must be a bool")
    if sub.parent_id is not None and (not _is_int(sub.parent_id) or sub.parent_id < 1):
        raise InvalidRequest(f"{where}: parent_id must be a positive integer")
    if sub.due_at_ms is not None and (not _is_int(sub.due_at_ms) or not 0 <= sub.due_at_ms < 2**63):
        raise InvalidRequest(f"{where}: due_at_ms must be an epoch time in milliseconds")
    if sub.max_retries is not None and (not _is_int(sub.max_retries) or sub.max_retries < 0):
        raise InvalidRequest(f"{where}: max_retries must be a non-negative integer")
    if sub.timeout_s is not None and not _is_seconds(sub.timeout_s, positive=True):
        raise InvalidRequest(f"{where}: timeout_s must be a positive number of seconds")
    if sub.retry is not None:
        check_retry(sub.retry, where)
    if sub.ttl_s is not None and not _is_seconds(sub.ttl_s, positive=True):
        raise InvalidRequest(f"{where}: ttl_s must be a positive number of seconds")
    if sub.ttl_from not in TTL_FROM:
        raise InvalidRequest(f"{where}: ttl_from must be one of {TTL_FROM}")
    if sub.tags is not None and (problem := tag_problem(sub.tags)) is not None:
        raise InvalidRequest(f"{where}: {problem}")
    if sub.on_duplicate not in DUPLICATE_STRATEGIES:
        raise InvalidRequest(f"{where}: on_duplicate must be one of {DUPLICATE_STRATEGIES}")
    dependencies.check(sub, index, batch_size)
    if sub.recurring is not None:
        _check_recurring(sub.recurring, sub.parent_id, where)


def _check_recurring(spec: RecurSpec, parent_id: int | None, where: str) -> None:
    """Refuse a recurring schedule the Store could not keep."""
    if not isinstance(spec, RecurSpec):
        raise InvalidRequest(f"{where}: recurring must be a RecurSpec")
    if parent_id is not None:
        raise InvalidRequest(f"{where}: a recurring task cannot have a parent")
    if (spec.interval_s is None) == (spec.cron is None):
        raise InvalidRequest(f"{where}: a recurring schedule has an interval or a cron, not both")
    if spec.interval_s is not None and not _is_seconds(spec.interval_s, positive=True):
        raise InvalidRequest(f"{where}: a recurring interval must be a positive number of seconds")
    if spec.cron is not None:
        try:
            check_cron(spec.cron)
        except ValueError as exc:
            raise InvalidRequest(f"{where}: {exc}") from None
    if spec.max_executions is not None and (
        not _is_int(spec.max_executions) or spec.max_executions < 1
    ):
        raise InvalidRequest(f"{where}: max_executions must be a positive integer")


TTL_FROM = ("submission", "first_attempt")


RETRY_STRATEGIES = ("none", "constant", "linear", "exponential", "exponential_jitter")


def check_retry(spec: RetrySpec, where: str) -> None:
    """Refuse a retry policy the Store could not apply."""
    if not isinstance(spec, RetrySpec) or spec.strategy not in RETRY_STRATEGIES:
        raise InvalidRequest(f"{where}: a retry strategy is one of {RETRY_STRATEGIES}")
    if not (_is_seconds(spec.initial_s) and _is_seconds(spec.increment_s)):
        raise InvalidRequest(f"{where}: retry delays must be non-negative numbers of seconds")
    if spec.max_s is not None and not _is_seconds(spec.max_s):
        raise InvalidRequest(f"{where}: a retry's max delay must be a non-negative number")
    if not _is_seconds(spec.multiplier) or spec.multiplier < 1:
        raise InvalidRequest(f"{where}: a retry multiplier must be a number >= 1")
    if spec.max_retries is not None and (not _is_int(spec.max_retries) or spec.max_retries < 0):
        raise InvalidRequest(f"{where}: max_retries must be a non-negative integer")


def _is_seconds(value: Any, positive: bool = False) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return math.isfinite(value) and (value > 0 if positive else value >= 0)


def _is_key(key: str) -> bool:
    """64 lowercase hex characters (a SHA-256). ``bytes.fromhex`` reads 64 characters as 32
    bytes only when each is a hex digit (it skips spaces, which would leave fewer bytes); with
    the test for capitals that is cheaper than a regular expression."""
    try:
        return len(key) == 64 and len(bytes.fromhex(key)) == 32 and key.lower() == key
    except ValueError:
        return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def submit(
    core: Core,
    subs: Sequence[Submission],
    request_id: str | None = None,
    out: list[Transition] | None = None,
) -> list[Outcome]:
    """Apply a batch of submissions; the caller provides the transaction. What they did to
    other tasks (superseded, cancelled with them) is appended to ``out``."""
    if request_id is not None:
        if not isinstance(request_id, str) or not 0 < len(request_id) <= 256:
            raise InvalidRequest("request_id must be a string of 1..256 characters")
        seen = core.value("SELECT outcomes FROM requests WHERE request_id = ?", (request_id,))
        if seen is not None:
            return [Outcome(*o) for o in msgpack.unpackb(seen)]
    for index, sub in enumerate(subs):
        validate(sub, index, len(subs))
    subs = _check_parents(core, subs)
    now = core.now()
    waiting = any(sub.depends_on or sub.depends_on_index for sub in subs)
    if waiting:  # every dependency checked before anything is written
        waits = dependencies.resolve(core, subs)
        firsts = _firsts(subs)
        # Only the first submission of a key may insert it: its own dependencies decide.
        blocked = {
            subs[i].key
            for i in dependencies.blocked_positions(subs, waits)
            if firsts[subs[i].key] == i
        }
        inserted = _insert_new(core, subs, now, blocked)
        _add_edges(core, subs, waits, inserted, firsts)
    else:
        inserted = _insert_new(core, subs, now)
    changes = out if out is not None else []
    outcomes = [
        Outcome("inserted", task_id, sub.priority)
        if (task_id := inserted.pop(sub.key, None)) is not None
        else _existing(core, sub, now, changes)
        for sub in subs
    ]
    if request_id is not None:
        packed = msgpack.packb([[o.kind, o.id, o.priority, o.replaced_id] for o in outcomes])
        core.run(
            "INSERT OR REPLACE INTO requests (request_id, outcomes, at_ms) VALUES (?, ?, ?)",
            (request_id, packed, now),
        )
    return outcomes


def _firsts(subs: Sequence[Submission]) -> dict[str, int]:
    """The position of the first submission of each key."""
    firsts: dict[str, int] = {}
    for index, sub in enumerate(subs):
        firsts.setdefault(sub.key, index)
    return firsts


def _add_edges(
    core: Core,
    subs: Sequence[Submission],
    waits: dict[int, list[int]],
    inserted: dict[str, int],
    firsts: dict[str, int],
) -> None:
    """The dependencies of the submissions that inserted a row (the first of each key)."""
    by_position = {index: inserted[key] for key, index in firsts.items() if key in inserted}

    def row_of(index: int) -> int:
        key = subs[index].key
        found = inserted.get(key)
        if found is None:
            row = by_key(core, "id", key)
            assert row is not None  # an active row holds the key of every submission applied
            found = int(row[0])
        return found

    dependencies.add_edges(core, subs, waits, row_of, by_position)


def _check_parents(core: Core, subs: Sequence[Submission]) -> Sequence[Submission]:
    """Refuse the batch (nothing written) when a child names a parent no active task is: the
    child would wait on, and finish into, nothing. The submissions, children given their
    parent's tags (a child's own win)."""
    parents = {sub.parent_id for sub in subs if sub.parent_id is not None}
    tagged: dict[int, dict[str, str]] = {}
    for parent_id in sorted(parents):  # once per parent, however many children
        found = core.one("SELECT tags FROM tasks WHERE id = ?", (parent_id,))
        if found is None:
            index = next(i for i, sub in enumerate(subs) if sub.parent_id == parent_id)
            raise InvalidRequest(
                f"submission {index}: parent task {parent_id} does not exist (no active task)"
            )
        if found[0] is not None:
            tagged[parent_id] = json.loads(found[0])
    if not tagged:
        return subs
    return [
        dataclasses.replace(sub, tags={**tagged[sub.parent_id], **(sub.tags or {})})
        if sub.parent_id in tagged
        else sub
        for sub in subs
    ]


def _existing(core: Core, sub: Submission, now: int, out: list[Transition]) -> Outcome:
    """The outcome of a submission whose key an active row holds (maybe one this batch
    inserted for an earlier submission of the same key)."""
    if sub.on_duplicate != "skip":
        task_id = by_key(core, "id", sub.key)
        if task_id is None or (task := lifecycle.load(core, task_id[0])) is None:
            raise AssertionError("the insert just met the row")
        if sub.on_duplicate == "reject":
            return Outcome("rejected", None, sub.priority)
        values = _values(sub, now, None)
        new_id = supersede(
            core,
            task,
            dict(zip(_COLUMN_NAMES, values, strict=True)),
            now,
            lambda: _insert_one(core, values),
            out,
        )
        if sub.parent_id is not None:
            note_parent(core, sub.parent_id)
        return Outcome("superseded", new_id, sub.priority, task_id[0])
    found = by_key(core, "id, status, priority, requeue, requeue_priority", sub.key)
    assert found is not None  # the insert just met it
    task_id, status, priority, requeue, requeue_priority = found
    if status in ("pending", "paused", "blocked") and sub.priority < priority:
        core.run("UPDATE tasks SET priority = ? WHERE id = ?", (sub.priority, task_id))
        return Outcome("upgraded", task_id, sub.priority)
    if status in ("running", "paused") and (not requeue or sub.priority < requeue_priority):
        core.run(
            "UPDATE tasks SET requeue = 1, requeue_priority = ? WHERE id = ?",
            (sub.priority, task_id),
        )
        return Outcome("requeued", task_id, sub.priority)
    return Outcome("duplicate", None, sub.priority)


_COLUMNS = (
    "task_type, key, key8, label, priority, status, payload, expected_read_bytes, "
    "expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes, created_at_ms, "
    "parent_id, fail_fast, group_key, due_at_ms, retry_policy, max_retries, timeout_s, ttl_s, "
    "ttl_from, expires_at_ms, on_dependency_failure, tags"
)
_COLUMN_NAMES = [name.strip() for name in _COLUMNS.split(",")]
_WIDTH = len(_COLUMN_NAMES)
"""Parameters a row takes."""
_ROW = "(" + ", ".join("?" * _WIDTH) + ")"
_CHUNKS = (64, 8, 1)
"""Rows per ``INSERT``: a statement of many rows costs less per row than one each, and a few
fixed sizes keep the statements prepared."""
_INSERTS = {
    n: f"INSERT INTO tasks ({_COLUMNS}) SELECT * FROM (VALUES {', '.join([_ROW] * n)}) AS offered "
    "WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE key8 = offered.column3 AND key = offered.column2)"
    for n in _CHUNKS[:-1]
}
_INSERTS[1] = (
    f"INSERT INTO tasks ({_COLUMNS}) SELECT "
    + ", ".join(f"?{i}" for i in range(1, _WIDTH + 1))
    + " WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE key8 = ?3 AND key = ?2)"
)
_NEWER = "SELECT id, key, parent_id FROM tasks WHERE id > +?"


def _insert_new(
    core: Core, subs: Sequence[Submission], now: int, blocked: set[str] | None = None
) -> dict[str, int]:
    """Insert a row for each submission whose key no active row holds; their ids by key.
    Those of the ``blocked`` keys go in ``blocked`` (they wait for dependencies).

    A statement inserts the rows whose key no row has: a new key, the common case, costs one
    probe of ``tasks_key8``. It reads the table before it inserts anything, so two rows of one
    key in one statement would both go in: of several submissions of one key only the first is
    offered, and the later ones meet its row.

    Which rows went in, and their ids, without ``RETURNING`` (a large share of the insert's
    cost per row): ``AUTOINCREMENT`` gives the rows a statement inserts consecutive ids above any
    the table ever had, in the order of the ``VALUES``, and a skipped row uses none up. So when
    a statement of ``n`` rows inserted ``n`` and its last id is ``last``, their ids are
    ``last - n + 1 .. last`` in order; when it inserted ``count < n``, they are the rows above
    ``last - count``.
    """
    if len(subs) > 1 and len({sub.key for sub in subs}) < len(subs):
        firsts: dict[str, Submission] = {}
        for sub in subs:
            firsts.setdefault(sub.key, sub)
        subs = list(firsts.values())
    inserted: dict[str, int] = {}
    parents: set[int] = set()
    start = 0
    for size in _CHUNKS:
        while len(subs) - start >= size:
            chunk = subs[start : start + size]
            start += size
            params = [v for sub in chunk for v in _values(sub, now, blocked)]
            count, last = core.insert(_INSERTS[size], params)
            if count == size:
                keys = [sub.key for sub in chunk]
                inserted.update(zip(keys, range(last - size + 1, last + 1), strict=True))
                parents.update(sub.parent_id for sub in chunk if sub.parent_id is not None)
            elif count:  # some keys were taken: their rows were skipped
                rows = core.all(_NEWER, (last - count,))
                inserted.update((key, task_id) for task_id, key, _ in rows)
                parents.update(parent_id for _, _, parent_id in rows if parent_id is not None)
    for parent_id in parents:  # once per parent, however many children the batch spawned
        note_parent(core, parent_id)
    for sub in subs:
        if sub.tags and (task_id := inserted.get(sub.key)) is not None:
            index_tags(core, task_id, stored_tags(sub.tags))
    return inserted


def _insert_one(core: Core, values: tuple[Any, ...]) -> int:
    """Insert one row whose key no active row holds; its id."""
    task_id = core.insert(_INSERTS[1], values)[1]
    index_tags(core, task_id, values[-1])
    return task_id


def note_parent(core: Core, parent_id: int) -> None:
    """Children of ``parent_id`` were inserted."""
    # The parent's current run now has children: its ok leads to waiting, then finalize.
    core.run("UPDATE tasks SET has_children = 1 WHERE id = ?", (parent_id,))
    # A child without a TTL of its own expires when its parent would.
    expires = core.value("SELECT expires_at_ms FROM tasks WHERE id = ?", (parent_id,))
    if expires is not None:
        core.run(
            "UPDATE tasks SET expires_at_ms = ? "
            "WHERE parent_id = ? AND ttl_s IS NULL AND expires_at_ms IS NULL",
            (expires, parent_id),
        )


def _values(sub: Submission, now: int, blocked: set[str] | None) -> tuple[Any, ...]:
    if blocked and sub.key in blocked:
        status = "blocked"
    else:
        status = "scheduled" if sub.due_at_ms is not None and sub.due_at_ms > now else "pending"
    return (
        sub.task_type,
        sub.key,
        key8(sub.key),
        sub.label,
        sub.priority,
        status,
        sub.payload,
        sub.expected_read_bytes,
        sub.expected_write_bytes,
        sub.expected_net_rx_bytes,
        sub.expected_net_tx_bytes,
        now,
        sub.parent_id,
        int(sub.fail_fast),
        sub.group_key,
        sub.due_at_ms,
        stored_retry_spec(sub.retry),
        sub.max_retries,
        sub.timeout_s,
        sub.ttl_s,
        sub.ttl_from,
        now + int(sub.ttl_s * 1000) if sub.ttl_s and sub.ttl_from == "submission" else None,
        sub.on_dependency_failure if sub.depends_on or sub.depends_on_index else None,
        stored_tags(sub.tags),
    )
