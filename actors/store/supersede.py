"""Superseding: a submission with ``on_duplicate`` ``supersede`` replaces the active task that
holds its key (docs/semantics.md "Duplicate strategies").

The old version always gets a history row, status ``superseded``. A task that has not started
(pending, paused or scheduled, in its ``execute`` phase) is replaced in place: same id, so the
same place in the queue among equal priorities, every submitted field taken from the new
submission, its run bookkeeping (retries, requeue mark, errors, IO) reset; a paused one becomes
pending (the new version has not run, so there is nothing to resume). A task under way (running,
waiting for its children, or a parent whose finalize is due) is removed and the new submission
inserted under a new id; the Dispatcher cancels the old run (its token, its executor's
``on_cancel``). Either way the task's children are cancelled first: they belonged to the old
version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from actors.store import lifecycle
from actors.store.core import Core
from actors.store.schema import index_tags, unindex_tags
from bus.kinds import Transition

_KEPT = ("task_type", "key", "key8", "created_at_ms")
"""Columns a supersede in place keeps (the key, and with it the type, are the same)."""

_RESET = (
    "retry_count = 0, last_error = NULL, started_at_ms = NULL, requeue = 0, "
    "requeue_priority = NULL, phase = 'execute', has_children = 0, child_failures = 0, "
    "run_started_at_ms = NULL, acc_read_bytes = 0, acc_write_bytes = 0, acc_net_rx_bytes = 0, "
    "acc_net_tx_bytes = 0"
)


def in_place(task: lifecycle.Active) -> bool:
    """Whether superseding ``task`` keeps its row: it has not started its work."""
    row = task.row
    return row.status in ("pending", "paused", "scheduled") and row.phase == "execute"


def supersede(
    core: Core,
    task: lifecycle.Active,
    values: Mapping[str, Any],
    now: int,
    insert: Callable[[], int],
    out: list[Transition],
) -> int:
    """Replace ``task`` by the submission whose new-row ``values`` (column → value) are given;
    ``insert`` inserts them as a new row (tags indexed) and gives its id. The id of the task
    now holding the key."""
    row = task.row
    for (child,) in core.all("SELECT id FROM tasks WHERE parent_id = +? ORDER BY id", (row.id,)):
        lifecycle.cancel_tree(core, child, out)
    core.write_history(
        row.id, "superseded", completed_at_ms=now, started_at_ms=task.history_started_at_ms
    )
    if in_place(task):
        changed = {c: v for c, v in values.items() if c not in _KEPT}
        columns = ", ".join(changed)
        marks = ", ".join("?" * len(changed))
        core.run(
            f"UPDATE tasks SET ({columns}) = ({marks}), {_RESET} WHERE id = ?",
            (*changed.values(), row.id),
        )
        if row.tags:
            unindex_tags(core, row.id)
        index_tags(core, row.id, values["tags"])
        new_id = row.id
    else:
        lifecycle.delete(core, row.id, row.tags)
        new_id = insert()
    was_running = row.status == "running"
    out.append(lifecycle.transition(row, "superseded", was_running=was_running, new_task_id=new_id))
    if row.parent_id is not None and row.parent_id != values["parent_id"]:
        lifecycle.resolve_parent(core, row.parent_id, out)  # it may have lost its last active child
    return new_id
