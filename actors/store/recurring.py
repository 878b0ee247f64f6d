"""Recurring schedules: created at submit, advanced when an instance completes, ended when one
does not, and the controls (pause, resume, cancel) and their listing.

A schedule (a row of ``recurring``) is named by its first task's id. Each instance is an
ordinary task whose ``schedule_id`` names the schedule, made from the schedule's ``template``
(the submission, without its due time). Pure functions of a ``Core``, inside the caller's
transaction: the completion of an instance and the insertion of the next one commit together,
so a crash or a restart can neither lose a schedule nor double it (docs/semantics.md
"Recurring tasks").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import msgpack

from actors.store.core import Core
from actors.store.queries import by_key
from actors.store.submit import submit as apply_submissions
from actors.store.submit import validate
from bus.cron import next_cron_ms
from bus.kinds import Outcome, RetrySpec, ScheduleRow, Submission, TaskRow, Transition

_SCHEDULE = "id, task_type, key, label, interval_s, cron, max_executions, execution_count, paused"


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    task_type: str
    key: str
    label: str
    interval_s: float | None
    cron: str | None
    max_executions: int | None
    execution_count: int
    paused: bool

    def due_after(self, instant_ms: int) -> int:
        """When the instance that follows a completion at ``instant_ms`` is due."""
        if self.cron is not None:
            return next_cron_ms(self.cron, instant_ms)
        return instant_ms + round((self.interval_s or 0.0) * 1000)


def _schedule(row: tuple[Any, ...] | None) -> Schedule | None:
    if row is None:
        return None
    return Schedule(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], bool(row[8])
    )  # fmt: skip


def find(core: Core, task_id: int) -> Schedule | None:
    """The schedule ``task_id`` names: its first task's id, or an active instance's."""
    return _schedule(
        core.one(
            f"SELECT {_SCHEDULE} FROM recurring WHERE id = coalesce("
            "(SELECT schedule_id FROM tasks WHERE id = ?1), ?1)",
            (task_id,),
        )
    )


def _of_key(core: Core, key: str) -> Schedule | None:
    return _schedule(core.one(f"SELECT {_SCHEDULE} FROM recurring WHERE key = ?", (key,)))


# -- submitting --------------------------------------------------------------------------------


def submit(
    core: Core,
    subs: Sequence[Submission],
    request_id: str | None = None,
    out: list[Transition] | None = None,
) -> list[Outcome]:
    """Submit a batch holding recurring submissions (the others as usual), then give each
    recurring key its schedule.

    A cron submission with no due time of its own is due at its first matching minute. A key
    keeps one schedule: a recurring submission whose key has one is deduplicated against it
    like any submission, and the task it inserts (when no instance is active) becomes the
    schedule's instance. A key held by an active task that is no instance makes that task the
    new schedule's first instance."""
    for index, sub in enumerate(subs):
        validate(sub, index, len(subs))  # before a cron expression is read
    now = core.now()
    subs = [_first_due(sub, now) for sub in subs]
    outcomes = apply_submissions(core, subs, request_id, out)
    for sub in subs:
        if isinstance(sub, Submission) and sub.recurring is not None:
            _attach(core, sub)
    return outcomes


def _first_due(sub: Submission, now: int) -> Submission:
    spec = sub.recurring if isinstance(sub, Submission) else None
    if spec is None or spec.cron is None or sub.due_at_ms is not None:
        return sub
    return dataclasses.replace(sub, due_at_ms=next_cron_ms(spec.cron, now))


def _attach(core: Core, sub: Submission) -> None:
    spec = sub.recurring
    assert spec is not None
    holder = by_key(core, "id, schedule_id", sub.key)
    if holder is None:  # answered from a request id: the batch was applied before
        return
    task_id, schedule_id = holder
    existing = _of_key(core, sub.key)
    if existing is None:
        core.run(
            "INSERT INTO recurring (id, task_type, key, label, interval_s, cron, max_executions, "
            "template) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                sub.task_type,
                sub.key,
                sub.label,
                spec.interval_s,
                spec.cron,
                spec.max_executions,
                _template(sub),
            ),
        )
        existing_id = task_id
    else:
        existing_id = existing.id
    if schedule_id != existing_id:  # none, or a schedule that has ended
        core.run("UPDATE tasks SET schedule_id = ? WHERE id = ?", (existing_id, task_id))


def _template(sub: Submission) -> bytes:
    # The next instances keep the tags; only the first waits for the dependencies it named.
    bare = dataclasses.replace(
        sub,
        due_at_ms=None,
        recurring=None,
        parent_id=None,
        depends_on=None,
        depends_on_index=None,
    )
    packed: bytes = msgpack.packb(dataclasses.astuple(bare))
    return packed


def _from_template(blob: bytes, due_at_ms: int) -> Submission:
    fields = list(msgpack.unpackb(blob))
    names = [f.name for f in dataclasses.fields(Submission)]
    retry = names.index("retry")
    if fields[retry] is not None:
        fields[retry] = RetrySpec(*fields[retry])
    sub = Submission(*fields[: len(names)])
    return dataclasses.replace(sub, due_at_ms=due_at_ms, recurring=None)


# -- instances ending --------------------------------------------------------------------------


def completed(
    core: Core, schedule_id: int, row: TaskRow, finished_ms: int, out: list[Transition]
) -> None:
    """An instance completed: count it and, unless that was the last run or the schedule is
    paused, insert the next instance (due ``interval`` after ``finished_ms``, or at the next
    matching minute) — none when a task of the key is already waiting (no pile-up)."""
    schedule = _schedule(
        core.one(f"SELECT {_SCHEDULE} FROM recurring WHERE id = ?", (schedule_id,))
    )
    if schedule is None:  # cancelled while this run went on
        return
    count = schedule.execution_count + 1
    next_run: int | None = None
    if schedule.max_executions is not None and count >= schedule.max_executions:
        core.run("DELETE FROM recurring WHERE id = ?", (schedule_id,))
    else:
        core.run(
            "UPDATE recurring SET execution_count = ?, last_completed_ms = ? WHERE id = ?",
            (count, finished_ms, schedule_id),
        )
        if not schedule.paused:
            next_run, _ = _next_instance(core, schedule, schedule.due_after(finished_ms))
    out.append(
        Transition(
            id=row.id,
            result="recurring",
            task_type=row.task_type,
            key=row.key,
            label=row.label,
            priority=row.priority,
            execution_count=count,
            next_run_ms=next_run,
        )
    )


def _next_instance(core: Core, schedule: Schedule, due_ms: int) -> tuple[int, int | None]:
    """Insert the schedule's next instance, due at ``due_ms``; when a task holds the key
    already, that task is the next instance instead. When the next instance is due, and the
    id of the task inserted (None: none was)."""
    holder = by_key(core, "id, schedule_id, due_at_ms, created_at_ms", schedule.key)
    if holder is not None:
        task_id, schedule_id, due, created = holder
        if schedule_id != schedule.id:  # none, or a schedule that has ended
            core.run("UPDATE tasks SET schedule_id = ? WHERE id = ?", (schedule.id, task_id))
        return int(due if due is not None else created), None
    blob = core.value("SELECT template FROM recurring WHERE id = ?", (schedule.id,))
    outcome = apply_submissions(core, [_from_template(blob, due_ms)])[0]
    core.run("UPDATE tasks SET schedule_id = ? WHERE id = ?", (schedule.id, outcome.id))
    return due_ms, outcome.id


def ended(core: Core, schedule_id: int) -> None:
    """An instance ended without completing (failed, dead-lettered, cancelled, expired): its
    schedule ends with it."""
    core.run("DELETE FROM recurring WHERE id = ?", (schedule_id,))


# -- controls and listing ----------------------------------------------------------------------


def pause(core: Core, task_id: int) -> bool:
    schedule = find(core, task_id)
    if schedule is None:
        return False
    core.run("UPDATE recurring SET paused = 1 WHERE id = ?", (schedule.id,))
    return True


def resume(core: Core, task_id: int) -> list[Outcome]:
    """Resume the schedule; with no instance active, the next is inserted at once, due when
    it would have been (or now, when that has passed). No outcome: no such schedule."""
    schedule = find(core, task_id)
    if schedule is None:
        return []
    core.run("UPDATE recurring SET paused = 0 WHERE id = ?", (schedule.id,))
    active = core.value("SELECT id FROM tasks WHERE schedule_id = ? LIMIT 1", (schedule.id,))
    if active is not None:
        return [Outcome("duplicate", None)]
    now = core.now()
    last = core.value("SELECT last_completed_ms FROM recurring WHERE id = ?", (schedule.id,))
    due = now if last is None else max(now, schedule.due_after(int(last)))
    _, inserted = _next_instance(core, schedule, due)
    if inserted is None:
        return [Outcome("duplicate", None)]
    return [Outcome("inserted", inserted)]


def cancelled(core: Core, schedule: Schedule) -> Transition:
    """The schedule is over (its instances were cancelled by the caller)."""
    ended(core, schedule.id)
    return Transition(
        id=schedule.id,
        result="schedule_cancelled",
        task_type=schedule.task_type,
        key=schedule.key,
        label=schedule.label,
    )


def schedules(core: Core) -> list[ScheduleRow]:
    rows = core.all(
        "SELECT r.id, r.task_type, r.key, r.label, r.interval_s, r.cron, ("
        "SELECT coalesce(t.due_at_ms, t.created_at_ms) FROM tasks t WHERE t.schedule_id = r.id "
        "AND (t.status = 'scheduled' OR t.status = 'pending') LIMIT 1), "
        "r.execution_count, r.max_executions, r.paused FROM recurring r ORDER BY r.id"
    )
    return [
        ScheduleRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], bool(r[9])) for r in rows
    ]
