"""A task's life in the Store: claim, finish, retry, requeue, preempt, resume, cancel, children.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import error, insert, ok, raw, row, run, sub, vm_steps

from actors.store.db import StoreDB
from bus.clock import FakeClock, now_ms
from bus.errors import DatabaseError, InvalidRequest
from bus.kinds import TaskResult, Transition


def results(transitions: list[Transition]) -> list[tuple[int, str]]:
    return [(t.id, t.result) for t in transitions]


# -- claim and peek ---------------------------------------------------------------------------


def test_peek_and_claim_follow_priority_then_id(db: StoreDB, clock: FakeClock) -> None:
    db.submit([sub("a", 128), sub("b", 64), sub("c", 128), sub("d", 0), sub("e", 64)])
    assert [r.label for r in db.peek(10)] == ["d", "b", "e", "a", "c"]
    assert [r.label for r in db.peek(2)] == ["d", "b"]
    claimed = db.claim([3, 1, 5, 2])
    assert [r.label for r in claimed] == ["b", "e", "a", "c"]
    assert {r.status for r in claimed} == {"running"}
    assert {r.started_at_ms for r in claimed} == {now_ms(clock)}


def test_claim_takes_only_rows_still_pending(db: StoreDB) -> None:
    [a, b] = insert(db, "a", "b", payload=b"p")
    assert [r.id for r in db.claim([a])] == [a]
    claimed = db.claim([a, b, 999], now_ms=1234)
    assert [(r.id, r.started_at_ms, r.payload) for r in claimed] == [(b, 1234, b"p")]
    assert db.counts().running == 2


def test_peek_leaves_payload_out_and_passes_over_full_groups(db: StoreDB) -> None:
    db.submit(
        [
            sub("a", 1, group_key="hot", payload=b"x"),
            sub("b", 2),
            sub("c", 3, group_key="cold"),
            sub("d", 4, group_key="hot"),
        ]
    )
    assert all(r.payload is None for r in db.peek(10))
    assert [r.label for r in db.peek(10)] == ["a", "b", "c", "d"]
    db.set_groups("configured", 0, {"hot": 0})  # 0 blocks the group
    assert [r.label for r in db.peek(10)] == ["b", "c"]
    db.set_groups("runtime", None, {"cold": 0})
    assert [r.label for r in db.peek(10)] == ["b"]
    db.set_groups("configured", 0, {"hot": 1}, replace=True)
    assert [r.label for r in db.peek(10)] == ["a", "b"]  # one of hot, none of cold
    with pytest.raises(InvalidRequest, match="group limit"):
        db.set_groups("configured", None, {"hot": -1})
    with pytest.raises(InvalidRequest, match="layer"):
        db.set_groups("mine", None, {"hot": 1})


def test_peek_and_claim_cost_does_not_grow_with_queue_depth(db: StoreDB) -> None:
    db.submit([sub(f"small-{i}", 100) for i in range(100)])
    small_peek = vm_steps(db, lambda: db.peek(10))
    small_claim = vm_steps(db, lambda: db.claim([1, 2, 3]))
    for chunk in range(20):
        db.submit([sub(f"big-{chunk}-{i}", 200) for i in range(1000)])
    big_peek = vm_steps(db, lambda: db.peek(10))
    big_claim = vm_steps(db, lambda: db.claim([4, 5, 6]))
    assert db.counts().pending > 20_000
    # 200x the rows: the same work, give or take B-tree depth.
    assert big_peek < small_peek * 1.5
    assert big_claim < small_claim * 1.5


def test_a_peek_stops_paying_for_a_full_groups_backlog(db: StoreDB) -> None:
    # A group at its limit with a backlog more urgent than everything else: the peek that skips
    # it (the Dispatcher's) steps over a bounded part of that backlog, then finds the rest
    # group by group.
    db.submit([sub(f"open-{i}", 150, group_key="open") for i in range(2)])
    db.submit([sub(f"free-{i}", 200) for i in range(10)])

    db.set_groups("configured", 0, {"full": 0})

    def peek() -> list[str]:
        return [r.label for r in db.peek(4)]

    for chunk in range(30):
        db.submit([sub(f"full-{chunk}-{i}", 10, group_key="full") for i in range(1000)])
        if chunk == 9:
            small = vm_steps(db, peek)
    big = vm_steps(db, peek)
    assert peek() == ["open-0", "open-1", "free-0", "free-1"]
    assert big < small * 1.2  # 3x the backlog: the same work


def test_a_peek_past_many_groups_still_skips_the_full_ones(db: StoreDB) -> None:
    # A backlog deeper than a peek steps over, and more groups than it looks at one by one:
    # it walks the grouped order to the end instead.
    for chunk in range(9):
        db.submit([sub(f"full-{chunk}-{i}", 10, group_key="full") for i in range(1000)])
    db.submit([sub(f"g{i}", 100 + i % 3, group_key=f"g{i:03}") for i in range(300)])
    db.set_groups("configured", 0, {"full": 0, "g000": 0})
    assert [r.label for r in db.peek(4)] == ["g3", "g6", "g9", "g12"]
    db.set_groups("configured", 0, {}, replace=True)
    assert [r.label for r in db.peek(2)] == ["full-0-0", "full-0-1"]


def test_finalize_ready_parents_come_first(db: StoreDB) -> None:
    [parent] = run(db, "parent", priority=200)
    [child] = insert(db, "child", priority=100, parent_id=parent)
    insert(db, "urgent", priority=0)
    db.claim([child])
    db.finish([ok(parent)])
    assert results(db.finish([ok(child)])) == [(child, "completed"), (parent, "finalize")]
    assert [r.label for r in db.peek(10)] == ["parent", "urgent"]
    claimed = db.claim([3, parent])
    assert [(r.label, r.phase) for r in claimed] == [("parent", "finalize"), ("urgent", "execute")]


# -- finish -----------------------------------------------------------------------------------


def test_ok_completes_into_history(db: StoreDB, clock: FakeClock) -> None:
    [task_id] = run(db, "a", payload=b"p", expected_read_bytes=7)
    started = now_ms(clock)
    clock.advance(2.5)
    transitions = db.finish([ok(task_id, read_bytes=10, write_bytes=20, net_rx_bytes=3)])
    assert [(t.result, t.label, t.was_running) for t in transitions] == [("completed", "a", True)]
    assert db.get_task(task_id) is None
    [h] = db.history()
    assert (h.task_id, h.status, h.payload, h.expected_read_bytes) == (
        task_id,
        "completed",
        b"p",
        7,
    )
    assert (h.actual_read_bytes, h.actual_write_bytes, h.actual_net_rx_bytes) == (10, 20, 3)
    assert (h.started_at_ms, h.completed_at_ms, h.duration_ms) == (
        started,
        started + 2500,
        2500,
    )


def test_duration_uses_the_reported_finish_time(db: StoreDB, clock: FakeClock) -> None:
    [task_id] = run(db, "a")
    db.finish([ok(task_id, finished_at_ms=now_ms(clock) + 750)])
    assert db.history()[0].duration_ms == 750


def test_retryable_error_retries_until_max_then_is_dead_lettered(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    for attempt in range(1, 4):
        [t] = db.finish([error(task_id, f"flaky {attempt}", retryable=True)], max_retries=3)
        assert (t.result, t.error) == ("retry", f"flaky {attempt}")
        r = row(db, task_id)
        assert (r.status, r.retry_count, r.last_error, r.started_at_ms) == (
            "pending",
            attempt,
            f"flaky {attempt}",
            None,
        )
        db.claim([task_id])
    [t] = db.finish([error(task_id, "flaky 4", retryable=True)], max_retries=3)
    assert (t.result, t.retry_count) == ("dead_letter", 3)
    [h] = db.history()
    assert (h.status, h.last_error, h.retry_count) == ("dead_letter", "flaky 4", 3)
    assert db.get_task(task_id) is None


def test_permanent_error_fails_at_once(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    [t] = db.finish([error(task_id, "bad input")])
    assert (t.result, t.error, t.was_running) == ("failed", "bad input", True)
    assert db.history()[0].status == "failed"
    assert db.counts().running == 0


def test_retry_keeps_place_in_queue(db: StoreDB) -> None:
    [first] = run(db, "first", priority=100)
    insert(db, "second", priority=100)
    db.finish([error(first, "again", retryable=True)])
    assert [r.label for r in db.peek(5)] == ["first", "second"]


def test_requeued_task_completes_then_returns_pending(db: StoreDB) -> None:
    [task_id] = run(db, "a", priority=128)
    db.finish([error(task_id, "x", retryable=True)])
    db.claim([task_id])
    assert db.submit([sub("a", 30)])[0].kind == "requeued"
    [t] = db.finish([ok(task_id)])
    assert (t.result, t.priority) == ("requeued", 30)
    r = row(db, task_id)
    assert (r.status, r.priority, r.retry_count, r.requeue, r.requeue_priority) == (
        "pending",
        30,
        0,
        False,
        None,
    )
    assert r.started_at_ms is None and r.phase == "execute"
    assert [h.status for h in db.history()] == ["completed"]


def test_permanent_failure_drops_the_requeue_mark(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    db.submit([sub("a", 10)])
    assert results(db.finish([error(task_id, "broken")])) == [(task_id, "failed")]
    assert db.get_task(task_id) is None


def test_preempted_victim_returning_normally_completes(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    [paused] = db.preempt([task_id])
    assert (paused.status, paused.started_at_ms) == ("paused", None)
    assert results(db.finish([ok(task_id)])) == [(task_id, "completed")]
    assert db.history()[0].status == "completed"


def test_preempted_victim_raising_is_not_failed(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    db.preempt([task_id])
    assert results(db.finish([error(task_id, "cancelled by preemption")])) == [(task_id, "ignored")]
    r = row(db, task_id)
    assert (r.status, r.retry_count, r.last_error) == ("paused", 0, None)
    assert db.history() == []


@pytest.mark.parametrize(
    "result",
    [TaskResult(1, "cancelled"), TaskResult(999, "ok"), TaskResult(999, "error", "x")],
)
def test_stale_or_cancelled_results_are_ignored(db: StoreDB, result: TaskResult) -> None:
    run(db, "a")
    assert results(db.finish([result])) == [(result.id, "ignored")]
    assert row(db, 1).status == "running"
    assert db.history() == []


def test_result_for_a_pending_row_is_ignored(db: StoreDB) -> None:
    [task_id] = insert(db, "a")
    assert results(db.finish([ok(task_id)])) == [(task_id, "ignored")]
    assert row(db, task_id).status == "pending"


# -- preempt, resume, release -----------------------------------------------------------------


def test_preempt_pauses_only_running_rows(db: StoreDB) -> None:
    [running] = run(db, "a")
    db.finish([error(running, "x", retryable=True)])
    db.claim([running])
    [pending] = insert(db, "b")
    paused = db.preempt([running, pending])
    assert [(r.id, r.status, r.retry_count) for r in paused] == [(running, "paused", 1)]
    assert row(db, pending).status == "pending"


def test_nothing_less_urgent_starts_while_a_preemptor_runs(db: StoreDB) -> None:
    [low, equal] = run(db, "low", "equal", priority=128)
    db.preempt([low, equal])
    [urgent] = run(db, "urgent", priority=0)
    [pending] = insert(db, "pending", priority=64)
    assert db.claim_next(5, preempt_priority=0) == ([], True)  # held, pending or paused
    assert row(db, low).status == "paused"
    db.submit([sub("equal", 0)])  # paused at 128 → upgraded to 0, as urgent as the runner
    claimed, _ = db.claim_next(5, preempt_priority=0)
    assert [r.id for r in claimed] == [equal]
    db.finish([ok(urgent), ok(equal)])
    claimed, _ = db.claim_next(5, preempt_priority=0)
    assert [r.id for r in claimed] == [pending, low]  # by priority once no preemptor runs


def test_running_tasks_below_the_threshold_hold_nothing_back(db: StoreDB) -> None:
    [victim] = run(db, "victim", priority=200)
    db.preempt([victim])
    run(db, "busy", priority=10)
    claimed, _ = db.claim_next(1, preempt_priority=0)
    assert [r.id for r in claimed] == [victim]


def test_a_paused_task_starts_before_a_pending_one_of_the_same_priority(db: StoreDB) -> None:
    [first] = insert(db, "first", priority=128)
    [paused] = run(db, "paused", priority=128)
    db.preempt([paused])
    claimed, _ = db.claim_next(1, preempt_priority=0)
    assert [r.id for r in claimed] == [paused]  # though ``first`` has the smaller id
    assert row(db, first).status == "pending"


def test_release_returns_running_rows_with_a_retry_counted(db: StoreDB) -> None:
    [a, b] = run(db, "a", "b")
    [c] = insert(db, "c")
    transitions = db.release([a, c])
    assert results(transitions) == [(a, "retry"), (c, "ignored")]
    assert transitions[0].error == "executor host lost"
    r = row(db, a)
    assert (r.status, r.retry_count, r.last_error, r.started_at_ms) == (
        "pending",
        1,
        "executor host lost",
        None,
    )
    assert row(db, b).status == "running"


def test_release_dead_letters_a_task_that_used_its_retries(db: StoreDB) -> None:
    # A task that keeps losing its host (crashing it, say) cannot loop forever.
    [a] = run(db, "a")
    for _ in range(3):
        assert results(db.release([a], "host died", max_retries=3)) == [(a, "retry")]
        db.claim([a])
    assert results(db.release([a], "host died", max_retries=3)) == [(a, "dead_letter")]
    assert (db.history()[0].status, db.history()[0].last_error) == ("dead_letter", "host died")


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_writes_cancelled_history(db: StoreDB) -> None:
    [running] = run(db, "running")
    [pending] = insert(db, "pending")
    [t] = db.cancel(running)
    assert (t.result, t.was_running) == ("cancelled", True)
    [t] = db.cancel(pending)
    assert (t.result, t.was_running) == ("cancelled", False)
    assert db.cancel(pending) == []
    assert db.cancel(12345) == []
    assert sorted((h.task_id, h.status) for h in db.history()) == [
        (running, "cancelled"),
        (pending, "cancelled"),
    ]
    assert db.counts() == db.counts().__class__(0, 0, 0, 0)


def test_cancel_cascades_to_children_first(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child_a, child_b] = insert(db, "child-a", "child-b", parent_id=parent)
    db.claim([child_a])
    [grandchild] = insert(db, "grandchild", parent_id=child_a)
    transitions = db.cancel(parent)
    assert results(transitions) == [
        (grandchild, "cancelled"),
        (child_a, "cancelled"),
        (child_b, "cancelled"),
        (parent, "cancelled"),
    ]
    assert [t.was_running for t in transitions] == [False, True, False, True]
    assert len(db.history(status="cancelled")) == 4
    assert db.counts().pending + db.counts().running == 0


# -- children and finalize --------------------------------------------------------------------


def test_parent_waits_for_children_then_finalizes(db: StoreDB, clock: FakeClock) -> None:
    [parent] = run(db, "parent")
    started = now_ms(clock)
    [c1, c2] = insert(db, "c1", "c2", parent_id=parent)
    db.claim([c1, c2])
    [t] = db.finish([ok(parent, read_bytes=100)])
    assert (t.result, t.children_count) == ("waiting", 2)
    assert row(db, parent).status == "waiting"
    assert results(db.finish([ok(c1)])) == [(c1, "completed")]
    assert row(db, parent).status == "waiting"
    assert results(db.finish([ok(c2)])) == [(c2, "completed"), (parent, "finalize")]
    r = row(db, parent)
    assert (r.status, r.phase) == ("pending", "finalize")
    db.claim([parent])
    clock.advance(3)
    assert results(db.finish([ok(parent, read_bytes=5, phase="finalize")])) == [
        (parent, "completed")
    ]
    h = db.history(task_type="t", key=r.key)[0]
    assert (h.status, h.actual_read_bytes, h.started_at_ms) == ("completed", 105, started)
    assert h.duration_ms == 3000


def test_children_finished_before_the_parent_returned(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child] = insert(db, "child", parent_id=parent)
    db.claim([child])
    db.finish([ok(child)])
    assert results(db.finish([ok(parent)])) == [(parent, "finalize")]
    assert row(db, parent).phase == "finalize"


def test_task_without_children_never_waits(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    assert results(db.finish([ok(task_id)])) == [(task_id, "completed")]


def test_fail_fast_cancels_siblings_and_fails_the_parent(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [c1, c2, c3] = insert(db, "c1", "c2", "c3", parent_id=parent)
    db.claim([c1, c2])
    db.finish([ok(parent)])
    transitions = db.finish([error(c1, "disk on fire")])
    assert results(transitions) == [
        (c1, "failed"),
        (c2, "cancelled"),
        (c3, "cancelled"),
        (parent, "failed"),
    ]
    assert [t.was_running for t in transitions] == [True, True, False, False]
    assert transitions[-1].error == f"child task {c1} failed: disk on fire"
    assert db.counts() == db.counts().__class__(0, 0, 0, 0)
    statuses = {h.task_id: h.status for h in db.history()}
    assert statuses == {c1: "failed", c2: "cancelled", c3: "cancelled", parent: "failed"}


def test_fail_fast_fails_a_parent_that_is_still_running(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child] = run(db, "child", parent_id=parent)
    transitions = db.finish([error(child, "nope")])
    assert results(transitions) == [(child, "failed"), (parent, "failed")]
    assert transitions[-1].was_running is True
    assert results(db.finish([ok(parent)])) == [(parent, "ignored")]


def test_without_fail_fast_the_parent_fails_with_the_count(db: StoreDB) -> None:
    [parent] = run(db, "parent", fail_fast=False)
    [c1, c2, c3] = run(db, "c1", "c2", "c3", parent_id=parent)
    db.finish([ok(parent)])
    assert results(db.finish([error(c1, "x"), error(c2, "y")])) == [(c1, "failed"), (c2, "failed")]
    assert row(db, parent).status == "waiting"
    transitions = db.finish([ok(c3)])
    assert results(transitions) == [(c3, "completed"), (parent, "failed")]
    assert transitions[-1].error == "2 child task(s) failed"
    assert db.history(status="failed", limit=1)[0].last_error == "2 child task(s) failed"


def test_child_retries_do_not_affect_the_parent(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child] = run(db, "child", parent_id=parent)
    db.finish([ok(parent)])
    assert results(db.finish([error(child, "flaky", retryable=True)])) == [(child, "retry")]
    assert row(db, parent).status == "waiting"
    db.claim([child])
    assert results(db.finish([ok(child)])) == [(child, "completed"), (parent, "finalize")]


def test_cancelled_child_lets_the_parent_finalize(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [c1, c2] = insert(db, "c1", "c2", parent_id=parent)
    db.finish([ok(parent)])
    db.cancel(c1)
    assert results(db.cancel(c2)) == [(c2, "cancelled"), (parent, "finalize")]


def test_finalize_error_follows_the_retry_rules(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child] = run(db, "child", parent_id=parent)
    db.finish([ok(parent)])
    db.finish([ok(child)])
    db.claim([parent])
    assert results(db.finish([error(parent, "later", retryable=True)])) == [(parent, "retry")]
    r = row(db, parent)
    assert (r.status, r.phase, r.retry_count) == ("pending", "finalize", 1)
    db.claim([parent])
    assert results(db.finish([error(parent, "fatal")])) == [(parent, "failed")]


def test_a_failed_parent_tells_its_own_parent(db: StoreDB) -> None:
    [top] = run(db, "top")
    [middle] = run(db, "middle", parent_id=top)
    [leaf] = run(db, "leaf", parent_id=middle)
    db.finish([ok(top), ok(middle)])
    transitions = db.finish([error(leaf, "deep")])
    assert results(transitions) == [(leaf, "failed"), (middle, "failed"), (top, "failed")]
    assert transitions[-1].error == f"child task {middle} failed: child task {leaf} failed: deep"


def test_claim_next_claims_in_queue_order_past_full_groups_and_stops_at_throttle(
    db: StoreDB,
) -> None:
    high = insert(db, "h1", "h2", priority=64)
    bg = insert(db, "b1", priority=192)
    [g1, g2] = insert(db, "g1", "g2", priority=128, group_key="bucket")
    insert(db, "n1", priority=130)
    db.set_groups("configured", 0, {"bucket": 1})
    claimed, exhausted = db.claim_next(2)
    assert [r.id for r in claimed] == high and not exhausted
    assert {r.status for r in claimed} == {"running"}
    # One of the group (its limit), then past it: the group never blocks what follows.
    claimed, exhausted = db.claim_next(2, max_priority=191)
    assert [r.label for r in claimed] == ["g1", "n1"] and not exhausted
    claimed, exhausted = db.claim_next(5, max_priority=191)
    assert claimed == [] and exhausted  # held by the throttle floor and the full group
    claimed, exhausted = db.claim_next(5)
    assert [r.id for r in claimed] == bg and exhausted
    db.finish([ok(g1)])  # the group's slot is free for the very next claim
    claimed, _ = db.claim_next(5)
    assert [r.id for r in claimed] == [g2]


def test_claim_next_respects_the_throttle_ceiling(db: StoreDB) -> None:
    insert(db, "n1", priority=128)
    insert(db, "b1", priority=192)
    claimed, _ = db.claim_next(5, max_priority=191)
    assert [r.label for r in claimed] == ["n1"]
    assert db.counts().pending == 1


@pytest.mark.parametrize(
    "too_big", [{"read_bytes": 2**63}, {"net_tx_bytes": 2**64 - 1}, {"finished_at_ms": 2**63}]
)
def test_a_result_sqlite_cannot_hold_is_ignored_and_the_others_complete(
    db: StoreDB, too_big: dict[str, int]
) -> None:
    [bad, good] = run(db, "bad", "good")
    transitions = db.finish([ok(bad, **too_big), ok(good, read_bytes=7)])
    assert results(transitions) == [(bad, "ignored"), (good, "completed")]
    assert row(db, bad).status == "running"
    [done] = db.history(limit=10)
    assert (done.task_id, done.actual_read_bytes) == (good, 7)


@pytest.mark.parametrize("task_id", [2**63, 2**64 - 1, -(2**63) - 1])
def test_a_result_for_an_id_sqlite_cannot_hold_is_ignored_alone(db: StoreDB, task_id: int) -> None:
    # A host's garbage must not hold up every other completion of the batch.
    [good] = run(db, "good")
    transitions = db.finish([ok(task_id), ok(good)])
    assert results(transitions) == [(task_id, "ignored"), (good, "completed")]


def test_a_run_that_started_before_the_epoch_completes_without_overflow(db: StoreDB) -> None:
    [task_id] = insert(db, "old")
    [claimed] = db.claim([task_id], now_ms=-(2**63))  # only a crafted claim can do this
    assert claimed.id == task_id
    transitions = db.finish([ok(task_id)])
    assert results(transitions) == [(task_id, "ignored")]  # as before: the duration overflows
    assert row(db, task_id).status == "running"


def test_a_transaction_the_database_rolls_back_mid_finish_writes_nothing(
    db: StoreDB, tmp_path: Path
) -> None:
    # SQLite itself rolls the transaction back (as on a full disk or an I/O error) while the
    # first result is applied: the second must not then be committed on its own, outside the
    # transaction, while the caller is told the finish failed.
    [a, b] = run(db, "a", "b")
    other = raw(tmp_path)
    try:
        other.execute(
            f"CREATE TRIGGER fail_a BEFORE UPDATE ON tasks WHEN NEW.id = {a} "
            "BEGIN SELECT RAISE(ROLLBACK, 'simulated I/O error'); END"
        )
    finally:
        other.close()
    with pytest.raises(DatabaseError):
        db.finish([error(a, retryable=True), ok(b)])
    assert (row(db, a).status, row(db, b).status) == ("running", "running")
    assert db.history(limit=10) == []
