"""The Store's flow control: duplicate strategies (supersede, reject), tags and bulk cancel.

StoreDB called directly, on a file, with a fake clock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from actors.store.db import StoreDB
from actors.store.schema import SCHEMA_VERSION
from bus.clock import FakeClock
from bus.errors import InvalidRequest
from tests.store_support import error, insert, key, ok, open_db, raw, row, run, sub


@pytest.fixture
def db(tmp_path: Path) -> StoreDB:
    return open_db(tmp_path, FakeClock())


def history(db: StoreDB) -> list[tuple[int, str]]:
    return [(h.task_id, h.status) for h in reversed(db.history(100))]


# -- duplicate strategies -------------------------------------------------------------------


def test_reject_changes_nothing_when_the_key_is_taken(db: StoreDB) -> None:
    [first] = insert(db, "a", payload=b"one")
    [outcome] = db.submit([sub("a", 5, payload=b"two", on_duplicate="reject")])
    assert (outcome.kind, outcome.id) == ("rejected", None)
    assert (row(db, first).payload, row(db, first).priority) == (b"one", 128)
    # A free key is inserted whatever the strategy.
    [fresh] = db.submit([sub("b", on_duplicate="reject")])
    assert fresh.kind == "inserted"


def test_superseding_a_pending_task_replaces_it_in_place(db: StoreDB) -> None:
    before, target, after = insert(db, "before", "a", "after")
    db.submit([sub("a", 128, payload=b"old", on_duplicate="supersede")])
    outcomes, changes = db.submit_changes(
        [sub("a", 128, payload=b"new", group_key="g", tags={"v": "2"}, on_duplicate="supersede")]
    )
    assert [(o.kind, o.id, o.replaced_id) for o in outcomes] == [("superseded", target, target)]
    new = row(db, target)
    assert (new.payload, new.group_key, new.tags, new.status) == (
        b"new",
        "g",
        {"v": "2"},
        "pending",
    )
    # Same id: same place among equal priorities.
    assert [r.id for r in db.peek(10)] == [before, target, after]
    assert history(db) == [(target, "superseded"), (target, "superseded")]
    assert [(t.id, t.result, t.new_task_id) for t in changes] == [(target, "superseded", target)]


def test_superseding_resets_the_run_bookkeeping_and_a_paused_task_is_pending_again(
    db: StoreDB,
) -> None:
    [task] = run(db, "a")
    db.finish([error(task, "flaky", retryable=True)])
    db.claim([task])
    db.preempt([task])
    assert (row(db, task).status, row(db, task).retry_count) == ("paused", 1)
    [outcome] = db.submit([sub("a", 7, on_duplicate="supersede")])
    assert (outcome.kind, outcome.id) == ("superseded", task)
    new = row(db, task)
    assert (new.status, new.retry_count, new.last_error, new.priority) == ("pending", 0, None, 7)


def test_superseding_a_running_task_ends_it_and_inserts_the_new_version(db: StoreDB) -> None:
    [old] = run(db, "a", tags={"t": "1"})
    outcomes, changes = db.submit_changes([sub("a", payload=b"v2", on_duplicate="supersede")])
    [outcome] = outcomes
    assert outcome.kind == "superseded" and outcome.replaced_id == old
    assert outcome.id is not None and outcome.id > old
    assert db.get_task(old) is None
    assert (row(db, outcome.id).payload, row(db, outcome.id).status) == (b"v2", "pending")
    [change] = changes
    assert (change.id, change.result, change.was_running, change.new_task_id) == (
        old,
        "superseded",
        True,
        outcome.id,
    )
    assert change.tags == {"t": "1"}
    [h] = db.history()
    assert (h.task_id, h.status, h.tags) == (old, "superseded", {"t": "1"})
    # The old run's late result changes nothing.
    db.finish([ok(old)])
    assert row(db, outcome.id).status == "pending" and len(db.history()) == 1


def test_superseding_a_waiting_parent_cancels_its_children(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    kids = [o.id for o in db.submit([sub("k1", parent_id=parent), sub("k2", parent_id=parent)])]
    db.finish([ok(parent)])
    assert row(db, parent).status == "waiting"
    outcomes, changes = db.submit_changes([sub("parent", on_duplicate="supersede")])
    assert [(t.id, t.result) for t in changes] == [
        (kids[0], "cancelled"),
        (kids[1], "cancelled"),
        (parent, "superseded"),
    ]
    assert outcomes[0].id not in (parent, *kids)
    assert history(db) == [(kids[0], "cancelled"), (kids[1], "cancelled"), (parent, "superseded")]


def test_superseding_a_running_child_finishes_its_waiting_parent(db: StoreDB) -> None:
    [parent] = run(db, "parent")
    [child] = [o.id for o in db.submit([sub("child", parent_id=parent)])]
    db.finish([ok(parent)])
    assert child is not None
    db.claim([child])
    _, changes = db.submit_changes([sub("child", on_duplicate="supersede")])
    # The new version has no parent: the parent's last child is gone, so it is finalized.
    assert [t.result for t in changes] == ["superseded", "finalize"]
    assert (row(db, parent).status, row(db, parent).phase) == ("pending", "finalize")


def test_in_a_batch_a_supersede_applies_after_the_earlier_submission_of_its_key(
    db: StoreDB,
) -> None:
    outcomes = db.submit([sub("a", payload=b"1"), sub("a", payload=b"2", on_duplicate="supersede")])
    assert [o.kind for o in outcomes] == ["inserted", "superseded"]
    assert outcomes[0].id == outcomes[1].id
    assert row(db, outcomes[0].id or 0).payload == b"2"


def test_an_unknown_strategy_is_refused_and_nothing_is_stored(db: StoreDB) -> None:
    with pytest.raises(InvalidRequest, match="on_duplicate must be one of"):
        db.submit([sub("fine"), sub("b", on_duplicate="replace")])
    assert db.counts().pending == 0


def test_a_retried_request_gets_its_superseded_outcome_again(db: StoreDB) -> None:
    [old] = run(db, "a")
    first = db.submit([sub("a", on_duplicate="supersede")], request_id="r")
    again = db.submit([sub("a", on_duplicate="supersede")], request_id="r")
    assert again == first and first[0].replaced_id == old


# -- tags -----------------------------------------------------------------------------------


def test_tags_are_stored_listed_and_copied_to_history(db: StoreDB) -> None:
    a, b = insert(db, "a", "b", tags={"tenant": "acme", "env": "prod"})
    [c] = insert(db, "c", tags={"tenant": "other"})
    [plain] = insert(db, "plain")
    assert row(db, a).tags == {"env": "prod", "tenant": "acme"} and row(db, plain).tags is None
    assert db.task_ids_by_tags({"tenant": "acme"}) == [a, b]
    assert db.task_ids_by_tags({"tenant": "acme", "env": "prod"}) == [a, b]
    assert db.task_ids_by_tags({"tenant": "acme", "env": "dev"}) == []
    assert db.count_by_tag("tenant") == [("acme", 2), ("other", 1)]
    db.claim([a])
    assert db.task_ids_by_tags({"tenant": "acme"}, status="running") == [a]
    assert db.task_ids_by_tags({"tenant": "acme"}, status="pending") == [b]
    db.finish([ok(a)])
    assert db.task_ids_by_tags({"tenant": "acme"}) == [b]  # only active tasks
    [h] = db.history()
    assert (h.task_id, h.tags) == (a, {"env": "prod", "tenant": "acme"})
    assert c and plain


def test_children_inherit_their_parents_tags_and_their_own_win(db: StoreDB) -> None:
    [parent] = run(db, "parent", tags={"tenant": "acme", "env": "prod"})
    [child] = [o.id for o in db.submit([sub("child", parent_id=parent, tags={"env": "dev"})])]
    assert child is not None
    assert row(db, child).tags == {"tenant": "acme", "env": "dev"}
    assert db.task_ids_by_tags({"tenant": "acme"}) == [parent, child]


def test_superseding_replaces_the_tags_and_the_index(db: StoreDB) -> None:
    [task] = insert(db, "a", tags={"v": "1"})
    db.submit([sub("a", tags={"w": "2"}, on_duplicate="supersede")])
    assert db.task_ids_by_tags({"v": "1"}) == [] and db.task_ids_by_tags({"w": "2"}) == [task]
    db.submit([sub("a", on_duplicate="supersede")])
    assert db.count_by_tag("w") == [] and row(db, task).tags is None
    # A duplicate leaves them as they are.
    db.submit([sub("a", tags={"x": "3"})])
    assert row(db, task).tags is None


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"k" * 65: "v"}, "the limit is 64"),
        ({"k": "v" * 257}, "the limit is 256"),
        ({f"k{i}": "v" for i in range(33)}, "33 tags; the limit is 32"),
        ({"": "v"}, "must not be empty"),
        ({"k": 1}, "must be str"),
    ],
)
def test_bad_tags_are_refused_and_nothing_is_stored(
    db: StoreDB, tags: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        db.submit([sub("fine"), sub("bad", tags=tags)])
    assert db.counts().pending == 0


def test_the_largest_tags_are_accepted(db: StoreDB) -> None:
    tags = {f"{i:02}" + "k" * 62: "é" * 128 for i in range(32)}  # 64-byte keys, 256-byte values
    [task] = insert(db, "big", tags=tags)
    assert row(db, task).tags == tags


def test_tag_queries_refuse_bad_arguments(db: StoreDB) -> None:
    with pytest.raises(InvalidRequest, match="at least one tag"):
        db.task_ids_by_tags({})
    with pytest.raises(InvalidRequest, match="status must be one of"):
        db.task_ids_by_tags({"k": "v"}, status="completed")


def test_tag_queries_read_the_tag_index(db: StoreDB) -> None:
    conn = db._core.conn  # the plans only: which index each query reads
    plan = " ".join(
        str(r[3])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT task_id FROM task_tags WHERE key = 'k' AND value = 'v'"
        ).fetchall()
    )
    assert "task_tags_kv" in plan


# -- bulk cancel ----------------------------------------------------------------------------


def test_cancel_by_group_type_and_tag_cancel_every_match_in_one_go(db: StoreDB) -> None:
    g1, g2 = insert(db, "g1", "g2", group_key="g")
    [other] = insert(db, "other", group_key="h")
    [running] = run(db, "running", group_key="g")
    [scheduled] = insert(db, "later", group_key="g", due_at_ms=10**13)
    changes = db.cancel_where(group="g")
    assert [(t.id, t.result) for t in changes] == [
        (g1, "cancelled"),
        (g2, "cancelled"),
        (running, "cancelled"),
        (scheduled, "cancelled"),
    ]
    assert [t.was_running for t in changes] == [False, False, True, False]
    assert db.get_task(other) is not None
    [x, y] = insert(db, "x", "y", task_type="resize")
    assert [t.id for t in db.cancel_where(task_type="resize")] == [x, y]
    [tagged] = insert(db, "tagged", tags={"tenant": "acme"})
    assert [t.id for t in db.cancel_where(tag=("tenant", "acme"))] == [tagged]
    assert db.cancel_where(tag=("tenant", "acme")) == []
    assert {status for _, status in history(db)} == {"cancelled"}


def test_bulk_cancel_takes_the_children_along(db: StoreDB) -> None:
    [parent] = run(db, "parent", group_key="g")
    [child] = [o.id for o in db.submit([sub("child", parent_id=parent)])]
    assert [(t.id, t.result) for t in db.cancel_where(group="g")] == [
        (child, "cancelled"),
        (parent, "cancelled"),
    ]


def test_bulk_cancel_needs_exactly_one_filter(db: StoreDB) -> None:
    with pytest.raises(InvalidRequest, match="exactly one"):
        db.cancel_where()
    with pytest.raises(InvalidRequest, match="exactly one"):
        db.cancel_where(group="g", task_type="t")


# -- the schema -----------------------------------------------------------------------------


def test_a_version_6_database_upgrades_to_tags_and_supersede(tmp_path: Path) -> None:
    """Version 7 adds the tags columns at the end of ``tasks`` and ``history``, the
    ``superseded`` history status and the ``task_tags`` table: the rows stay as they were."""
    shutil.copy(
        Path(__file__).resolve().parents[1] / "data" / "schema-v6.db", tmp_path / "tasks.db"
    )
    db = open_db(tmp_path, FakeClock())
    try:
        [paused] = db.list_tasks("paused", 10)
        assert paused.tags is None and {h.tags for h in db.history()} == {None}
        # Its old rows can be superseded (a history status version 6 did not allow) and tagged.
        [outcome] = db.submit([sub("paused", tags={"k": "v"}, on_duplicate="supersede")])
        assert (outcome.kind, outcome.id) == ("superseded", paused.id)
        assert db.task_ids_by_tags({"k": "v"}) == [paused.id]
        assert [h.status for h in db.history(1)] == ["superseded"]
    finally:
        db.close()
    conn = raw(tmp_path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
    finally:
        conn.close()
    assert key("paused")
