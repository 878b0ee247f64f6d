"""Submitting to the Store's database: dedup, the four outcomes, limits, all-or-nothing batches.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

import pytest
from store_support import insert, key, ok, open_db, row, run, sub

from actors.store.db import StoreDB
from actors.store.submit import validate
from bus.clock import FakeClock
from bus.errors import InvalidRequest, PayloadTooLarge
from bus.kinds import Outcome, Submission

MiB = 1_048_576


def kinds(outcomes: list[Outcome]) -> list[str]:
    return [o.kind for o in outcomes]


def test_insert_records_every_field(db: StoreDB, clock: FakeClock) -> None:
    s = sub(
        "a",
        64,
        payload=b"data",
        expected_read_bytes=1,
        expected_write_bytes=2,
        expected_net_rx_bytes=3,
        expected_net_tx_bytes=4,
        group_key="g",
        fail_fast=False,
    )
    [outcome] = db.submit([s])
    assert outcome == Outcome("inserted", 1, 64)
    r = row(db, 1)
    assert (r.task_type, r.key, r.label, r.priority, r.status) == (
        "t",
        key("a"),
        "a",
        64,
        "pending",
    )
    assert r.payload == b"data"
    assert (r.expected_read_bytes, r.expected_write_bytes) == (1, 2)
    assert (r.expected_net_rx_bytes, r.expected_net_tx_bytes) == (3, 4)
    assert (r.group_key, r.fail_fast, r.phase, r.retry_count) == ("g", False, "execute", 0)
    assert r.created_at_ms == int(clock.time() * 1000)
    assert r.started_at_ms is None and not r.requeue


def test_same_key_is_a_duplicate_and_nothing_is_replaced(db: StoreDB) -> None:
    insert(db, "a", payload=b"first", group_key="g1")
    again = Submission("other", key("a"), "new label", 128, b"second", 9, 9, 9, 9, "g2", False)
    assert db.submit([again]) == [Outcome("duplicate", None, 128)]
    r = row(db, 1)
    assert (r.task_type, r.label, r.payload, r.group_key) == ("t", "a", b"first", "g1")
    assert (r.expected_read_bytes, r.fail_fast) == (0, True)
    assert db.counts().pending == 1


def test_more_urgent_resubmission_upgrades_a_pending_task(db: StoreDB) -> None:
    insert(db, "a", priority=128)
    assert db.submit([sub("a", 128)]) == [Outcome("duplicate", None, 128)]
    assert db.submit([sub("a", 200)]) == [Outcome("duplicate", None, 200)]
    assert db.submit([sub("a", 10)]) == [Outcome("upgraded", 1, 10)]
    assert row(db, 1).priority == 10
    assert row(db, 1).status == "pending"


def test_running_task_is_marked_for_requeue_once_unless_more_urgent(db: StoreDB) -> None:
    run(db, "a", priority=128)
    assert db.submit([sub("a", 200)]) == [Outcome("requeued", 1, 200)]
    assert (row(db, 1).requeue, row(db, 1).requeue_priority) == (True, 200)
    # Not strictly more urgent than the mark: duplicate, mark unchanged.
    assert kinds(db.submit([sub("a", 200)])) == ["duplicate"]
    assert kinds(db.submit([sub("a", 250)])) == ["duplicate"]
    assert db.submit([sub("a", 50)]) == [Outcome("requeued", 1, 50)]
    r = row(db, 1)
    assert (r.status, r.priority, r.requeue_priority) == ("running", 128, 50)


def test_paused_task_upgrades_when_more_urgent_else_requeues(db: StoreDB) -> None:
    [task_id] = run(db, "a", priority=128)
    db.preempt([task_id])
    assert db.submit([sub("a", 100)]) == [Outcome("upgraded", 1, 100)]
    assert (row(db, 1).priority, row(db, 1).requeue) == (100, False)
    assert db.submit([sub("a", 100)]) == [Outcome("requeued", 1, 100)]
    assert kinds(db.submit([sub("a", 150)])) == ["duplicate"]


def test_waiting_parent_resubmitted_is_a_duplicate(db: StoreDB) -> None:
    [parent] = run(db, "p")
    insert(db, "c", parent_id=parent)
    db.finish([ok(parent)])
    assert row(db, parent).status == "waiting"
    assert kinds(db.submit([sub("p", 0)])) == ["duplicate"]
    assert row(db, parent).priority == 128


def test_completed_key_inserts_anew(db: StoreDB) -> None:
    [task_id] = run(db, "a")
    db.finish([ok(task_id)])
    [again] = db.submit([sub("a")])
    assert again.kind == "inserted" and again.id != task_id


def test_batch_applies_in_order_first_occurrence_wins(db: StoreDB) -> None:
    outcomes = db.submit(
        [
            sub("a", 128, payload=b"one"),
            sub("b", 128),
            sub("a", 128, payload=b"two"),
            sub("a", 64),
            sub("c", 5),
            sub("b", 200),
        ]
    )
    a, b, c = outcomes[0].id, outcomes[1].id, outcomes[4].id
    assert outcomes == [
        Outcome("inserted", a, 128),
        Outcome("inserted", b, 128),
        Outcome("duplicate", None, 128),
        Outcome("upgraded", a, 64),
        Outcome("inserted", c, 5),
        Outcome("duplicate", None, 200),
    ]
    # Ids increase in submission order (a submission whose key is taken may use one up).
    assert a is not None and b is not None and c is not None and a < b < c
    assert row(db, a).payload == b"one"


def test_a_big_batch_gives_what_the_same_submissions_one_by_one_give(
    tmp_path: Path, clock: FakeClock
) -> None:
    # New keys go in many rows per statement (64, then 8, then 1): across those chunks, with
    # keys repeated inside the batch (in one chunk and across chunks) and keys already active,
    # a batch must end as the same submissions sent one at a time do: the same outcomes, the
    # same rows.
    def scenario(db: StoreDB) -> list[Submission]:
        [running] = run(db, "running")
        insert(db, "pending", priority=100)
        db.claim([running])
        names = [f"k{i}" for i in range(137)]
        batch = [sub(n, 128, payload=n.encode()) for n in names]
        batch[70:70] = [sub("k3", 50), sub("pending", 10), sub("running", 20), sub("k200", 9)]
        batch[10:10] = [sub("k20", 40)]  # "k20" twice in one statement's rows
        batch += [sub("k3", 60), sub("k200", 1), sub("k71", 128), sub("running", 30)]
        return batch

    def state(db: StoreDB) -> list[tuple[object, ...]]:
        rows = db.list_tasks("pending", 1000) + db.list_tasks("running", 1000)
        return sorted((r.key, r.priority, r.status, r.payload, r.requeue) for r in rows)

    (tmp_path / "one").mkdir()
    (tmp_path / "batch").mkdir()
    one_by_one = open_db(tmp_path / "one", clock)
    batched = open_db(tmp_path / "batch", clock)
    try:
        singles = [
            db_outcome for s in scenario(one_by_one) for db_outcome in one_by_one.submit([s])
        ]
        batch = scenario(batched)
        together = batched.submit(batch)
        assert [(o.kind, o.priority) for o in together] == [(o.kind, o.priority) for o in singles]
        assert kinds(together).count("inserted") == 138
        assert state(batched) == state(one_by_one)
        ids = [o.id for o in together if o.kind == "inserted"]
        assert ids == sorted(ids)  # in submission order
        # Each outcome's id is its own submission's row (ids are read from the statements).
        named = [(s.key, o.id) for s, o in zip(batch, together, strict=True) if o.id]
        assert all(row(batched, task_id).key == k for k, task_id in named)
    finally:
        one_by_one.close()
        batched.close()


def test_payload_of_exactly_one_mib_is_accepted(db: StoreDB) -> None:
    [outcome] = db.submit([sub("big", payload=b"x" * MiB)])
    assert outcome.kind == "inserted"
    assert len(row(db, 1).payload or b"") == MiB


def test_payload_one_byte_over_is_rejected(db: StoreDB) -> None:
    with pytest.raises(PayloadTooLarge, match="1048577"):
        db.submit([sub("big", payload=b"x" * (MiB + 1))])
    assert db.counts().pending == 0


def test_batch_with_one_oversized_payload_is_rejected_whole(db: StoreDB) -> None:
    batch = [sub("a"), sub("b", payload=b"x" * (MiB + 1)), sub("c")]
    with pytest.raises(PayloadTooLarge):
        db.submit(batch)
    assert db.counts().pending == 0
    assert db.lookup(key("a")).location == "not_found"


@pytest.mark.parametrize("priority", [-1, 256, 1000])
def test_priority_out_of_range_is_invalid(db: StoreDB, priority: int) -> None:
    with pytest.raises(InvalidRequest, match="priority"):
        db.submit([sub("ok"), sub("bad", priority)])
    assert db.counts().pending == 0


@pytest.mark.parametrize("priority", [0, 255])
def test_priority_bounds_are_legal(db: StoreDB, priority: int) -> None:
    assert kinds(db.submit([sub("a", priority)])) == ["inserted"]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("task_type", "", "task_type"),
        ("task_type", "x" * 257, "task_type"),
        ("key", "ABC", "key"),
        ("key", key("a").upper(), "key"),
        ("key", key("a")[:63], "key"),
        ("key", key("a")[:62] + " 0", "key"),
        ("key", key("a")[:63] + "g", "key"),
        ("key", key("a")[:63] + "é", "key"),
        ("key", " " + key("a")[:63], "key"),
        ("priority", True, "priority"),
        ("expected_read_bytes", -1, "expected_read_bytes"),
        ("expected_net_tx_bytes", -5, "expected_net_tx_bytes"),
        ("parent_id", 0, "parent_id"),
        ("label", "x" * 1025, "label longer than 1024 characters"),
        ("group_key", "g" * 257, "group_key longer than 256 characters"),
    ],
)
def test_invalid_fields_reject_the_batch(
    db: StoreDB, field: str, value: object, match: str
) -> None:
    fields = {
        "task_type": "t",
        "key": key("bad"),
        "label": "bad",
        "priority": 128,
    }
    fields[field] = value
    bad = Submission(**fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=match):
        db.submit([sub("good"), bad])
    assert db.counts().pending == 0


def test_task_type_of_256_chars_is_accepted(db: StoreDB) -> None:
    assert kinds(db.submit([sub("a", task_type="x" * 256)])) == ["inserted"]


def test_a_label_and_a_group_at_their_limits_are_accepted(db: StoreDB) -> None:
    outcomes = db.submit([replace(sub("a"), label="é" * 1024, group_key="g" * 256)])
    assert kinds(outcomes) == ["inserted"]


def test_a_child_of_a_parent_that_does_not_exist_is_refused_and_nothing_stored(
    db: StoreDB,
) -> None:
    [parent] = run(db, "p")
    with pytest.raises(InvalidRequest, match="submission 1: parent task 999 does not exist"):
        db.submit([sub("c1", parent_id=parent), sub("c2", parent_id=999)])
    assert db.counts().pending == 0
    assert row(db, parent).status == "running"


def test_request_id_makes_a_retry_idempotent(db: StoreDB) -> None:
    first = db.submit([sub("a"), sub("b")], request_id="req-1")
    assert kinds(first) == ["inserted", "inserted"]
    # The same request again (a client retry) returns the same outcomes, applies nothing.
    again = db.submit([sub("a"), sub("b"), sub("c")], request_id="req-1")
    assert again == first
    assert db.counts().pending == 2
    # A different request id is a new request.
    assert kinds(db.submit([sub("a")], request_id="req-2")) == ["duplicate"]


def test_request_ids_are_forgotten_after_an_hour(db: StoreDB, clock: FakeClock) -> None:
    [task_id] = db.submit([sub("a")], request_id="req-1")
    assert task_id.id is not None
    db.cancel(task_id.id)
    clock.advance(3601)
    db.retention_tick()
    assert kinds(db.submit([sub("a")], request_id="req-1")) == ["inserted"]


def test_child_is_recorded_with_its_parent(db: StoreDB) -> None:
    [parent] = run(db, "p")
    [child] = insert(db, "c", parent_id=parent)
    assert row(db, child).parent_id == parent


def twin(name: str) -> Submission:
    """A submission whose key shares its first 8 bytes (what the Store indexes keys by) with
    ``key("a")``'s, and differs after them."""
    return Submission("t", key("a")[:16] + key(name)[16:], name, 128)


def test_keys_that_share_a_prefix_are_different_tasks(db: StoreDB) -> None:
    [a] = insert(db, "a")
    [b] = db.submit([twin("b")])
    assert (b.kind, b.id != a) == ("inserted", True)
    # In a batch of several rows, one statement's: each twin is its own task, once.
    batch = [sub(f"n{i}") for i in range(8)]
    batch[2:2] = [twin("c"), replace(twin("c"), priority=50), replace(twin("b"), priority=5)]
    outcomes = db.submit(batch)
    assert kinds(outcomes) == ["inserted"] * 3 + ["upgraded"] * 2 + ["inserted"] * 6
    c = outcomes[2].id
    assert outcomes[3] == Outcome("upgraded", c, 50) and outcomes[4] == Outcome("upgraded", b.id, 5)
    assert [db.lookup(s.key).task.id for s in (sub("a"), twin("b"), twin("c"))] == [a, b.id, c]
    # One leaves; the others stay, and a new twin is new.
    db.claim([a])
    db.finish([ok(a)])
    [d] = db.submit([twin("d")])
    assert d.kind == "inserted"
    assert [db.lookup(s.key).task.id for s in (twin("b"), twin("c"), twin("d"))] == [b.id, c, d.id]
    assert db.lookup(key("a")).location == "history"


FIELD_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 255, 256, 2**63 - 1, 2**63, 1.0, "", "t", "x" * 257,
    key("a"), key("a").upper(), b"", b"p", b"x" * (MiB + 1), [], {},
]  # fmt: skip


@pytest.mark.parametrize("field", [f.name for f in fields(Submission)])
def test_any_odd_field_value_is_taken_or_refused_with_a_clear_error(field: str) -> None:
    validate(sub("a"), 0)
    for value in FIELD_VALUES:
        candidate = replace(sub("a"), **{field: value})
        try:
            validate(candidate, 3)
        except (InvalidRequest, PayloadTooLarge) as exc:
            assert str(exc).startswith("submission 3: ")
