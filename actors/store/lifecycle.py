"""How runs end: finish (complete, retry, fail, requeue), cancel, and parents and their children.

Pure functions of a ``Core``, called inside the caller's transaction. Each state change is
returned as a ``Transition`` for the Dispatcher to publish as an event.

Parents (docs/semantics.md "Children and finalize"): a run that inserted children and whose
``execute`` returned ok goes to ``waiting`` while any child is active. When its last child reaches a
terminal state, it fails with ``"<n> child task(s) failed"`` if any failed, else it becomes
``pending`` in phase ``finalize`` (dispatched ahead of everything else). With ``fail_fast`` the
first permanent child failure cancels the siblings and fails the parent at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from actors.store import dependencies, recurring
from actors.store.core import Core
from actors.store.retry import Retries
from actors.store.schema import (
    BUSY,
    HISTORY_INSERT,
    TASK_COLUMNS,
    TASK_INTERNAL_COLUMNS,
    TASK_WIDTH,
    task_row,
    unindex_tags,
)
from bus.errors import InvalidRequest, TaskmillError
from bus.kinds import TaskResult, TaskRow, Transition
from bus.limits import MAX_ERROR_CHARS, cut_text

log = logging.getLogger("taskmill.store")

TERMINAL = (
    "completed",
    "failed",
    "cancelled",
    "dead_letter",
    "expired",
    "superseded",
    "dependency_failed",
)
MAX_DELAY_S = 366 * 24 * 3600.0
"""A retry delay longer than a year (or not a number) is taken as a year."""


@dataclass(frozen=True, slots=True)
class Active:
    """An active row with the Store's own bookkeeping columns."""

    row: TaskRow
    has_children: bool
    child_failures: int
    run_started_at_ms: int | None
    acc: tuple[int, int, int, int]
    schedule_id: int | None = None
    """The recurring schedule this task is an instance of."""

    @property
    def history_started_at_ms(self) -> int | None:
        """When the run being ended started, or None when it was not running."""
        if self.row.status in ("running", "waiting") or self.row.phase == "finalize":
            return self.run_started_at_ms or self.row.started_at_ms
        return None


def load(core: Core, task_id: int) -> Active | None:
    t = core.one(
        f"SELECT {TASK_COLUMNS}, {TASK_INTERNAL_COLUMNS}, schedule_id FROM tasks WHERE id = ?",
        (task_id,),
    )
    if t is None:
        return None
    w = TASK_WIDTH
    row = task_row(t[:w])
    acc = (t[w + 3], t[w + 4], t[w + 5], t[w + 6])
    return Active(row, bool(t[w]), int(t[w + 1]), t[w + 2], acc, t[w + 7])


def transition(
    row: TaskRow,
    result: str,
    *,
    error: str | None = None,
    children_count: int = 0,
    was_running: bool = False,
    priority: int | None = None,
    duration_ms: int | None = None,
    retry_after_s: float | None = None,
    new_task_id: int | None = None,
) -> Transition:
    """The transition of ``row`` to ``result``, with what an event about it needs."""
    return Transition(
        id=row.id,
        result=result,
        task_type=row.task_type,
        key=row.key,
        label=row.label,
        priority=row.priority if priority is None else priority,
        error=error,
        children_count=children_count,
        was_running=was_running,
        group_key=row.group_key,
        duration_ms=duration_ms,
        retry_after_s=retry_after_s,
        retry_count=row.retry_count,
        tags=row.tags,
        new_task_id=new_task_id,
    )


def _ignored(task_id: int) -> Transition:
    return Transition(id=task_id, result="ignored")


# -- finish -----------------------------------------------------------------------------------


def finish(
    core: Core, results: Sequence[TaskResult], max_retries: int, retries: Retries | None = None
) -> list[Transition]:
    """Apply executor results in order; one transition per result (``ignored`` when stale).
    ``max_retries`` is the builder's; ``retries`` the policies (see ``actors.store.retry``)."""
    retries = retries or Retries()
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise InvalidRequest(f"max_retries must be a non-negative integer, got {max_retries!r}")
    out: list[Transition] = []
    for result in results:
        if _completed_plainly(core, result, out):
            continue
        mark = len(out)
        try:
            with core.savepoint():
                _finish_one(core, result, max_retries, retries, out)
        except TaskmillError as exc:
            if not core.in_transaction:
                # SQLite rolled the whole transaction back (disk full, I/O error): the results
                # after this one must not run, and commit, statement by statement.
                raise
            # One bad result (an unknown outcome, a byte count SQLite cannot hold) must not
            # block every other completion of the batch: it alone is ignored, and logged.
            log.error("store: result for task %s ignored: %s", result.id, exc)
            del out[mark:]
            out.append(_ignored(result.id))
    return out


_PLAIN_COMPLETION = (
    HISTORY_INSERT
    + "SELECT id, task_type, key, label, priority, 'completed', payload, expected_read_bytes, "
    "expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes, :r, :w, :rx, :tx, "
    "retry_count, last_error, created_at_ms, started, :done, "
    "CASE WHEN started IS NULL THEN NULL ELSE max(0, :done - started) END, "
    "parent_id, fail_fast, group_key, :result, tags FROM ("
    "SELECT *, CASE WHEN run_started_at_ms THEN run_started_at_ms ELSE started_at_ms END "
    "AS started FROM tasks WHERE id = :id AND status IN ('running', 'paused') "
    "AND phase = 'execute' AND has_children = 0 AND parent_id IS NULL AND requeue = 0 "
    "AND schedule_id IS NULL "
    "AND acc_read_bytes = 0 AND acc_write_bytes = 0 AND acc_net_rx_bytes = 0 "
    "AND acc_net_tx_bytes = 0) WHERE coalesce(started, 0) >= 0 "
    "RETURNING task_id, task_type, key, label, priority, group_key, duration_ms, tags"
)
"""History row of a run that simply completes (ok; not a parent, a child or a requeue), written
only when the active row is one: the row is read by the insert itself."""


def _completed_plainly(core: Core, result: TaskResult, out: list[Transition]) -> bool:
    """Complete the run of ``result`` in two statements, when it is the common case (ok, not a
    parent, not a child, not marked for requeue, every number within SQLite's range); False,
    having written nothing, for any other result, which the general path then handles under its
    own savepoint (and ignores alone if it is refused).

    No savepoint here: a failed statement undoes itself, so the insert failing leaves nothing
    and falls back to the general path; the delete failing after it fails the whole request
    (the Dispatcher keeps its results and sends them again).

    Kept beside the general path because nearly every result takes it, and the general path's
    savepoint, row load and separate statements make a completion markedly dearer in the
    Store's thread, which every task of a drain passes through."""
    if result.outcome != "ok":
        return False
    read, write, rx, tx = _actual(result)
    params = {"id": result.id, "done": _finished_at(core, result)}
    try:
        written = core.all(
            _PLAIN_COMPLETION,
            params | {"r": read, "w": write, "rx": rx, "tx": tx, "result": result.result},
        )
    except TaskmillError:  # e.g. a number SQLite cannot hold: the general path ignores it alone
        return False
    if not written:
        return False
    task_id, task_type, key, label, priority, group_key, duration, tags = written[0]
    delete(core, task_id, tags)
    core.history_written()
    out.append(
        Transition(
            id=task_id,
            result="completed",
            task_type=task_type,
            key=key,
            label=label,
            priority=priority,
            was_running=True,
            group_key=group_key,
            duration_ms=duration,
            tags=None if tags is None else json.loads(tags),
        )
    )
    dependencies.ended(core, task_id, True, False, out, fail_dependent)
    return True


def _finish_one(
    core: Core, result: TaskResult, max_retries: int, retries: Retries, out: list[Transition]
) -> None:
    if result.outcome not in ("ok", "error", "cancelled"):
        raise InvalidRequest(f"unknown result outcome {result.outcome!r}")
    task = load(core, result.id)
    if task is None or result.outcome == "cancelled":
        out.append(_ignored(result.id))  # cancelled runs were already handled (or preempted)
    elif result.outcome == "ok" and task.row.status in ("running", "paused"):
        _finish_ok(core, task, result, out)
    elif result.outcome == "error" and task.row.status == "running":
        _finish_error(core, task, result, max_retries, retries, out)
    else:  # an error from a preempted victim, or a result for a row no longer running
        out.append(_ignored(result.id))


def _finished_at(core: Core, result: TaskResult) -> int:
    return result.finished_at_ms or core.now()


def _actual(result: TaskResult) -> tuple[int, int, int, int]:
    return (
        max(0, result.read_bytes),
        max(0, result.write_bytes),
        max(0, result.net_rx_bytes),
        max(0, result.net_tx_bytes),
    )


def _finish_ok(core: Core, task: Active, result: TaskResult, out: list[Transition]) -> None:
    row = task.row
    if row.phase == "execute" and task.has_children:
        # The parent's own IO is kept for the history row written after finalize.
        core.run(
            "UPDATE tasks SET acc_read_bytes = acc_read_bytes + ?, "
            "acc_write_bytes = acc_write_bytes + ?, acc_net_rx_bytes = acc_net_rx_bytes + ?, "
            "acc_net_tx_bytes = acc_net_tx_bytes + ? WHERE id = ?",
            (*_actual(result), row.id),
        )
        active = active_children(core, row.id)
        if active:
            core.run("UPDATE tasks SET status = 'waiting' WHERE id = ?", (row.id,))
            out.append(transition(row, "waiting", children_count=active, was_running=True))
        else:
            _resolve_finished_children(core, load_required(core, row.id), out)
        return
    finished = _finished_at(core, result)
    started = task.run_started_at_ms or row.started_at_ms
    duration = None if started is None else max(0, finished - started)
    core.write_history(
        row.id,
        "completed",
        completed_at_ms=finished,
        started_at_ms=started,
        actual=_actual(result),
        result=result.result,
    )
    # The run completed: what waits for the task is satisfied, even when it runs again.
    dependencies.ended(core, row.id, True, False, out, fail_dependent)
    if row.requeue:
        requeue_priority = row.priority if row.requeue_priority is None else row.requeue_priority
        core.run(
            "UPDATE tasks SET status = 'pending', priority = ?, retry_count = 0, requeue = 0, "
            "requeue_priority = NULL, started_at_ms = NULL, run_started_at_ms = NULL, "
            "phase = 'execute', has_children = 0, child_failures = 0, acc_read_bytes = 0, "
            "acc_write_bytes = 0, acc_net_rx_bytes = 0, acc_net_tx_bytes = 0 WHERE id = ?",
            (requeue_priority, row.id),
        )
        out.append(
            transition(
                row, "requeued", was_running=True, priority=requeue_priority, duration_ms=duration
            )
        )
    else:
        delete(core, row.id, row.tags)
        out.append(transition(row, "completed", was_running=True, duration_ms=duration))
        child_terminal(core, row, None, out)
    if task.schedule_id is not None:
        recurring.completed(core, task.schedule_id, row, finished, out)


def _finish_error(
    core: Core,
    task: Active,
    result: TaskResult,
    max_retries: int,
    retries: Retries,
    out: list[Transition],
) -> None:
    row = task.row
    error = cut_text(result.error or "task failed", MAX_ERROR_CHARS)
    finished = _finished_at(core, result)
    if not result.retryable:
        fail(core, task, error, finished, out, actual=_actual(result))
        return
    plan = retries.plan(row, result, max_retries)
    if not plan.retry:  # retries exhausted: kept apart, to be looked at and retried by hand
        fail(core, task, error, finished, out, actual=_actual(result), status="dead_letter")
        return
    retry(core, row, error, plan.delay_s, out)


def retry(core: Core, row: TaskRow, error: str, delay_s: float, out: list[Transition]) -> None:
    """Back to the queue with one more retry counted: at once, or ``scheduled`` until its
    delay has passed."""
    if delay_s != delay_s or delay_s > MAX_DELAY_S:  # NaN or past a year
        delay_s = MAX_DELAY_S
    if delay_s > 0:
        due = core.now() + int(delay_s * 1000)
        core.run(
            "UPDATE tasks SET status = 'scheduled', due_at_ms = ?, retry_count = retry_count + 1, "
            "last_error = ?, started_at_ms = NULL WHERE id = ?",
            (due, error, row.id),
        )
    else:
        core.run(
            "UPDATE tasks SET status = 'pending', retry_count = retry_count + 1, last_error = ?, "
            "started_at_ms = NULL WHERE id = ?",
            (error, row.id),
        )
    after = delay_s if delay_s > 0 else None
    out.append(transition(row, "retry", error=error, was_running=True, retry_after_s=after))


def fail(
    core: Core,
    task: Active,
    error: str,
    finished_at_ms: int,
    out: list[Transition],
    *,
    actual: Sequence[int] = (0, 0, 0, 0),
    status: str = "failed",
    age_s: float | None = None,
    failed_dependency: int | None = None,
) -> None:
    """Fail a task permanently (its requeue mark goes with it), tell its parent, then fail its
    dependents (unless this is itself one, ``failed_dependency``: the cascade walks on its
    own). ``status``: ``failed``, ``dead_letter`` for a retryable failure out of retries,
    ``expired``, or ``dependency_failed``."""
    row = task.row
    core.write_history(
        row.id,
        status,
        completed_at_ms=finished_at_ms,
        started_at_ms=task.history_started_at_ms,
        error=error,
        actual=actual,
    )
    delete(core, row.id, row.tags)
    if task.schedule_id is not None:
        recurring.ended(core, task.schedule_id)
    ended = transition(row, status, error=error, was_running=row.status == "running")
    if age_s is not None:
        ended = dataclasses.replace(ended, age_s=age_s)
    if failed_dependency is not None:
        ended = dataclasses.replace(ended, failed_dependency=failed_dependency)
    out.append(ended)
    # The parent first: a fail-fast parent then fails for this task, the first cause, and its
    # other children (dependents of this one among them) are cancelled with it.
    child_terminal(core, row, error, out)
    if failed_dependency is None:
        was_blocked = row.status == "blocked"
        dependencies.ended(core, row.id, False, was_blocked, out, fail_dependent)


def fail_dependent(core: Core, task_id: int, failed_dependency: int, out: list[Transition]) -> None:
    """End a blocked task whose dependency ended without completing (``dependencies.ended``
    walks on to its own dependents)."""
    task = load(core, task_id)
    if task is None:  # gone already, with a parent or sibling the cascade ended
        return
    error = f"dependency task {failed_dependency} failed"
    fail(
        core, task, error, core.now(), out, status="dependency_failed",
        failed_dependency=failed_dependency,
    )  # fmt: skip


def expire(core: Core, now: int, limit: int = 500) -> list[Transition]:
    """Tasks past their TTL that have not started (pending, paused, scheduled, blocked) go to
    history as ``expired``; a running task never expires. At most ``limit``, the longest
    expired first."""
    out: list[Transition] = []
    rows = core.all(
        "SELECT id FROM tasks WHERE expires_at_ms <= ? AND expires_at_ms IS NOT NULL "
        "AND (status = 'pending' OR status = 'paused' OR status = 'scheduled' "
        "OR status = 'blocked') "
        "ORDER BY expires_at_ms LIMIT +?",
        (now, limit),
    )
    for (task_id,) in rows:
        task = load(core, task_id)
        if task is None:  # gone with a parent expired before it
            continue
        _expire(core, task, now, out)
    return out


def delete(core: Core, task_id: int, tags: object) -> None:
    """Remove an active row; ``tags``: whether it has tags (then they are forgotten too)."""
    core.run("DELETE FROM tasks WHERE id = ?", (task_id,))
    if tags:
        unindex_tags(core, task_id)


def _expire(core: Core, task: Active, now: int, out: list[Transition]) -> None:
    """Expire ``task``, then its children that have not started (and theirs): the parent
    first, so that an expired child finds no parent to fail and the parent's history row says
    ``expired``. A running child runs on."""
    age = max(0.0, (now - task.row.created_at_ms) / 1000)
    fail(core, task, "expired", now, out, status="expired", age_s=age)
    for (child_id,) in core.all(
        "SELECT id FROM tasks WHERE parent_id = +? "
        "AND status IN ('pending', 'paused', 'scheduled', 'blocked') ORDER BY id",
        (task.row.id,),
    ):
        child = load(core, child_id)
        if child is not None:
            _expire(core, child, now, out)


def load_required(core: Core, task_id: int) -> Active:
    task = load(core, task_id)
    assert task is not None, f"task {task_id} vanished inside its transaction"
    return task


# -- cancellation -----------------------------------------------------------------------------


def cancel(core: Core, task_id: int) -> list[Transition]:
    """Cancel a task, its children first; every cancelled row gets a ``cancelled`` history row."""
    task = load(core, task_id)
    if task is None:
        return []
    out: list[Transition] = []
    cancel_tree(core, task_id, out)
    if task.row.parent_id is not None:
        resolve_parent(core, task.row.parent_id, out)
    return out


def cancel_tree(core: Core, task_id: int, out: list[Transition]) -> None:
    """Cancel ``task_id`` and its descendants, deepest first, without resolving its parent."""
    order: list[int] = []  # post-order: children (by id) before their parent
    stack: list[tuple[int, bool]] = [(task_id, False)]
    while stack:
        current, expanded = stack.pop()
        if expanded:
            order.append(current)
            continue
        stack.append((current, True))
        children = core.all(
            "SELECT id FROM tasks WHERE parent_id = +? ORDER BY id DESC", (current,)
        )
        stack.extend((r[0], False) for r in children)
    now = core.now()
    for current in order:
        task = load(core, current)
        if task is None:
            continue
        core.write_history(
            current, "cancelled", completed_at_ms=now, started_at_ms=task.history_started_at_ms
        )
        delete(core, current, task.row.tags)
        if task.schedule_id is not None:
            recurring.ended(core, task.schedule_id)
        out.append(transition(task.row, "cancelled", was_running=task.row.status == "running"))
        was_blocked = task.row.status == "blocked"
        dependencies.ended(core, current, False, was_blocked, out, fail_dependent)


# -- parents ----------------------------------------------------------------------------------


def active_children(core: Core, parent_id: int) -> int:
    return int(core.value("SELECT count(*) FROM tasks WHERE parent_id = ?", (parent_id,)))


def child_terminal(core: Core, child: TaskRow, error: str | None, out: list[Transition]) -> None:
    """A child reached a terminal state: ``error`` is set when it failed permanently."""
    if child.parent_id is None:
        return
    parent = load(core, child.parent_id)
    if parent is None:
        return
    if error is not None:
        core.run(
            "UPDATE tasks SET child_failures = child_failures + 1 WHERE id = ?", (parent.row.id,)
        )
        if parent.row.fail_fast:
            for (sibling,) in core.all(
                "SELECT id FROM tasks WHERE parent_id = ? ORDER BY id", (parent.row.id,)
            ):
                cancel_tree(core, sibling, out)
            reason = f"child task {child.id} failed: {error}"
            fail(core, load_required(core, parent.row.id), reason, core.now(), out)
            return
    resolve_parent(core, parent.row.id, out)


def resolve_parent(core: Core, parent_id: int, out: list[Transition]) -> None:
    parent = load(core, parent_id)
    if parent is None or parent.row.status != "waiting" or active_children(core, parent_id):
        return
    _resolve_finished_children(core, parent, out)


def _resolve_finished_children(core: Core, parent: Active, out: list[Transition]) -> None:
    """Every child of ``parent`` has finished: fail it, or make its finalize dispatchable."""
    if parent.child_failures > 0:
        reason = f"{parent.child_failures} child task(s) failed"
        fail(core, parent, reason, core.now(), out)
        return
    core.run(
        "UPDATE tasks SET status = 'pending', phase = 'finalize', started_at_ms = NULL "
        "WHERE id = ?",
        (parent.row.id,),
    )
    out.append(transition(parent.row, "finalize", was_running=parent.row.status == "running"))


def resolve_waiting(core: Core) -> list[Transition]:
    """Recovery: resolve every waiting parent whose children have all finished."""
    out: list[Transition] = []
    for (parent_id,) in core.all(
        f"SELECT id FROM tasks WHERE status = 'waiting' AND {BUSY} ORDER BY id"
    ):
        resolve_parent(core, parent_id, out)
    return out
