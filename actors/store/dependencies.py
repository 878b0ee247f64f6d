"""Task dependencies: the edges a submission adds, and what a dependency's end does to them.

Rules (docs/semantics.md "Task dependencies"):

* At submit, each dependency is looked up: an active task → an edge (the new task is
  ``blocked``); completed (its newest history row) → already satisfied, no edge; ended any
  other way → ``DependencyFailedError``, or nothing under ``ignore``; neither → unknown,
  ``InvalidDependencyError``. A member of the same batch is named by its position and is the
  task that member inserted, or the active task holding its key.
* Dependencies count only for a submission that inserts a task: one that meets an active row
  (upgrade, requeue, duplicate) leaves that row's dependencies as they are. So an existing
  task never gains an edge, and a cycle can only be closed among the rows one batch inserts
  (or by a child naming its own parent or an ancestor, who completes only after it).
* A task has edges while, and only while, it is ``blocked``. When a dependency completes, its
  edges go; a dependent left with none becomes ``pending`` (``scheduled`` while not due):
  ``unblocked``. When it ends otherwise (failed, dead letter, cancelled, expired, or
  dependency_failed itself), a ``cancel``/``fail`` dependent goes to history as
  ``dependency_failed`` and the same happens to its own dependents, transitively, in the same
  transaction; an ``ignore`` dependent only loses the edge.

Reading a dependency's dependents is one probe of ``task_deps_dependency``: the cost of an end
grows with its dependents, never with the rest of the tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from actors.store.core import Core
from bus.errors import (
    CyclicDependencyError,
    DependencyFailedError,
    InvalidDependencyError,
    InvalidRequest,
)
from bus.kinds import Submission, Transition
from bus.limits import MAX_DEPENDENCIES

POLICIES = ("cancel", "fail", "ignore")

_ANY_EDGE = "any_dependency_edge"
"""The cache entry that says whether ``task_deps`` may hold a row: while it holds none (most
deployments never use dependencies), an ending task reads nothing of it."""


def may_have_edges(core: Core) -> bool:
    return core.cached(_ANY_EDGE, lambda: core.value("SELECT 1 FROM task_deps LIMIT 1") is not None)


def resolve(core: Core, subs: Sequence[Submission]) -> dict[int, list[int]]:
    """Check every dependency of the batch before anything is written; the active task ids
    each submission (by position) waits for through ``depends_on``. A submission with batch
    members among its dependencies waits for them too (``add_edges`` adds those once their rows
    are known)."""
    waits: dict[int, list[int]] = {}
    verdicts: dict[int, str] = {}
    for index, sub in enumerate(subs):
        if not sub.depends_on:
            continue
        active: list[int] = []
        for dep in dict.fromkeys(sub.depends_on):
            verdict = verdicts.get(dep)
            if verdict is None:
                verdict = verdicts[dep] = _verdict(core, dep)
            if verdict == "active":
                active.append(dep)
            elif verdict == "unknown":
                raise InvalidDependencyError(
                    f"submission {index}: dependency {dep} is no task (neither active nor in "
                    "history)"
                )
            elif verdict != "completed" and sub.on_dependency_failure != "ignore":
                raise DependencyFailedError(
                    f"submission {index}: dependency {dep} already ended as {verdict}"
                )
        if active:
            waits[index] = active
    return waits


def _verdict(core: Core, task_id: int) -> str:
    """``active``, the status of its newest history row, or ``unknown``."""
    if core.value("SELECT 1 FROM tasks WHERE id = ?", (task_id,)) is not None:
        return "active"
    status = core.value(
        "SELECT status FROM history WHERE task_id = ? ORDER BY completed_at_ms DESC, id DESC "
        "LIMIT 1",
        (task_id,),
    )
    return "unknown" if status is None else str(status)


def blocked_positions(subs: Sequence[Submission], waits: dict[int, list[int]]) -> set[int]:
    """Positions of the submissions that will be inserted ``blocked``: those waiting for an
    active task, and those naming a member of the batch (which is always an active task)."""
    return set(waits) | {i for i, sub in enumerate(subs) if sub.depends_on_index}


def add_edges(
    core: Core,
    subs: Sequence[Submission],
    waits: dict[int, list[int]],
    row_of: Callable[[int], int],
    inserted: dict[int, int],
) -> None:
    """Write the edges of the submissions that inserted a row (``inserted``: position → id);
    ``row_of(position)`` is the active task a batch member stands for. Refuses a cycle."""
    edges: dict[int, list[int]] = {}
    for index, task_id in inserted.items():
        deps = list(waits.get(index, ()))
        deps += [row_of(i) for i in subs[index].depends_on_index or ()]
        if deps:
            edges[task_id] = list(dict.fromkeys(deps))
    if not edges:
        return
    _refuse_cycles(core, edges, subs, inserted)
    core.many(
        "INSERT INTO task_deps (task_id, depends_on) VALUES (?, ?)",
        [(task_id, dep) for task_id, deps in edges.items() for dep in deps],
    )
    core.forget(_ANY_EDGE)


def _refuse_cycles(
    core: Core,
    edges: dict[int, list[int]],
    subs: Sequence[Submission],
    inserted: dict[int, int],
) -> None:
    """A cycle can only run through rows this batch inserted (the others gain no edge), or
    from a child to its parent or an ancestor (who completes only after the child)."""
    position = {task_id: index for index, task_id in inserted.items()}
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in edges:
        if state.get(start):
            continue
        stack: list[tuple[int, int]] = [(start, 0)]
        state[start] = 1
        while stack:
            node, next_edge = stack[-1]
            deps = edges.get(node, [])
            if next_edge == len(deps):
                state[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, next_edge + 1)
            dep = deps[next_edge]
            if state.get(dep) == 1:
                raise CyclicDependencyError(
                    f"submission {position[node]}: its dependency on task "
                    f"{_named(dep, position)} closes a cycle"
                )
            if dep in edges and not state.get(dep):
                state[dep] = 1
                stack.append((dep, 0))
    for task_id, deps in edges.items():
        ancestors = _ancestors(core, subs[position[task_id]].parent_id)
        for dep in deps:
            if dep in ancestors:
                raise CyclicDependencyError(
                    f"submission {position[task_id]}: a child cannot depend on its parent or an "
                    f"ancestor (task {dep}), which completes only after its children"
                )


def _named(task_id: int, position: dict[int, int]) -> str:
    index = position.get(task_id)
    return str(task_id) if index is None else f"{task_id} (submission {index})"


def _ancestors(core: Core, parent_id: int | None) -> set[int]:
    found: set[int] = set()
    while parent_id is not None and parent_id not in found:
        found.add(parent_id)
        parent_id = core.value("SELECT parent_id FROM tasks WHERE id = ?", (parent_id,))
    return found


# -- a dependency ends ------------------------------------------------------------------------

Fail = Callable[[Core, int, int, list[Transition]], None]
"""``fail(core, dependent_id, failed_dependency, out)``: end a blocked dependent as
``dependency_failed`` (the lifecycle's ``fail``, without coming back here)."""


def ended(
    core: Core,
    task_id: int,
    completed: bool,
    was_blocked: bool,
    out: list[Transition],
    fail: Fail,
) -> None:
    """``task_id`` reached a terminal state (``completed`` or not): its own edges go (only a
    blocked task has any), and its dependents are unblocked or failed in turn, transitively,
    walking a list rather than recursing (a chain may be long)."""
    if not may_have_edges(core):
        return
    work: list[tuple[int, bool, bool]] = [(task_id, completed, was_blocked)]
    while work:
        current, ok, blocked = work.pop()
        if blocked:
            core.run("DELETE FROM task_deps WHERE task_id = ?", (current,))
        dependents = sorted(
            row[0]
            for row in core.all(
                "DELETE FROM task_deps WHERE depends_on = ? RETURNING task_id", (current,)
            )
        )
        if not dependents:
            continue
        if ok:
            _unblock_free(core, dependents, out)
            continue
        ignoring = []
        for dependent in dependents:
            if _policy(core, dependent) == "ignore":
                ignoring.append(dependent)
            else:
                fail(core, dependent, current, out)
                work.append((dependent, False, True))
        _unblock_free(core, ignoring, out)


def _policy(core: Core, task_id: int) -> str:
    return str(core.value("SELECT on_dependency_failure FROM tasks WHERE id = ?", (task_id,)))


_UNBLOCK = (
    "UPDATE tasks SET status = CASE WHEN due_at_ms > ?1 THEN 'scheduled' ELSE 'pending' END "
    "WHERE id IN (SELECT value FROM json_each(?2)) AND status = 'blocked' "
    "AND NOT EXISTS (SELECT 1 FROM task_deps WHERE task_deps.task_id = tasks.id) "
    "RETURNING id, task_type, key, label, priority, group_key"
)
"""Of the given blocked tasks, those waiting for nothing more become pending (scheduled while
not due): one statement for all of a dependency's dependents, the ids passed as a JSON array."""


def _unblock_free(core: Core, task_ids: list[int], out: list[Transition]) -> None:
    """Unblock those of ``task_ids`` that wait for nothing more, in id order."""
    if not task_ids:
        return
    rows = core.all(_UNBLOCK, (core.now(), json.dumps(task_ids)))
    for task_id, task_type, key, label, priority, group_key in sorted(rows):
        out.append(
            Transition(task_id, "unblocked", task_type, key, label, priority, group_key=group_key)
        )


# -- recovery and queries ---------------------------------------------------------------------


def recover(core: Core) -> list[Transition]:
    """On open: edges naming a task no longer active go (their end was never applied to them,
    e.g. a database edited by hand), and a blocked task left with none is unblocked."""
    if not may_have_edges(core) and not _any_blocked(core):
        return []
    core.run(
        "DELETE FROM task_deps WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE id = depends_on) "
        "OR NOT EXISTS (SELECT 1 FROM tasks WHERE id = task_id AND status = 'blocked')"
    )
    free = core.all(
        "SELECT id FROM tasks INDEXED BY tasks_blocked WHERE status = 'blocked' "
        "AND NOT EXISTS (SELECT 1 FROM task_deps WHERE task_deps.task_id = tasks.id)"
    )
    out: list[Transition] = []
    _unblock_free(core, [task_id for (task_id,) in free], out)
    return out


def _any_blocked(core: Core) -> bool:
    return core.value("SELECT 1 FROM tasks WHERE status = 'blocked' LIMIT 1") is not None


def dependencies(core: Core, task_id: int, dependents: bool) -> list[int]:
    """The active tasks ``task_id`` waits for, or (``dependents``) the tasks waiting for it."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise InvalidRequest(f"a task id must be an integer, got {task_id!r}")
    if dependents:
        sql = "SELECT task_id FROM task_deps WHERE depends_on = ? ORDER BY task_id"
    else:
        sql = "SELECT depends_on FROM task_deps WHERE task_id = ? ORDER BY depends_on"
    return [int(row[0]) for row in core.all(sql, (task_id,))]


def check(sub: Submission, index: int, batch_size: int) -> None:
    """Refuse dependency fields the Store cannot apply (``InvalidRequest``)."""
    where = f"submission {index}"
    count = 0
    for name in ("depends_on", "depends_on_index"):
        value = getattr(sub, name)
        if value is None:
            continue
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise InvalidRequest(f"{where}: {name} must be a list of integers")
        count += len(value)
    if count > MAX_DEPENDENCIES:
        raise InvalidRequest(
            f"{where}: {count} dependencies; a task may have at most {MAX_DEPENDENCIES}"
        )
    if any(v < 1 for v in sub.depends_on or ()):
        raise InvalidRequest(f"{where}: a dependency id must be a positive integer")
    if any(not 0 <= v < batch_size for v in sub.depends_on_index or ()):
        raise InvalidRequest(
            f"{where}: depends_on_index names a position outside the batch (0..{batch_size - 1})"
        )
    if sub.on_dependency_failure not in POLICIES:
        raise InvalidRequest(f"{where}: on_dependency_failure must be one of {POLICIES}")
