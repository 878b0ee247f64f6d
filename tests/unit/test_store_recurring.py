"""Recurring schedules in the Store: the next instance, no pile-up, the end of a schedule, the
controls, restarts, and the TTL cascade to children.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from store_support import error, insert, ok, open_db, row, sub

from actors.store.db import StoreDB
from bus.clock import FakeClock, now_ms
from bus.errors import InvalidRequest
from bus.kinds import RecurSpec, ScheduleRow, Transition


def recurring(
    db: StoreDB, name: str = "sync", *, interval: float | None = 60.0, **fields: object
) -> int:
    spec = RecurSpec(interval, fields.pop("cron", None), fields.pop("max_executions", None))  # type: ignore[arg-type]
    [outcome] = db.submit([sub(name, recurring=spec, **fields)])  # type: ignore[arg-type]
    assert outcome.kind == "inserted" and outcome.id is not None
    return outcome.id


def run_once(db: StoreDB, clock: FakeClock) -> tuple[int, list[Transition]]:
    """Claim the one due instance and complete it; its id and the transitions."""
    [claimed], _ = db.claim_next(10)
    clock.advance(1.0)
    return claimed.id, db.finish([ok(claimed.id)])


def at(clock: FakeClock, when: datetime) -> None:
    clock.advance(when.timestamp() - clock.time())


def schedule(db: StoreDB) -> ScheduleRow:
    [only] = db.recurring_schedules()
    return only


def test_completion_inserts_the_next_instance_in_the_same_transaction(
    db: StoreDB, clock: FakeClock
) -> None:
    first = recurring(db, interval=60.0)
    ran, transitions = run_once(db, clock)
    assert ran == first
    done = now_ms(clock)
    assert [t.result for t in transitions] == ["completed", "recurring"]
    assert transitions[1].execution_count == 1 and transitions[1].next_run_ms == done + 60_000
    [nxt] = db.list_tasks("scheduled")
    assert nxt.id != first and nxt.key == db.history(1)[0].key and nxt.due_at_ms == done + 60_000
    info = schedule(db)
    assert (info.id, info.execution_count, info.next_run_ms, info.paused) == (
        first,
        1,
        done + 60_000,
        False,
    )
    assert db.claim_next(10)[0] == []  # not due yet
    clock.advance(60.0)
    ran, transitions = run_once(db, clock)
    assert ran == nxt.id and transitions[1].execution_count == 2


def test_a_schedule_stops_after_max_executions(db: StoreDB, clock: FakeClock) -> None:
    recurring(db, interval=1.0, max_executions=2)
    _, t1 = run_once(db, clock)
    clock.advance(1.0)
    _, t2 = run_once(db, clock)
    assert t1[-1].next_run_ms is not None
    assert (t2[-1].execution_count, t2[-1].next_run_ms) == (2, None)
    assert db.recurring_schedules() == [] and db.counts().scheduled == 0
    assert len(db.history(10, status="completed")) == 2


def test_no_pile_up_while_a_task_of_the_key_is_pending(db: StoreDB, clock: FakeClock) -> None:
    first = recurring(db, "sync", interval=60.0)
    db.claim([first])
    # The same key submitted while the instance runs: marked to run again when it completes.
    assert db.submit([sub("sync")])[0].kind == "requeued"
    clock.advance(1.0)
    transitions = db.finish([ok(first)])
    assert [t.result for t in transitions] == ["requeued", "recurring"]
    assert transitions[-1].next_run_ms is not None  # the requeued run is the next one
    assert db.counts().pending == 1 and db.counts().scheduled == 0  # no second instance
    clock.advance(1.0)
    ran, transitions = run_once(db, clock)
    assert ran == first and transitions[-1].execution_count == 2
    assert db.counts().scheduled == 1  # the schedule goes on after the requeued run


@pytest.mark.parametrize("how", ["failed", "dead_letter", "cancelled", "expired"])
def test_an_instance_that_does_not_complete_ends_its_schedule(
    db: StoreDB, clock: FakeClock, how: str
) -> None:
    first = recurring(db, interval=1.0, max_retries=0, ttl_s=5.0)
    if how == "expired":
        clock.advance(6.0)
        assert [t.result for t in db.expire()] == ["expired"]
    else:
        db.claim([first])
        if how == "cancelled":
            db.cancel(first)
        else:
            db.finish([error(first, retryable=how == "dead_letter")])
    assert db.history(1)[0].status == how
    assert db.recurring_schedules() == [] and db.counts().scheduled == 0


def test_a_retry_keeps_the_schedule(db: StoreDB, clock: FakeClock) -> None:
    first = recurring(db, interval=1.0)
    db.claim([first])
    db.finish([error(first, retryable=True)])
    assert len(db.recurring_schedules()) == 1
    clock.advance(1.0)
    _, transitions = run_once(db, clock)
    assert transitions[-1].result == "recurring"


def test_pause_lets_the_instance_run_and_resume_inserts_the_next(
    db: StoreDB, clock: FakeClock
) -> None:
    first = recurring(db, interval=30.0)
    assert db.pause_recurring(first)
    assert schedule(db).paused
    _, transitions = run_once(db, clock)  # the instance already there still runs
    assert (transitions[-1].execution_count, transitions[-1].next_run_ms) == (1, None)
    assert db.counts().scheduled == 0 and db.counts().pending == 0
    clock.advance(10.0)
    [outcome] = db.resume_recurring(first)
    assert outcome.kind == "inserted"
    [nxt] = db.list_tasks("scheduled")  # due when it would have been: completion + 30 s
    assert nxt.due_at_ms == now_ms(clock) + 20_000
    assert db.resume_recurring(first)[0].kind == "duplicate"  # one instance, never two
    assert db.counts().scheduled == 1
    clock.advance(100.0)
    assert db.pause_recurring(nxt.id)  # a later instance's id names the schedule too
    assert db.resume_recurring(nxt.id)[0].kind == "duplicate"


def test_resume_after_the_due_time_inserts_a_task_due_at_once(
    db: StoreDB, clock: FakeClock
) -> None:
    first = recurring(db, interval=5.0)
    db.pause_recurring(first)
    run_once(db, clock)
    clock.advance(60.0)
    [outcome] = db.resume_recurring(first)
    assert outcome.kind == "inserted" and row(db, outcome.id or 0).status == "pending"


def test_cancel_recurring_cancels_the_instance_and_ends_the_schedule(
    db: StoreDB, clock: FakeClock
) -> None:
    first = recurring(db, interval=5.0)
    run_once(db, clock)
    [nxt] = db.list_tasks("scheduled")
    transitions = db.cancel(first, recurring_too=True)
    assert [t.result for t in transitions] == ["cancelled", "schedule_cancelled"]
    assert transitions[0].id == nxt.id
    assert db.recurring_schedules() == [] and db.get_task(nxt.id) is None
    assert db.cancel(first, recurring_too=True) == []
    # A task that is no instance of a schedule: cancel_recurring leaves it alone.
    [plain] = insert(db, "plain")
    assert db.cancel(plain, recurring_too=True) == [] and db.get_task(plain) is not None


def test_a_paused_schedule_without_an_instance_can_be_cancelled(
    db: StoreDB, clock: FakeClock
) -> None:
    first = recurring(db, interval=5.0)
    db.pause_recurring(first)
    run_once(db, clock)
    assert [t.result for t in db.cancel(first, recurring_too=True)] == ["schedule_cancelled"]
    assert db.recurring_schedules() == []


def test_a_key_keeps_one_schedule(db: StoreDB, clock: FakeClock) -> None:
    first = recurring(db, interval=5.0)
    again = db.submit([sub("sync", recurring=RecurSpec(5.0))])
    assert again[0].kind == "duplicate"
    # Paused, with no instance: the submission's task becomes the schedule's instance.
    db.pause_recurring(first)
    run_once(db, clock)
    [outcome] = db.submit([sub("sync", recurring=RecurSpec(5.0))])
    assert outcome.kind == "inserted"
    assert len(db.recurring_schedules()) == 1
    db.resume_recurring(first)
    run_once(db, clock)
    assert schedule(db).execution_count == 2 and db.counts().scheduled == 1


def test_cron_runs_at_the_next_matching_minute(db: StoreDB, clock: FakeClock) -> None:
    at(clock, datetime(2027, 1, 1, 10, 2, 30, tzinfo=UTC))
    recurring(db, interval=None, cron="*/5 * * * *")
    [first] = db.list_tasks("scheduled")
    assert first.due_at_ms == datetime(2027, 1, 1, 10, 5, tzinfo=UTC).timestamp() * 1000
    at(clock, datetime(2027, 1, 1, 10, 5, 0, tzinfo=UTC))
    _, transitions = run_once(db, clock)
    assert (
        transitions[-1].next_run_ms == datetime(2027, 1, 1, 10, 10, tzinfo=UTC).timestamp() * 1000
    )
    assert schedule(db).cron == "*/5 * * * *" and schedule(db).interval_s is None


def test_run_after_sets_a_cron_tasks_first_run(db: StoreDB, clock: FakeClock) -> None:
    due = now_ms(clock) + 1_000
    recurring(db, interval=None, cron="0 0 1 1 *", due_at_ms=due)
    assert db.list_tasks("scheduled")[0].due_at_ms == due


@pytest.mark.parametrize(
    ("spec", "parent", "message"),
    [
        (RecurSpec(None, None), None, "an interval or a cron"),
        (RecurSpec(1.0, "* * * * *"), None, "an interval or a cron"),
        (RecurSpec(0.0), None, "positive number"),
        (RecurSpec(None, "61 * * * *"), None, "invalid cron"),
        (RecurSpec(1.0, None, 0), None, "max_executions"),
        (RecurSpec(1.0), 1, "cannot have a parent"),
    ],
)
def test_bad_schedules_are_refused_and_change_nothing(
    db: StoreDB, spec: RecurSpec, parent: int | None, message: str
) -> None:
    insert(db, "p")
    with pytest.raises(InvalidRequest, match=message):
        db.submit([sub("sync", recurring=spec, parent_id=parent)])
    assert db.recurring_schedules() == [] and db.counts().pending == 1


def test_a_schedule_survives_a_restart_and_is_not_doubled(tmp_path: Path, clock: FakeClock) -> None:
    db = open_db(tmp_path, clock)
    first = recurring(db, interval=1.0)
    db.claim([first])
    db.close()  # a crash mid-run: the instance is running in the file
    db = open_db(tmp_path, clock)  # recovery puts it back in the queue
    assert len(db.recurring_schedules()) == 1 and db.counts().pending == 1
    _, transitions = run_once(db, clock)
    assert transitions[-1].execution_count == 1
    # The same result again (a Dispatcher resending after a lost reply) changes nothing.
    assert [t.result for t in db.finish([ok(first)])] == ["ignored"]
    db.close()
    db = open_db(tmp_path, clock)
    assert schedule(db).execution_count == 1 and db.counts().scheduled == 1
    db.close()


# -- TTL: children expire with their parent ---------------------------------------------------


def test_children_of_an_expired_parent_expire_with_it(db: StoreDB, clock: FakeClock) -> None:
    [parent] = insert(db, "parent", ttl_s=10.0)
    db.claim([parent])
    [child, later] = [
        o.id or 0
        for o in db.submit(
            [
                sub("child", parent_id=parent, ttl_s=3600.0),
                sub("later", parent_id=parent, ttl_s=3600.0, due_at_ms=now_ms(clock) + 60_000),
            ]
        )
    ]
    [running] = insert(db, "running-child", parent_id=parent, ttl_s=3600.0)
    db.claim([running])
    db.preempt([parent])  # paused: it may expire now
    clock.advance(11.0)
    transitions = db.expire()
    assert [(t.id, t.result) for t in transitions] == [
        (parent, "expired"),
        (child, "expired"),
        (later, "expired"),
    ]
    assert {h.task_id: h.status for h in db.history(10)} == {
        parent: "expired",
        child: "expired",
        later: "expired",
    }
    assert row(db, running).status == "running"  # a running task never expires
    assert [t.result for t in db.finish([ok(running)])] == ["completed"]


def test_a_task_left_by_an_ended_schedule_joins_a_new_one(db: StoreDB, clock: FakeClock) -> None:
    recurring(db, interval=5.0, max_executions=2)
    run_once(db, clock)
    clock.advance(5.0)
    [second], _ = db.claim_next(10)
    assert db.submit([sub("sync")])[0].kind == "requeued"
    db.finish([ok(second.id)])  # the last run: the schedule ends; the requeued run stays
    assert db.recurring_schedules() == []
    again = db.submit([sub("sync", recurring=RecurSpec(5.0))])
    assert again[0].kind == "duplicate"  # met the requeued task, which is now the instance
    ran, _ = run_once(db, clock)
    assert ran == second.id
    assert schedule(db).execution_count == 1 and db.counts().scheduled == 1
