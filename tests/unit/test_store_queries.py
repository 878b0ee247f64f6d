"""The Store's queries: tasks and counts, lookup, history, stats, throughput, learned IO, retention.

Handler tier: ``StoreDB`` on a file under ``tmp_path`` with a fake clock; no sockets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import compilations, error, insert, key, ok, open_db, row, run

from actors.store.db import StoreDB
from bus.clock import FakeClock, now_ms
from bus.errors import InvalidRequest
from bus.kinds import CountsReply, History
from bus.protocol import MAX_FRAME_BYTES


def complete(
    db: StoreDB, clock: FakeClock, name: str, *, seconds: float = 1.0, task_type: str = "t",
    **io: int,
) -> None:  # fmt: skip
    """Run a task of ``seconds`` that completes with the given actual IO."""
    [task_id] = run(db, name, task_type=task_type)
    clock.advance(seconds)
    db.finish([ok(task_id, **io)])


def fail(db: StoreDB, clock: FakeClock, name: str, *, task_type: str = "t") -> None:
    [task_id] = run(db, name, task_type=task_type)
    clock.advance(1)
    db.finish([error(task_id, f"{name} failed")])


# -- active tasks -----------------------------------------------------------------------------


def test_counts_and_lists_by_status(db: StoreDB) -> None:
    insert(db, "p1", "p2", priority=50)
    [r1, r2, r3] = run(db, "r1", "r2", "r3")
    db.preempt([r1])
    [parent] = run(db, "parent")
    insert(db, "child", parent_id=parent)
    db.finish([ok(parent)])
    assert db.counts() == CountsReply(pending=3, running=2, paused=1, waiting=1)
    assert [r.label for r in db.list_tasks("pending", 10)] == ["p1", "p2", "child"]
    assert [r.label for r in db.list_tasks("pending", 2)] == ["p1", "p2"]
    assert [r.id for r in db.list_tasks("running", 10)] == [r2, r3]
    assert [r.id for r in db.list_tasks("paused", 10)] == [r1]
    assert [r.id for r in db.list_tasks("waiting", 10)] == [parent]
    with pytest.raises(InvalidRequest, match="status"):
        db.list_tasks("done", 10)
    with pytest.raises(InvalidRequest, match="limit"):
        db.list_tasks("pending", -1)


def test_get_task_by_id_or_key(db: StoreDB) -> None:
    [task_id] = insert(db, "a", payload=b"x")
    assert row(db, task_id).payload == b"x"
    found = db.get_task(key=key("a"))
    assert found is not None and found.id == task_id
    assert db.get_task(999) is None
    assert db.get_task(key=key("zzz")) is None
    with pytest.raises(InvalidRequest):
        db.get_task()


def test_a_history_reply_past_the_frame_size_is_a_page_that_says_where_the_rest_starts(
    db: StoreDB, clock: FakeClock
) -> None:
    for i in range(5):
        [task_id] = run(db, f"big{i}", payload=bytes([i]) * 1_048_576)
        clock.advance(1)
        db.finish([ok(task_id)])
    whole = db.history(limit=10)
    pages, offset = [], 0
    while True:
        reply = db.history_page(History(10 - sum(len(p) for p in pages), offset))
        pages.append(reply.rows)
        assert sum(len(r.payload or b"") for r in reply.rows) <= MAX_FRAME_BYTES * 3 // 4
        if reply.next_offset is None:
            break
        offset = reply.next_offset
    assert len(pages) > 1 and [r for p in pages for r in p] == whole
    two = db.history_page(History(2))  # two fit: the whole query, nothing left to ask
    assert (len(two.rows), two.next_offset) == (2, None)
    assert db.history_page(History(3, 1)).next_offset == 3  # the third does not


def test_lookup_active_then_history_then_not_found(db: StoreDB, clock: FakeClock) -> None:
    assert db.lookup(key("a")).location == "not_found"
    [task_id] = run(db, "a")
    found = db.lookup(key("a"))
    assert (found.location, found.task and found.task.id) == ("active", task_id)
    db.finish([ok(task_id)])
    found = db.lookup(key("a"))
    assert found.location == "history" and found.history is not None
    assert (found.history.task_id, found.history.status) == (task_id, "completed")
    # Run again and fail: the newest history row is the one returned.
    clock.advance(1)
    fail(db, clock, "a")
    newest = db.lookup(key("a")).history
    assert newest is not None and newest.status == "failed"


# -- history ----------------------------------------------------------------------------------


def test_history_is_newest_first_with_paging(db: StoreDB, clock: FakeClock) -> None:
    for name in ["one", "two", "three", "four"]:
        complete(db, clock, name)
    assert [h.label for h in db.history()] == ["four", "three", "two", "one"]
    assert [h.label for h in db.history(limit=2)] == ["four", "three"]
    assert [h.label for h in db.history(limit=2, offset=2)] == ["two", "one"]


def test_history_ties_on_time_go_by_id(db: StoreDB) -> None:
    ids = run(db, "a", "b", "c")
    db.finish([ok(i) for i in ids])  # one clock reading: same completed_at_ms
    assert [h.label for h in db.history()] == ["c", "b", "a"]


def test_history_filters(db: StoreDB, clock: FakeClock) -> None:
    complete(db, clock, "a1", task_type="alpha")
    fail(db, clock, "a2", task_type="alpha")
    complete(db, clock, "b1", task_type="beta")
    [c] = insert(db, "c1", task_type="beta")
    db.cancel(c)
    assert [h.label for h in db.history(task_type="alpha")] == ["a2", "a1"]
    assert [h.label for h in db.history(status="failed")] == ["a2"]
    assert [h.label for h in db.history(status="cancelled")] == ["c1"]
    assert [h.label for h in db.history(task_type="beta", status="completed")] == ["b1"]
    assert [h.label for h in db.history(key=key("b1"))] == ["b1"]
    with pytest.raises(InvalidRequest, match="status"):
        db.history(status="running")


def test_history_stats(db: StoreDB, clock: FakeClock) -> None:
    complete(db, clock, "a", seconds=1, read_bytes=100, write_bytes=10)
    complete(db, clock, "b", seconds=3, read_bytes=300, write_bytes=30)
    fail(db, clock, "c")
    [d] = insert(db, "d")
    db.cancel(d)  # cancelled runs count nowhere
    complete(db, clock, "other", task_type="other", seconds=50)
    stats = db.history_stats("t")
    assert stats.count == 3
    assert stats.avg_duration_ms == 2000.0
    assert (stats.avg_read_bytes, stats.avg_write_bytes) == (200.0, 20.0)
    assert stats.failure_rate == pytest.approx(1 / 3)
    empty = db.history_stats("nothing")
    assert (empty.count, empty.avg_duration_ms, empty.failure_rate) == (0, 0.0, 0.0)


def test_avg_throughput_over_the_newest_runs(db: StoreDB, clock: FakeClock) -> None:
    complete(db, clock, "old", seconds=1, read_bytes=1_000_000)  # outside the window of 2
    complete(db, clock, "a", seconds=2, read_bytes=2000, write_bytes=400, net_rx_bytes=10)
    complete(db, clock, "b", seconds=1, read_bytes=4000, write_bytes=0, net_tx_bytes=6)
    [zero] = run(db, "instant")
    db.finish([ok(zero, read_bytes=99_999)])  # no duration: not a rate
    fail(db, clock, "failed")
    tp = db.avg_throughput("t", 2)
    assert tp.read_bytes_per_sec == (1000 + 4000) / 2
    assert tp.write_bytes_per_sec == (200 + 0) / 2
    assert (tp.net_rx_bytes_per_sec, tp.net_tx_bytes_per_sec) == (2.5, 3.0)
    assert db.avg_throughput("none", 5).read_bytes_per_sec == 0.0


def test_learned_io_needs_enough_runs_and_uses_the_window(db: StoreDB, clock: FakeClock) -> None:
    for i in range(3):
        complete(db, clock, f"early-{i}", task_type="copy", read_bytes=1_000_000)
    for i in range(4):
        complete(db, clock, f"late-{i}", task_type="copy", read_bytes=100, net_tx_bytes=8)
    for i in range(4):
        complete(db, clock, f"few-{i}", task_type="rare", read_bytes=5)
    fail(db, clock, "f", task_type="rare")  # failures are not runs to learn from
    learned = db.learned_io(["copy", "rare", "unknown"], min_runs=5, window=4)
    assert learned == {"copy": [100.0, 0.0, 0.0, 8.0]}
    assert db.learned_io([], min_runs=4, window=20).keys() == {"copy", "rare"}


def test_queries_with_new_values_run_as_prepared(db: StoreDB, clock: FakeClock) -> None:
    # SQLite reads the value bound to a bare ``LIMIT ?`` (or a ``col = ?`` ahead of an ORDER
    # BY) when it plans, so each new binding expired the statement and its next run planned it
    # again: 13 µs instead of 1 for each of the two selects of every peek. Such values are
    # bound as ``+?``; no query of the Store may be planned again when only its values change.
    for i in range(3):
        complete(db, clock, f"done-{i}", task_type=f"t{i}", read_bytes=10)
    insert(db, *[f"p{i}" for i in range(20)])

    def use(n: int) -> None:
        task_type, done = f"t{n % 3}", key(f"done-{n % 3}")
        assert len(db.peek(n)) == n  # 20 queued, and one more paused each round
        db.peek(n, 255 - n % 50, n % 3)
        assert len(db.list_tasks("pending", n)) == min(n, 20)
        db.list_tasks("running", n)
        db.get_task(id=n)
        db.get_task(key=key(f"p{n % 20}"))
        assert db.lookup(done).location == "history"
        db.history(limit=n, offset=n % 2)
        assert [h.key for h in db.history(key=done)] == [done]
        db.history(task_type=task_type, limit=n)
        db.history(status="completed", limit=n)
        db.history_stats(task_type)
        db.avg_throughput(task_type, n)
        db.learned_io([task_type], 1, n)
        db.prune(keep=100 + n)
        db.groups()
        ids = insert(db, f"x{n}-a", f"x{n}-b", f"x{n}-c", priority=n)
        db.claim(ids[:2])
        db.finish([ok(ids[0])])
        db.preempt([ids[1]])
        assert db.claim_next(1, max_priority=-n, preempt_priority=n % 3) == ([], True)
        db.cancel(ids[2])

    with compilations(db) as count:
        for n in (1, 2):  # the first runs prepare every statement
            use(n)
        prepared = count[0]
        for n in range(3, 30):
            use(n)
    assert prepared > 0
    assert count[0] == prepared


# -- retention --------------------------------------------------------------------------------


def test_prune_by_count_and_by_age(db: StoreDB, clock: FakeClock) -> None:
    for i in range(5):
        complete(db, clock, f"t{i}", seconds=86_400)  # one a day
    assert db.prune(keep=3) == 2
    assert [h.label for h in db.history()] == ["t4", "t3", "t2"]
    assert db.prune(days=1.5) == 1  # t2 finished two days ago
    assert [h.label for h in db.history()] == ["t4", "t3"]
    assert db.prune(keep=0) == 2
    with pytest.raises(InvalidRequest):
        db.prune(keep=-1)


def test_retention_prunes_every_100_terminal_transitions(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock, retention_max_count=30, prune_every=100)
    try:
        ids = run(db, *(f"t{i}" for i in range(99)))
        db.finish([ok(i) for i in ids])
        assert len(db.history(limit=1000)) == 99  # not yet
        [last] = run(db, "t99")
        db.finish([ok(last)])
        rows = db.history(limit=1000)
        assert len(rows) == 30
        assert rows[0].label == "t99"
        ids = run(db, *(f"u{i}" for i in range(50)))
        db.finish([ok(i) for i in ids])
        assert len(db.history(limit=1000)) == 80  # until the next 100
    finally:
        db.close()


def test_retention_by_age(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(
        tmp_path, clock, retention_max_count=None, retention_max_age_days=1.0, prune_every=1
    )
    try:
        complete(db, clock, "old")
        clock.advance(2 * 86_400)
        complete(db, clock, "new")
        assert [h.label for h in db.history()] == ["new"]
        assert now_ms(clock) - db.history()[0].completed_at_ms < 86_400_000
    finally:
        db.close()
