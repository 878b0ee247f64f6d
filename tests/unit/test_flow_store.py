"""Flow control in the Store's claim, on a fake clock: rate limits (token buckets), paused
groups, priority aging and fair shares."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from actors.store.flow import Aging
from bus.clock import FakeClock, now_ms
from bus.errors import InvalidRequest
from tests.store_support import ok, open_db, raw, sub, vm_steps


def labels(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [r.label for r in rows]


# -- rate limits -------------------------------------------------------------------------------


def test_a_rate_limit_starts_full_and_schedules_denied_tasks_one_token_apart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"type:email": (2, 1000, 2)})
    db.submit([sub(f"e{i}", task_type="email") for i in range(5)] + [sub("other")])
    claimed, exhausted = db.claim_next(10)
    # The burst (2) starts at once; the other type is not held behind the denied ones.
    assert labels(claimed) == ["e0", "e1", "other"]
    assert exhausted
    start = now_ms(clock)
    due = sorted(r.due_at_ms for r in db.list_tasks("scheduled", 10))
    assert due == [start + 500, start + 1000, start + 1500]
    assert db.next_due() == start + 500
    clock.advance(0.5)
    assert labels(db.claim_next(10)[0]) == ["e2"]
    clock.advance(1.0)
    assert labels(db.claim_next(10)[0]) == ["e3", "e4"]
    db.close()


def test_a_group_rate_limit_passes_the_group_over_and_counts_only_its_tasks(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"group:api": (1, 60_000, 1)})
    db.submit(
        [sub(f"a{i}", 64, group_key="api") for i in range(3)]
        + [sub(f"b{i}", group_key="other") for i in range(2)]
    )
    start = now_ms(clock)
    assert labels(db.claim_next(10)[0]) == ["a0", "b0", "b1"]
    # Passed over like a full group: its tasks wait in the queue, unchanged, and the
    # Dispatcher is woken for the group's next token.
    assert labels(db.list_tasks("pending", 10)) == ["a1", "a2"]
    assert db.next_due() == start + 60_000
    clock.advance(59.0)
    assert db.claim_next(10)[0] == []
    assert db.next_due() == start + 60_000
    clock.advance(1.0)
    assert labels(db.claim_next(10)[0]) == ["a1"]
    assert db.next_due() == start + 120_000
    [state] = db.flow_state().rate_limits
    assert (state.scope, state.permits, state.interval_ms, state.burst) == (
        "group:api",
        1,
        60_000,
        1,
    )
    assert state.available_tokens == 0.0
    db.close()


def test_a_denied_task_that_comes_due_a_little_late_keeps_the_limit_busy(
    tmp_path: Path,
) -> None:
    """A deferred task is claimed a few milliseconds after its due time, more or fewer each
    time; if it then finds the bucket a fraction short it waits for the next token only, not
    behind every task promised one: the limit's tokens are used, never more of them."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"type:api": (20, 1000, 1)})
    db.submit([sub(f"a{i}", task_type="api") for i in range(60)])
    start = now_ms(clock)
    starts = [now_ms(clock)] * len(db.claim_next(10)[0])
    for claims in range(1_000):  # each claim 1 or 4 ms after the due time it was woken for
        due = db.next_due()
        assert due is not None
        clock.advance((due + (1, 4)[claims % 2] - now_ms(clock)) / 1000)
        starts += [now_ms(clock)] * len(db.claim_next(10)[0])
        if now_ms(clock) >= start + 2_000:
            break
    in_two_seconds = [t for t in starts if t < start + 2_000]
    # 20 a second, less what the claims' lateness costs: a token comes some milliseconds
    # after the last was taken, and is taken some milliseconds after it comes.
    assert len(in_two_seconds) >= 34
    assert all(sum(1 for t in starts if s <= t < s + 1_000) <= 20 for s in starts)
    db.close()


def test_a_group_wake_up_survives_the_clock_passing_it_before_the_next_claim(
    tmp_path: Path,
) -> None:
    """The claim sets the wake-up; the Dispatcher reads it a moment later, when it may already
    be due: it must still be there (else the group waits for the next safety claim)."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"group:api": (1_000, 1_000, 1)})
    db.submit([sub(f"a{i}", group_key="api") for i in range(3)])
    start = now_ms(clock)
    assert labels(db.claim_next(10)[0]) == ["a0"]
    clock.advance(0.002)  # the claim took two milliseconds
    assert db.next_due() == start + 1
    assert labels(db.claim_next(10)[0]) == ["a1"]
    assert db.next_due() == start + 3
    db.close()


def test_tasks_due_together_come_back_one_token_apart(tmp_path: Path) -> None:
    """Tasks due at one instant (their own time) meet a type's empty bucket: each is given a
    token of its own, not all the next one (where all but one would be denied again)."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"type:api": (20, 1000, 1)})
    due = now_ms(clock) + 1_000
    db.submit([sub(f"a{i}", task_type="api", due_at_ms=due) for i in range(5)])
    clock.advance(1.0)
    assert labels(db.claim_next(10)[0]) == ["a0"]
    again = sorted(r.due_at_ms - due for r in db.list_tasks("scheduled", 10))
    assert again == [50, 100, 150, 200]
    db.close()


def test_tasks_of_their_own_time_and_denied_tasks_share_one_line_of_tokens(
    tmp_path: Path,
) -> None:
    """A task due at a time of its own is not one a rate limit denied before: it waits its turn
    behind those, and no token is promised twice (each task starts at the first try, in the
    order it came)."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"type:api": (20, 1000, 1)})
    start = now_ms(clock)
    db.submit([sub(f"d{i}", task_type="api") for i in range(5)])
    db.submit([sub(f"p{i}", task_type="api", due_at_ms=start - 1) for i in range(5)])
    order = labels(db.claim_next(10)[0])
    for _ in range(20):
        due = db.next_due()
        if due is None:
            break
        clock.advance((due - now_ms(clock)) / 1000)
        order += labels(db.claim_next(10)[0])
    assert order == [f"d{i}" for i in range(5)] + [f"p{i}" for i in range(5)]
    assert now_ms(clock) == start + 9 * 50
    db.close()


def test_buckets_survive_a_restart_without_a_fresh_burst(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("runtime", rates={"type:t": (10, 60_000, 10)})
    db.submit([sub(f"x{i}") for i in range(20)])
    assert len(db.claim_next(20)[0]) == 10
    db.close()
    clock.advance(6.0)  # one token's worth
    db = open_db(tmp_path, clock)
    assert [r.available_tokens for r in db.flow_state().rate_limits] == [1.0]
    db.close()


def test_runtime_rate_limits_win_over_the_configured_ones_and_survive_reopening(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    built = ({"type:a": (5, 1000, 5), "type:b": (7, 1000, 7)}, {}, {}, None)
    db = open_db(tmp_path, clock, flow_policy=built)
    db.set_flow("runtime", rates={"type:a": (1, 1000, 3), "type:b": None})
    db.close()
    db = open_db(tmp_path, clock, flow_policy=built)  # the application starts again
    state = {r.scope: (r.permits, r.burst) for r in db.flow_state().rate_limits}
    assert state == {"type:a": (1, 3)}
    db.close()


@pytest.mark.parametrize(
    "change",
    [
        {"rates": {"type:t": (-1, 1000, 1)}},
        {"rates": {"type:t": (1, 0, 1)}},
        {"rates": {"type:t": (1, 1000, 0)}},
        {"rates": {"tenant:x": (1, 1000, 1)}},
        {"rates": {"type:": (1, 1000, 1)}},
        {"weights": {"g": 0}},
        {"weights": {"g": -2.0}},
        {"min_slots": {"g": -1}},
        {"default_weight": 0.0},
        {"rates": {"type:ok": (1, 1000, 1)}, "weights": {"g": float("nan")}},
    ],
)
def test_bad_flow_policy_is_refused_and_changes_nothing(tmp_path: Path, change: dict) -> None:  # type: ignore[type-arg]
    db = open_db(tmp_path, FakeClock())
    with pytest.raises(InvalidRequest):
        db.set_flow("runtime", **change)
    state = db.flow_state()
    assert (state.rate_limits, state.weights, state.min_slots, state.default_weight) == (
        [],
        {},
        {},
        1.0,
    )
    db.close()


# -- paused groups -----------------------------------------------------------------------------


def test_a_paused_group_starts_nothing_until_resumed_and_other_work_flows(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.submit([sub("p1", 0, group_key="s3"), sub("q1", group_key="web")])
    assert db.pause_group("s3") == (1, 0)
    assert db.pause_group("s3") is None  # paused already: nothing changes
    db.submit([sub("p2", 0, group_key="s3")])  # a submission while paused waits too
    assert labels(db.claim_next(10)[0]) == ["q1"]
    [paused] = db.flow_state().paused_groups
    assert (paused.group, paused.paused_task_count, paused.resume_at_ms) == ("s3", 2, None)
    assert db.resume_group("s3") == 2
    assert db.resume_group("s3") is None
    assert labels(db.claim_next(10)[0]) == ["p1", "p2"]
    db.close()


def test_a_paused_groups_tasks_show_as_paused_until_it_resumes(tmp_path: Path) -> None:
    """Not rewritten (the claim passes the group over), but shown as paused wherever a task's
    status shows: the task itself, the listings, the counts, the queue's depth, the queries by
    tag."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    tagged = {"tags": {"tenant": "acme"}}
    db.submit(
        [sub("p1", 0, group_key="s3", **tagged), sub("q1", group_key="web", **tagged), sub("u1")]
    )
    db.pause_group("s3", until_ms=now_ms(clock) + 60_000)
    db.submit([sub("p2", 0, group_key="s3")])  # inserted paused
    shown = {r.label: r.status for r in db.list_tasks("paused", 10)}
    assert shown == {"p1": "paused", "p2": "paused"}
    assert labels(db.list_tasks("pending", 10)) == ["q1", "u1"]
    [p1] = [r for r in db.list_tasks("paused", 10) if r.label == "p1"]
    task = db.get_task(id=p1.id)
    assert task is not None and task.status == "paused"
    found = db.lookup(p1.key).task
    assert found is not None and found.status == "paused"
    counts = db.counts()
    assert (counts.pending, counts.paused) == (2, 2)
    assert db.depth() == [(128, None, 1), (128, "web", 1)]
    by_tag = {s: db.task_ids_by_tags({"tenant": "acme"}, s, 10) for s in ("pending", "paused")}
    assert by_tag == {"pending": [p1.id + 1], "paused": [p1.id]}
    clock.advance(60.0)  # its end came: pending again, whether or not resumed yet
    task = db.get_task(id=p1.id)
    assert task is not None and task.status == "pending"
    assert (db.counts().pending, db.counts().paused) == (4, 0)
    assert [(p, g) for p, g, _ in db.depth()] == [(0, "s3"), (128, None), (128, "web")]
    assert db.task_ids_by_tags({"tenant": "acme"}, "pending", 10) == [p1.id, p1.id + 1]
    db.close()


def test_a_pause_with_an_end_lets_the_group_go_then_and_wakes_the_dispatcher(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.submit([sub("p", group_key="s3")])
    end = now_ms(clock) + 30_000
    assert db.pause_group("s3", end) == (1, 0)
    assert db.claim_next(10)[0] == []
    assert db.next_due() == end
    clock.advance(30.0)
    assert labels(db.claim_next(10)[0]) == ["p"]
    # The GroupLimiter's timer, later: what the claim started since the end counts as resumed.
    assert db.resume_group("s3", due_only=True) == 1
    db.close()


def test_a_pause_survives_reopening(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.submit([sub("p", group_key="s3")])
    db.pause_group("s3")
    db.close()
    db = open_db(tmp_path, clock)
    assert db.claim_next(10)[0] == []
    assert db.claim([1]) == []  # a claim of chosen rows (an IO budget's) respects it too
    db.close()


@pytest.mark.parametrize("group, until", [("", None), ("g", -5), ("g", 0), ("g", "soon")])
def test_bad_pauses_are_refused_and_change_nothing(
    tmp_path: Path, group: str, until: object
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    with pytest.raises(InvalidRequest):
        db.pause_group(group, until)  # type: ignore[arg-type]
    assert db.flow_state().paused_groups == []
    db.close()


# -- priority aging ----------------------------------------------------------------------------


def test_aging_raises_waiting_tasks_up_to_the_cap_and_never_lowers_any(tmp_path: Path) -> None:
    clock = FakeClock()
    aging = Aging(grace_ms=10_000, interval_ms=1_000, max_effective=64)
    db = open_db(tmp_path, clock, aging=aging)
    db.submit([sub("old-bg", 192), sub("old-high", 10)])
    clock.advance(10.0 + 200.0)  # 200 steps past the grace period
    db.submit([sub("new-100", 100), sub("new-64", 64)])
    claimed, _ = db.claim_next(10)
    # old-bg is ordered at 64 (the cap), ahead of new-100; new-64 (same level, newer) after it.
    assert labels(claimed) == ["old-high", "old-bg", "new-64", "new-100"]
    by_label = {r.label: (r.priority, r.effective_priority) for r in claimed}
    assert by_label == {
        "old-high": (10, 10),
        "old-bg": (192, 64),
        "new-64": (64, 64),
        "new-100": (100, 100),
    }
    db.close()


def test_aging_within_the_grace_period_changes_no_order(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock, aging=Aging(300_000, 60_000, 64))
    db.submit([sub("bg", 192)])
    clock.advance(299.0)
    db.submit([sub("normal", 128)])
    assert labels(db.claim_next(1)[0]) == ["normal"]
    db.close()


def test_aging_does_not_count_the_time_a_tasks_group_was_paused(tmp_path: Path) -> None:
    """Only waiting while its group could run ages a task: one that waited out a long pause of
    its group does not jump the queue once the group resumes. Kept across a restart, and for a
    pause that ended by its own end too."""
    clock = FakeClock()
    aging = Aging(grace_ms=10_000, interval_ms=1_000, max_effective=64)
    db = open_db(tmp_path, clock, aging=aging)
    db.submit([sub("held", 192, group_key="s3"), sub("free", 192, group_key="web")])
    db.pause_group("s3")
    clock.advance(100.0)
    db.resume_group("s3")
    db.pause_group("s3", until_ms=now_ms(clock) + 50_000)  # ends by itself
    clock.advance(60.0)
    db.close()
    db = open_db(tmp_path, clock, aging=aging)
    db.submit([sub("new", 100)])
    # free waited 160 s (150 steps past the grace: at the cap, 64); held waited 10 s while its
    # group could run (at its own 192).
    claimed, _ = db.claim_next(3)
    assert [(r.label, r.effective_priority) for r in claimed] == [
        ("free", 64),
        ("new", 100),
        ("held", 192),
    ]
    db.close()


def test_a_resumed_groups_old_tasks_do_not_hide_more_aged_ones_of_other_groups(
    tmp_path: Path,
) -> None:
    """held is older than free by id, but sat out a 100 s pause: free, which waited it all,
    is the most aged task, and a claim of one slot takes it."""
    clock = FakeClock()
    db = open_db(tmp_path, clock, aging=Aging(grace_ms=10_000, interval_ms=1_000, max_effective=64))
    db.submit([sub("held", 192, group_key="s3"), sub("free", 192, group_key="web")])
    db.pause_group("s3")
    clock.advance(100.0)
    db.resume_group("s3")
    clock.advance(60.0)
    db.submit([sub("new", 100)])
    assert [(r.label, r.effective_priority) for r in db.claim_next(1)[0]] == [("free", 64)]
    db.close()


def test_the_pause_log_keeps_only_the_pauses_a_waiting_task_lived_through(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.submit([sub("old", group_key="g")])
    for _ in range(3):
        db.pause_group("g")
        clock.advance(1.0)
        db.resume_group("g")
    assert log_rows(tmp_path) == 3
    (task,), _ = db.claim_next(1)
    db.finish([ok(task.id)])
    db.submit([sub("new", group_key="g")])
    db.pause_group("g")
    clock.advance(1.0)
    db.resume_group("g")
    assert log_rows(tmp_path) == 1  # the three before "new" was submitted are forgotten
    db.close()


def log_rows(path: Path) -> int:
    conn = raw(path)
    try:
        return int(conn.execute("SELECT count(*) FROM group_pause_log").fetchall()[0][0])
    finally:
        conn.close()


# -- fair shares -------------------------------------------------------------------------------


def drain(db, slots: int, rounds: int) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Claim with ``slots`` slots, finishing each claimed task before the next claim; the
    groups of the tasks started."""
    started: Counter[str] = Counter()
    for _ in range(rounds):
        claimed, _ = db.claim_next(slots)
        started.update(r.group_key or "-" for r in claimed)
        db.finish([ok(r.id) for r in claimed])
    return started


def test_weights_share_the_slots_in_proportion(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock())
    db.set_flow("configured", weights={"a": 3.0, "b": 1.0})
    # b's tasks are more urgent: without weights b would take every slot first.
    db.submit(
        [sub(f"a{i}", 128, group_key="a") for i in range(200)]
        + [sub(f"b{i}", 0, group_key="b") for i in range(200)]
    )
    started = drain(db, 2, 100)
    assert started == {"a": 150, "b": 50}
    db.close()


def test_the_ungrouped_tasks_share_with_the_default_weight_and_caps_hold(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock(), group_limits=(0, {"a": 1}))
    db.set_flow("configured", weights={"a": 4.0}, default_weight=2.0)
    db.submit(
        [sub(f"a{i}", group_key="a") for i in range(50)]
        + [sub(f"u{i}") for i in range(50)]
        + [sub(f"c{i}", group_key="c") for i in range(50)]
    )
    claimed, _ = db.claim_next(10)
    groups = Counter(r.group_key or "-" for r in claimed)
    assert groups["a"] == 1  # its limit holds: its share goes to the others
    assert groups["-"] + groups["c"] == 9
    assert abs(groups["-"] - groups["c"]) <= 1  # equal default weights
    db.close()


def test_runtime_weights_and_minimums_remove_the_configured_ones_and_reset(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", weights={"a": 3.0, "b": 2.0}, min_slots={"b": 1}, default_weight=2.0)
    state = db.set_flow("runtime", weights={"a": -1.0, "c": 5.0}, min_slots={"b": 0})
    assert (state.weights, state.min_slots, state.default_weight) == ({"b": 2.0, "c": 5.0}, {}, 2.0)
    assert state.weight_changes == [("a", 3.0, 2.0), ("c", 2.0, 5.0)]
    state = db.set_flow("runtime", reset_weights=True)
    assert (state.weights, state.default_weight) == ({}, 2.0)
    assert state.weight_changes == [("c", 5.0, 2.0)]  # b had the default's value already
    db.close()
    db = open_db(tmp_path, clock)  # runtime values are kept
    assert (db.flow_state().weights, db.flow_state().min_slots) == ({}, {})
    with pytest.raises(InvalidRequest):
        db.set_flow("configured", weights={"a": -1.0})  # removing is a runtime change only
    db.close()


def test_a_rate_limited_group_under_fair_shares_keeps_its_rate_and_its_place(
    tmp_path: Path,
) -> None:
    """A weighted group whose bucket is empty leaves the line until its next token (its share
    runs ahead of its rate): the others take every slot meanwhile, and it takes the first slot
    of the claim its token is due in."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow(
        "configured",
        rates={"group:api": (1, 1_000, 1)},
        weights={"api": 4.0, "bulk": 1.0},
    )
    db.submit(
        [sub(f"api{i}", group_key="api") for i in range(5)]
        + [sub(f"bulk{i}", group_key="bulk") for i in range(50)]
    )
    started: list[list[str]] = []
    for _ in range(4):
        claimed, _ = db.claim_next(3)
        started.append(labels(claimed))
        db.finish([ok(r.id) for r in claimed])
        clock.advance(0.5)
    assert started == [
        ["api0", "bulk0", "bulk1"],
        ["bulk2", "bulk3", "bulk4"],  # api's token is due at +1 s
        ["api1", "bulk5", "bulk6"],
        ["bulk7", "bulk8", "bulk9"],
    ]
    db.close()


def test_a_group_waiting_for_its_token_is_out_of_line_once_and_back_once(
    tmp_path: Path,
) -> None:
    """Out of the line while its bucket is empty, even when the look for heads saw it first,
    when a look for groups finds it without a ready task, or when a task of it comes due
    meanwhile; back once, and first, when its token is due."""
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow(
        "configured", rates={"group:api": (1, 60_000, 1)}, weights={"api": 4.0, "bulk": 1.0}
    )
    due = now_ms(clock) + 59_600
    out = db.submit(
        [sub("api0", group_key="api"), sub("api1", group_key="api")]
        + [sub(f"api{i}", group_key="api", due_at_ms=due) for i in (2, 3)]
        + [sub(f"bulk{i}", group_key="bulk") for i in range(50)]
    )

    def claim(slots: int) -> list[str]:
        claimed, _ = db.claim_next(slots)
        db.finish([ok(r.id) for r in claimed])
        return labels(claimed)

    def line() -> tuple[list[str], list[str]]:
        shares = db._core.cached("fair_shares", lambda: None)  # the Store's own state
        assert shares is not None
        return sorted(g for _, g in shares.heap), sorted(g for _, _, g in shares.asleep)

    assert claim(3) == ["api0", "bulk0", "bulk1"]
    assert line() == (["bulk"], ["api"])
    db.pause_group("other")  # a change of policy wakes every sleeper ...
    db.resume_group("other")
    assert claim(1) == ["bulk2"]  # ... and the next claim sends it back to sleep
    assert line() == (["bulk"], ["api"])
    db.cancel(out[1].id)  # api has no ready task left: the next look for groups misses it
    clock.advance(59.5)
    assert claim(1) == ["bulk3"]
    clock.advance(0.2)  # api2 and api3 come due
    assert claim(1) == ["bulk4"]
    assert line() == (["bulk"], ["api"])
    clock.advance(0.3)  # its token
    assert claim(1) == ["api2"]
    assert line() == (["api", "bulk"], [])
    db.close()


def test_removing_a_rate_limit_brings_its_group_back_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"group:api": (1, 60_000, 1)}, weights={"api": 2.0})
    db.submit([sub(f"api{i}", group_key="api") for i in range(3)] + [sub("other", group_key="o")])
    assert sorted(labels(db.claim_next(10)[0])) == ["api0", "other"]
    assert db.claim_next(10)[0] == []  # its next token is a minute away
    db.set_flow("runtime", rates={"group:api": None})
    assert labels(db.claim_next(10)[0]) == ["api1", "api2"]
    db.close()


def test_a_minimum_slot_goes_first(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock())
    db.set_flow("configured", weights={"big": 100.0}, min_slots={"small": 1})
    db.submit(
        [sub(f"big{i}", group_key="big") for i in range(10)]
        + [sub(f"small{i}", group_key="small") for i in range(10)]
    )
    claimed, _ = db.claim_next(2)
    assert sorted(r.group_key for r in claimed) == ["big", "small"]
    db.close()


def test_the_urgent_threshold_goes_ahead_of_the_shares(tmp_path: Path) -> None:
    db = open_db(tmp_path, FakeClock(), aging=Aging(300_000, 60_000, 64, urgent=10))
    db.set_flow("configured", weights={"a": 100.0, "b": 1.0})
    db.submit(
        [sub(f"a{i}", 128, group_key="a") for i in range(5)]
        + [sub(f"b{i}", 5, group_key="b") for i in range(3)]
    )
    claimed, _ = db.claim_next(3)
    assert labels(claimed) == ["b0", "b1", "b2"]
    db.close()


def test_changing_a_limit_at_runtime_brings_back_the_tasks_it_deferred(tmp_path: Path) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    db.set_flow("configured", rates={"type:t": (1, 60_000, 1)})
    later = now_ms(clock) + 1_000
    db.submit([sub("a"), sub("b"), sub("c"), sub("later", due_at_ms=later)])
    assert labels(db.claim_next(10)[0]) == ["a"]
    assert len(db.list_tasks("scheduled", 10)) == 3  # b, c a minute apart; later by its own
    db.set_flow("runtime", rates={"type:t": None})
    assert labels(db.list_tasks("scheduled", 10)) == ["later"]  # its own time is kept
    assert labels(db.claim_next(10)[0]) == ["b", "c"]
    db.close()


def test_aging_reads_each_level_by_index_whatever_its_depth(tmp_path: Path) -> None:
    """A claim with aging looks at the oldest rows of each level, never the whole level."""

    def steps(depth: int) -> int:
        clock = FakeClock()
        (tmp_path / str(depth)).mkdir()
        db = open_db(tmp_path / str(depth), clock, aging=Aging(1_000, 1_000, 64))
        for first in range(0, depth, 1_000):
            db.submit([sub(f"n{i}", 100) for i in range(first, min(depth, first + 1_000))])
        db.submit([sub("bg", 192)])  # the last of the ids: a level of its own
        clock.advance(60.0)
        db.claim_next(1)  # statements prepared, policy read
        cost = vm_steps(db, lambda: db.peek(1))
        db.close()
        return cost

    assert steps(4_000) < 2 * steps(200)
