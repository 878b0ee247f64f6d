"""Task dependencies in the Store: blocked tasks, unblocking, the failure cascade, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.store.db import StoreDB
from bus.clock import FakeClock, now_ms
from bus.errors import (
    CyclicDependencyError,
    DependencyFailedError,
    InvalidDependencyError,
    InvalidRequest,
)
from bus.kinds import TaskResult
from bus.limits import MAX_DEPENDENCIES
from tests.store_support import key, ok, open_db, raw, sub, vm_steps


def _claim_all(db: StoreDB) -> list[int]:
    rows, _ = db.claim_next(100)
    return [r.id for r in rows]


def _submit_one(db: StoreDB, name: str, **fields: object) -> int:
    (outcome,) = db.submit([sub(name, **fields)])
    assert outcome.id is not None
    return outcome.id


def _status(db: StoreDB, task_id: int) -> str | None:
    row = db.get_task(task_id)
    return None if row is None else row.status


def _history_status(db: StoreDB, task_id: int) -> str:
    (row,) = db.result(task_id)
    return row.status


def test_a_dependent_is_blocked_until_its_dependency_completes(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    assert _status(db, b) == "blocked"
    assert db.counts().blocked == 1 and db.counts().pending == 1
    assert _claim_all(db) == [a]  # never b, while blocked
    assert db.dependencies(b) == [a] and db.dependencies(a, dependents=True) == [b]
    transitions = db.finish([ok(a)])
    assert [(t.id, t.result) for t in transitions] == [(a, "completed"), (b, "unblocked")]
    assert _status(db, b) == "pending" and db.counts().blocked == 0
    assert db.dependencies(b) == [] and db.dependencies(a, dependents=True) == []
    assert _claim_all(db) == [b]


def test_a_task_with_several_dependencies_waits_for_all(db: StoreDB) -> None:
    a, b = _submit_one(db, "a"), _submit_one(db, "b")
    c = _submit_one(db, "c", depends_on=[a, b, a])
    assert db.dependencies(c) == [a, b]
    _claim_all(db)
    assert [t.result for t in db.finish([ok(a)])] == ["completed"]
    assert _status(db, c) == "blocked"
    assert [t.result for t in db.finish([ok(b)])] == ["completed", "unblocked"]


def test_a_completed_dependency_is_already_satisfied(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    _claim_all(db)
    db.finish([ok(a)])
    b = _submit_one(db, "b", depends_on=[a])
    assert _status(db, b) == "pending" and db.dependencies(b) == []


@pytest.mark.parametrize("policy", ["cancel", "fail"])
def test_a_failed_dependency_refuses_the_submission(db: StoreDB, policy: str) -> None:
    a = _submit_one(db, "a")
    _claim_all(db)
    db.finish([TaskResult(a, "error", error="boom")])
    with pytest.raises(DependencyFailedError, match=f"dependency {a} already ended as failed"):
        db.submit([sub("b", depends_on=[a], on_dependency_failure=policy)])
    assert db.get_task(key=key("b")) is None


def test_a_failed_dependency_is_skipped_under_ignore(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    db.cancel(a)
    b = _submit_one(db, "b", depends_on=[a], on_dependency_failure="ignore")
    assert _status(db, b) == "pending"


def test_an_unknown_dependency_stores_nothing(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    with pytest.raises(InvalidDependencyError, match="dependency 999 is no task"):
        db.submit([sub("b"), sub("c", depends_on=[a, 999])])
    assert db.get_task(key=key("b")) is None and db.counts().pending == 1
    assert db.dependencies(a, dependents=True) == []


def test_too_many_dependencies_are_refused(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    with pytest.raises(InvalidRequest, match=f"at most {MAX_DEPENDENCIES}"):
        db.submit([sub("b", depends_on=[a] * 100_000)])
    assert db.get_task(key=key("b")) is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"depends_on": [0]}, "positive integer"),
        ({"depends_on": ["1"]}, "list of integers"),
        ({"depends_on_index": [5]}, "outside the batch"),
        ({"on_dependency_failure": "explode"}, "one of"),
    ],
)
def test_malformed_dependency_fields_are_refused(
    db: StoreDB, fields: dict[str, object], error: str
) -> None:
    with pytest.raises(InvalidRequest, match=error):
        db.submit([sub("b", **fields)])
    assert db.counts().pending == 0


def test_a_batch_names_its_own_members_by_position(db: StoreDB) -> None:
    outcomes = db.submit(
        [
            sub("load", depends_on_index=[1, 2]),
            sub("extract-1"),
            sub("extract-2", depends_on_index=[1]),
        ]
    )
    load, e1, e2 = (o.id for o in outcomes)
    assert load is not None and e1 is not None and e2 is not None
    assert db.dependencies(load) == [e1, e2] and db.dependencies(e2) == [e1]
    assert _claim_all(db) == [e1]
    assert [t.result for t in db.finish([ok(e1)])] == ["completed", "unblocked"]
    assert _claim_all(db) == [e2]
    db.finish([ok(e2)])
    assert _claim_all(db) == [load]


def test_a_member_that_is_a_duplicate_names_the_active_task(db: StoreDB) -> None:
    running = _submit_one(db, "extract")
    _claim_all(db)
    outcomes = db.submit([sub("extract"), sub("load", depends_on_index=[0])])
    assert outcomes[0].kind == "requeued"
    load = outcomes[1].id
    assert load is not None and db.dependencies(load) == [running]


def test_dependencies_of_a_submission_that_inserts_nothing_are_not_added(db: StoreDB) -> None:
    a, b = _submit_one(db, "a"), _submit_one(db, "b")
    (outcome,) = db.submit([sub("a", depends_on=[b])])
    assert outcome.kind == "duplicate"
    assert _status(db, a) == "pending" and db.dependencies(a) == []


@pytest.mark.parametrize(
    "batch",
    [
        [sub("a", depends_on_index=[0])],
        [sub("a", depends_on_index=[1]), sub("b", depends_on_index=[0])],
        [
            sub("a", depends_on_index=[2]),
            sub("b", depends_on_index=[0]),
            sub("c", depends_on_index=[1]),
        ],
    ],
)
def test_a_cycle_is_refused_and_nothing_stored(db: StoreDB, batch: list[object]) -> None:
    with pytest.raises(CyclicDependencyError, match="closes a cycle"):
        db.submit(batch)  # type: ignore[arg-type]
    assert db.counts().pending == 0 and db.counts().blocked == 0


def test_a_child_cannot_depend_on_its_parent(db: StoreDB) -> None:
    parent = _submit_one(db, "parent")
    _claim_all(db)
    with pytest.raises(CyclicDependencyError, match="parent or an ancestor"):
        db.submit([sub("child", parent_id=parent, depends_on=[parent])])


def test_a_failure_cascades_through_dependents_in_one_transaction(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    c = _submit_one(db, "c", depends_on=[b])
    ignoring = _submit_one(db, "d", depends_on=[b], on_dependency_failure="ignore")
    failing = _submit_one(db, "e", depends_on=[a], on_dependency_failure="fail")
    _claim_all(db)
    transitions = db.finish([TaskResult(a, "error", error="boom")])
    got = [(t.id, t.result, t.failed_dependency) for t in transitions]
    assert got == [
        (a, "failed", None),
        (b, "dependency_failed", a),
        (failing, "dependency_failed", a),
        (c, "dependency_failed", b),
        (ignoring, "unblocked", None),
    ]
    for task_id in (b, c, failing):
        (row,) = db.result(task_id)
        assert row.status == "dependency_failed"
    assert db.result(b)[0].last_error == f"dependency task {a} failed"
    assert _status(db, ignoring) == "pending" and db.counts().blocked == 0


def test_cancelling_a_dependency_fails_its_dependents(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    results = [(t.id, t.result) for t in db.cancel(a)]
    assert results == [(a, "cancelled"), (b, "dependency_failed")]


def test_cancelling_a_blocked_task_drops_its_edges(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    db.cancel(b)
    assert db.dependencies(a, dependents=True) == []
    _claim_all(db)
    assert [t.result for t in db.finish([ok(a)])] == ["completed"]


def test_expiry_of_a_dependency_fails_its_dependents(db: StoreDB, clock: FakeClock) -> None:
    a = _submit_one(db, "a", ttl_s=1.0)
    b = _submit_one(db, "b", depends_on=[a])
    clock.advance(2.0)
    results = [(t.id, t.result) for t in db.expire()]
    assert results == [(a, "expired"), (b, "dependency_failed")]


def test_a_blocked_task_expires(db: StoreDB, clock: FakeClock) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a], ttl_s=1.0)
    clock.advance(2.0)
    assert [(t.id, t.result) for t in db.expire()] == [(b, "expired")]
    assert db.dependencies(a, dependents=True) == []


def test_an_unblocked_task_not_due_yet_is_scheduled(db: StoreDB, clock: FakeClock) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a], due_at_ms=now_ms(clock) + 60_000)
    _claim_all(db)
    db.finish([ok(a)])
    assert _status(db, b) == "scheduled"


def test_a_duplicate_may_raise_a_blocked_tasks_priority(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    (outcome,) = db.submit([sub("b", 10)])
    assert (outcome.kind, outcome.id) == ("upgraded", b)
    assert db.list_tasks("blocked")[0].priority == 10


def test_recovery_drops_edges_to_vanished_tasks_and_unblocks(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path
    db = open_db(path, clock)
    a = _submit_one(db, "a")
    b = _submit_one(db, "b", depends_on=[a])
    db.close()
    conn = raw(path)
    conn.execute("DELETE FROM tasks WHERE id = ?", (a,))  # a task vanished behind our back
    conn.close()
    db = open_db(path, clock)
    try:
        assert [(t.id, t.result) for t in db.recovered] == [(b, "unblocked")]
        assert _status(db, b) == "pending" and db.dependencies(b) == []
    finally:
        db.close()


def _steps_per_unblock(db: StoreDB, unrelated: int) -> int:
    db.submit([sub(f"unrelated-{i}") for i in range(unrelated)])
    a = _submit_one(db, "dep", priority=0)
    dependents = [_submit_one(db, f"dependent-{i}", depends_on=[a]) for i in range(10)]
    (row,), _ = db.claim_next(1)
    assert row.id == a
    steps = vm_steps(db, lambda: db.finish([ok(a)]))
    assert all(_status(db, d) == "pending" for d in dependents)
    return steps


def test_unblocking_costs_the_same_however_many_other_tasks_exist(
    tmp_path: Path, clock: FakeClock
) -> None:
    base = tmp_path
    (base / "small").mkdir()
    (base / "large").mkdir()
    few, many = open_db(base / "small", clock), open_db(base / "large", clock)
    try:
        steps_few = _steps_per_unblock(few, 1_000)
        steps_many = _steps_per_unblock(many, 100_000)
    finally:
        few.close()
        many.close()
    assert steps_many <= steps_few * 1.2, (steps_few, steps_many)


def test_a_child_failed_for_its_dependency_fails_its_parent(db: StoreDB) -> None:
    parent = _submit_one(db, "parent")
    _claim_all(db)
    a = _submit_one(db, "a", parent_id=parent)
    b = _submit_one(db, "b", parent_id=parent, depends_on=[a])
    transitions = db.finish([ok(parent)])
    assert [t.result for t in transitions] == ["waiting"]
    _claim_all(db)
    transitions = db.finish([TaskResult(a, "error", error="boom")])
    # The parent fails for the first cause, and cancels its other children (fail-fast).
    assert [(t.id, t.result) for t in transitions] == [
        (a, "failed"),
        (b, "cancelled"),
        (parent, "failed"),
    ]
    assert db.result(parent)[0].last_error == f"child task {a} failed: boom"


def test_without_fail_fast_the_parent_counts_both_children(db: StoreDB) -> None:
    parent = _submit_one(db, "parent", fail_fast=False)
    _claim_all(db)
    a = _submit_one(db, "a", parent_id=parent)
    b = _submit_one(db, "b", parent_id=parent, depends_on=[a])
    db.finish([ok(parent)])
    _claim_all(db)
    transitions = db.finish([TaskResult(a, "error", error="boom")])
    assert [(t.id, t.result) for t in transitions] == [
        (a, "failed"),
        (b, "dependency_failed"),
        (parent, "failed"),
    ]
    assert db.result(parent)[0].last_error == "2 child task(s) failed"


def test_a_later_duplicate_in_the_batch_does_not_block_the_first(db: StoreDB) -> None:
    a = _submit_one(db, "a")
    first, later = db.submit([sub("x"), sub("x", depends_on=[a])])
    assert (first.kind, later.kind) == ("inserted", "duplicate")
    assert first.id is not None and _status(db, first.id) == "pending"
    assert db.counts().blocked == 0
