"""Time and failure in the Store: tasks due later, retry delays, dead letter, results.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import error, insert, ok, open_db, row, run, sub, vm_steps

from actors.store.db import StoreDB
from actors.store.retry import delay_s
from bus.clock import FakeClock, now_ms
from bus.errors import InvalidRequest
from bus.kinds import RetrySpec


def claim_labels(db: StoreDB, limit: int = 10) -> list[str]:
    return [r.label for r in db.claim_next(limit)[0]]


def test_a_task_due_later_waits_unseen_until_its_time(db: StoreDB, clock: FakeClock) -> None:
    due = now_ms(clock) + 30_000
    [later] = db.submit([sub("later", 0, due_at_ms=due)])
    insert(db, "now")
    assert row(db, later.id).status == "scheduled"
    assert db.counts().scheduled == 1 and db.counts().pending == 1
    assert claim_labels(db) == ["now"]  # the more urgent "later" is not due
    assert db.next_due() == due
    clock.advance(30.0)
    assert claim_labels(db) == ["later"]
    assert db.next_due() is None


def test_a_time_in_the_past_is_due_at_once(db: StoreDB, clock: FakeClock) -> None:
    db.submit([sub("past", due_at_ms=now_ms(clock) - 1)])
    assert claim_labels(db) == ["past"]


def test_a_claim_never_reads_the_tasks_scheduled_for_later(db: StoreDB, clock: FakeClock) -> None:
    insert(db, "ready")
    soon = now_ms(clock) + 3_600_000

    def claim_nothing() -> None:
        db.claim_next(4, max_priority=-1)  # walks and promotes; takes nothing

    few = vm_steps(db, claim_nothing)
    db.submit([sub(f"s{i}", due_at_ms=soon + i) for i in range(20_000)])
    many = vm_steps(db, claim_nothing)
    assert many < few * 1.5  # 20,000 tasks due within the hour: the same work


def test_a_retry_waits_out_its_policys_delay(db: StoreDB, clock: FakeClock) -> None:
    policy = RetrySpec("exponential", initial_s=2.0, multiplier=3.0, max_s=10.0, max_retries=5)
    [task] = db.submit([sub("flaky", retry=policy)])
    delays = []
    for _ in range(4):
        assert claim_labels(db) == ["flaky"]
        [t] = db.finish([error(task.id, "503", retryable=True)])
        assert t.result == "retry"
        delays.append(t.retry_after_s)
        assert row(db, task.id).status == "scheduled"
        assert claim_labels(db) == []
        clock.advance(t.retry_after_s or 0)
    assert delays == [2.0, 6.0, 10.0, 10.0]  # 2, 2·3, 2·9 capped at 10


def test_the_executors_retry_after_wins_over_the_policy(db: StoreDB, clock: FakeClock) -> None:
    [task_id] = run(db, "limited", retry=RetrySpec("constant", initial_s=1.0))
    [t] = db.finish([error(task_id, "429", retryable=True, retry_after_s=30.0)])
    assert t.retry_after_s == 30.0 and row(db, task_id).due_at_ms == now_ms(clock) + 30_000


def test_the_type_policy_then_the_default_apply(tmp_path: Path, clock: FakeClock) -> None:
    db = open_db(
        tmp_path,
        clock,
        retry_policies={"upload": RetrySpec("constant", initial_s=5.0, max_retries=1)},
        default_retry=RetrySpec("none"),
    )
    try:
        [upload, other] = run(db, "u", task_type="upload") + run(db, "o", task_type="other")
        [u, o] = db.finish([error(upload, "x", retryable=True), error(other, "x", retryable=True)])
        assert (u.result, u.retry_after_s) == ("retry", 5.0)
        assert o.result == "dead_letter"  # RetryPolicy.none(): no retries
        clock.advance(5.0)
        assert claim_labels(db) == ["u"]
        [u] = db.finish([error(upload, "x", retryable=True)])
        assert (u.result, u.retry_count) == ("dead_letter", 1)
        # A submission's own max_retries wins over its type's policy.
        [again] = db.submit([sub("u2", task_type="upload", max_retries=0)])
        db.claim([again.id])
        [u] = db.finish([error(again.id, "x", retryable=True)])
        assert u.result == "dead_letter"
    finally:
        db.close()


def test_a_permanent_failure_is_failed_not_dead_lettered(db: StoreDB) -> None:
    [task_id] = run(db, "bad")
    [t] = db.finish([error(task_id, "bad input")])
    assert t.result == "failed" and [h.status for h in db.history()] == ["failed"]


def test_a_dead_letter_is_listed_and_retried_by_hand(db: StoreDB) -> None:
    [task_id] = run(db, "dl", payload=b"data", group_key="g")
    db.finish([error(task_id, "gone", retryable=True)], max_retries=0)
    [dead] = db.history(status="dead_letter")
    [outcome] = db.retry_dead_letter(dead.id)
    assert outcome.kind == "inserted"
    again = row(db, outcome.id or 0)
    assert (again.payload, again.group_key, again.retry_count) == (b"data", "g", 0)
    assert db.history(status="dead_letter") == []
    with pytest.raises(InvalidRequest, match="no dead-letter task"):
        db.retry_dead_letter(dead.id)


def test_a_result_is_kept_in_history_and_found_by_task_id(db: StoreDB) -> None:
    [plain, requeued] = run(db, "plain", "requeued")
    assert db.result(plain) == []
    db.finish([ok(plain, result=b'{"n":1}')])
    [h] = db.result(plain)
    assert (h.status, h.result) == ("completed", b'{"n":1}')
    db.finish([error(requeued, "no", retryable=False)])
    assert db.result(requeued)[0].status == "failed"


@pytest.mark.parametrize(
    "bad",
    [
        {"due_at_ms": -5},
        {"timeout_s": 0.0},
        {"timeout_s": float("nan")},
        {"max_retries": -1},
        {"retry": RetrySpec("sometimes")},
        {"retry": RetrySpec("constant", initial_s=-1.0)},
        {"retry": RetrySpec("exponential", multiplier=0.5)},
    ],
)
def test_bad_time_and_retry_fields_are_refused_and_change_nothing(
    db: StoreDB, bad: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequest):
        db.submit([sub("ok"), sub("bad", **bad)])  # type: ignore[arg-type]
    assert db.counts().pending == 0 and db.counts().scheduled == 0


def test_policy_delays() -> None:
    def spec(strategy: str, **kw: float) -> RetrySpec:
        return RetrySpec(strategy, **kw)  # type: ignore[arg-type]

    assert [delay_s(spec("constant", initial_s=5), n) for n in range(3)] == [5, 5, 5]
    linear = spec("linear", initial_s=1, increment_s=2, max_s=6)
    assert [delay_s(linear, n) for n in range(5)] == [1, 3, 5, 6, 6]
    assert delay_s(spec("exponential", initial_s=1, max_s=300), 10_000) == 300
    steep = spec("exponential", initial_s=1, multiplier=1e6, max_s=60)
    assert delay_s(steep, 5_000) == 60  # the float overflows: the cap applies
    jitter = spec("exponential_jitter", initial_s=4, multiplier=2)
    assert delay_s(jitter, 1, uniform=lambda a, b: b) == 8
    assert delay_s(jitter, 1, uniform=lambda a, b: a) == 0
    assert delay_s(spec("none"), 3) == 0


def test_a_task_past_its_ttl_expires_at_the_claim_and_never_starts(
    db: StoreDB, clock: FakeClock
) -> None:
    [short] = db.submit([sub("short", 0, ttl_s=5.0)])
    [later] = db.submit([sub("later", 0, ttl_s=5.0, due_at_ms=now_ms(clock) + 60_000)])
    insert(db, "plain")
    clock.advance(6.0)
    [gone, scheduled] = db.expire()
    assert (gone.id, gone.result, gone.age_s) == (short.id, "expired", 6.0)
    assert scheduled.id == later.id  # not due yet, and past its TTL all the same
    assert claim_labels(db) == ["plain"]
    assert {h.status for h in db.history()} == {"expired"}


def test_a_running_task_never_expires(db: StoreDB, clock: FakeClock) -> None:
    [task_id] = run(db, "busy", ttl_s=1.0)
    clock.advance(5.0)
    assert db.expire() == []
    assert row(db, task_id).status == "running"


def test_a_ttl_from_the_first_attempt_starts_at_the_first_claim(
    db: StoreDB, clock: FakeClock
) -> None:
    [task] = db.submit([sub("t", ttl_s=10.0, ttl_from="first_attempt")])
    clock.advance(60.0)  # a minute in the queue: no TTL counted yet
    assert db.expire() == []
    assert claim_labels(db) == ["t"]
    assert row(db, task.id).expires_at_ms == now_ms(clock) + 10_000
    db.finish([error(task.id, "again", retryable=True)])
    clock.advance(11.0)  # its retry waited past the TTL counted from the first attempt
    [t] = db.expire()
    assert (t.id, t.result) == (task.id, "expired")


def test_a_child_inherits_its_parents_remaining_ttl(db: StoreDB, clock: FakeClock) -> None:
    [parent] = run(db, "parent", ttl_s=30.0)
    clock.advance(10.0)
    [child] = db.submit([sub("child", parent_id=parent)])
    assert row(db, child.id).expires_at_ms == row(db, parent).expires_at_ms
    [own] = db.submit([sub("own", parent_id=parent, ttl_s=100.0)])
    assert row(db, own.id).expires_at_ms == now_ms(clock) + 100_000


def test_a_types_ttl_or_the_default_applies_to_a_submission_without_one(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = open_db(tmp_path, clock, ttls={"short": 5.0}, default_ttl=60.0)
    try:
        [short, other, own] = db.submit(
            [sub("s", task_type="short"), sub("o", task_type="other"), sub("own", ttl_s=1.0)]
        )
        now = now_ms(clock)
        assert row(db, short.id).expires_at_ms == now + 5_000
        assert row(db, other.id).expires_at_ms == now + 60_000
        assert row(db, own.id).expires_at_ms == now + 1_000
    finally:
        db.close()


def test_the_limits_the_application_was_built_with_hold_from_the_first_claim(
    tmp_path: Path, clock: FakeClock
) -> None:
    # The GroupLimiter sets its policy when it starts; a claim that comes first must not find
    # the group unlimited.
    db = open_db(tmp_path, clock, group_limits=(0, {"g": 1}))
    try:
        insert(db, "g1", "g2", "g3", group_key="g")
        assert claim_labels(db) == ["g1"]
    finally:
        db.close()
