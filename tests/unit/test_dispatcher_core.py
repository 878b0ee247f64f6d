"""The Dispatcher's decisions without sockets: admission, placement, preemption victims, events."""

from __future__ import annotations

from actors.dispatcher.recovery import adopt, orphans
from actors.dispatcher.state import DispatcherCore, Settings
from bus.clock import FakeClock
from bus.kinds import TaskResult, TaskRow, Transition
from bus.kinds_run import HostHeartbeat, Readings


def settings(**kw: object) -> Settings:
    return Settings("c", "h", "s", "e", **kw)  # type: ignore[arg-type]


def row(task_id: int, priority: int = 128, task_type: str = "t", **kw: object) -> TaskRow:
    return TaskRow(
        task_id, task_type, f"{task_id:064x}", f"task {task_id}", priority, "pending", **kw
    )  # type: ignore[arg-type]


def core(**kw: object) -> DispatcherCore:
    c = DispatcherCore(settings(**kw), FakeClock())
    c.hosts.hello(b"h1", "h1", ["t", "u"], 8, 0.0)
    return c


def test_admits_in_queue_order_up_to_free_slots() -> None:
    c = core(max_concurrency=2)
    assert c.admit([row(1), row(2), row(3)]) == [1, 2]


def test_throttle_floor_is_the_least_urgent_priority_the_pressure_lets_start() -> None:
    c = core()
    assert c.throttle_floor() == 255
    c.set_readings(Readings(0.0, 0.0, 0.0, 0.0, 0.0, pressure=0.6))  # above BACKGROUND's 0.50
    assert c.throttle_floor() == 191
    c.set_readings(Readings(0.0, 0.0, 0.0, 0.0, 0.0, pressure=0.8))  # above NORMAL's 0.75 too
    assert c.throttle_floor() == 127


def readings(pressure: float = 0.0, bps: float = 0.0) -> Readings:
    return Readings(0.5, bps, bps, bps, bps, pressure, [("knob", pressure)])


def test_throttle_hold_ends_admission() -> None:
    c = core(max_concurrency=4)
    c.set_readings(readings(0.6))
    assert c.admit([row(1, priority=128), row(2, priority=192), row(3, priority=128)]) == [1]


def test_a_reading_older_than_its_lifetime_counts_as_no_reading() -> None:
    """A monitor that stops publishing (crashed, stopped) must not hold work for good: with the
    clock alone, past three sampling intervals the pressure is 0 and the rates unknown."""
    clock = FakeClock()
    c = DispatcherCore(settings(readings_expiry_s=3.0, monitoring=True), clock)
    c.hosts.hello(b"h1", "h1", ["t"], 8, 0.0)
    c.set_readings(readings(0.9, bps=1e6))
    normal, background = row(1, priority=128), row(2, priority=192)
    assert c.admit([normal, background]) == []
    clock.advance(3.0)
    assert c.admit([normal, background]) == []  # three intervals old: still counts
    assert c.state().pressure == 0.9
    clock.advance(0.01)
    assert c.admit([normal, background]) == [1, 2]
    state = c.state()
    assert state.pressure == 0.0
    assert state.resources == dict.fromkeys(
        ["cpu", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps"], 0.0
    )
    c.set_readings(readings(0.9))  # a fresh reading holds again
    assert c.admit([row(3, priority=128)]) == []


def test_the_io_budget_measures_headroom_against_the_peak_rate_of_the_last_hour() -> None:
    """No capacity configured: the highest rate seen in the hour counts, on the Dispatcher's
    clock, and never less than 50 MB/s."""
    clock = FakeClock()
    c = DispatcherCore(settings(monitoring=True, readings_expiry_s=3.0), clock)
    c.hosts.hello(b"h1", "h1", ["t"], 8, 0.0)
    mb = 1_000_000
    small, big = row(1, expected_read_bytes=1), row(2, expected_read_bytes=120 * mb)
    c.set_readings(readings(bps=80 * mb))  # the disk once read at 80 MB/s
    clock.advance(1.0)
    c.set_readings(readings(bps=1 * mb))
    # capacity 80 MB/s: 2 s x (80 - 1) MB/s = 158 MB fits 1 B + 120 MB
    assert c.admit([small, big]) == [1, 2]
    clock.advance(3598.0)
    c.set_readings(readings(bps=1 * mb))
    assert c.admit([small, big]) == [1, 2]  # the peak is 3599 s old: still in the hour
    clock.advance(2.0)
    c.set_readings(readings(bps=1 * mb))
    # the peak is gone: 50 MB/s at least, 2 s x 49 MB/s = 98 MB, too little for 120 MB
    assert c.admit([small, big]) == [1]
    assert c.admit([big]) == [2]  # nothing running reads: a budget never starves a task


def test_a_configured_capacity_is_used_as_it_is() -> None:
    c = DispatcherCore(
        settings(monitoring=True, disk_capacity_bps=(1e9, 10e6), net_capacity_bps=5e6),
        FakeClock(),
    )
    c.hosts.hello(b"h1", "h1", ["t"], 8, 0.0)
    c.set_readings(readings(bps=0.0))
    writer, more = row(1, expected_write_bytes=10_000_000), row(2, expected_write_bytes=10_000_001)
    assert c.admit([writer, more]) == [1]  # 2 s x 10 MB/s = 20 MB
    sender, other = row(3, expected_net_tx_bytes=5_000_000), row(4, expected_net_tx_bytes=5_000_001)
    assert c.admit([sender, other]) == [3]


def test_a_type_no_host_serves_is_claimed_to_fail_with_the_stated_message() -> None:
    c = core()
    assert c.admit([row(1, task_type="nope")]) == [1]
    runs, unserved, events = c.claimed([row(1, task_type="nope")])
    assert runs == {} and events == []
    assert unserved[0].error == "no executor registered for type 'nope'"
    assert unserved[0].outcome == "error" and not unserved[0].retryable


def test_without_any_host_nothing_is_admitted() -> None:
    c = DispatcherCore(settings(), FakeClock())
    assert c.admit([row(1)]) == []


def test_claimed_tasks_are_placed_on_hosts_and_announced() -> None:
    c = core()
    c.admit([row(1), row(2)])
    runs, _, events = c.claimed([row(1), row(2)])
    [(r1, run1), (r2, run2)] = runs[b"h1"]
    assert (r1.id, r2.id) == (1, 2) and run2 == run1 + 1
    assert [e.type for e in events] == ["dispatched", "dispatched"]
    assert events[0].data()["task_id"] == 1 and events[0].data()["label"] == "task 1"
    assert c.free_slots() == 2


def test_victims_are_running_tasks_strictly_less_urgent_than_the_submission() -> None:
    c = core(preempt_priority=0)
    c.admit([row(1, priority=0), row(2, priority=64), row(3, priority=255)])
    c.claimed([row(1, priority=0), row(2, priority=64), row(3, priority=255)])
    assert sorted(c.victims_for(0)) == [2, 3]
    assert c.victims_for(1) == []  # above the threshold: no preemption at all


def test_an_urgent_change_makes_every_less_urgent_running_task_a_victim() -> None:
    c = core(max_concurrency=3, preempt_priority=0)
    c.claimed_next([row(1, priority=0), row(2, priority=128), row(3, priority=192)])
    assert c.victims_for(0) == [2, 3]
    assert c.victims_for(64) == []  # not urgent enough to preempt anything


def test_finished_results_free_their_slots() -> None:
    c = core(max_concurrency=2)
    c.claimed_next([row(1, group_key="g"), row(2, group_key="g")])
    assert c.free_slots() == 0
    c.finished([TaskResult(1, "ok", run_id=c.running[1].run_id)])
    assert c.free_slots() == 1 and list(c.running) == [2]


def test_a_stale_result_of_an_earlier_run_is_not_applied() -> None:
    c = core()
    c.admit([row(1)])
    c.claimed([row(1)])
    run_id = c.running[1].run_id
    assert c.finished([TaskResult(1, "error", "late", run_id=run_id - 1)]) == []
    assert c.free_slots() == 3
    assert [r.id for r in c.finished([TaskResult(1, "ok", run_id=run_id)])] == [1]


def test_run_ids_are_unique_across_dispatcher_restarts() -> None:
    clock = FakeClock()
    first = DispatcherCore(settings(), clock)
    first.hosts.hello(b"h1", "h1", ["t"], 8, 0.0)
    first.admit([row(1)])
    first.claimed([row(1)])
    clock.advance(0.001)
    second = DispatcherCore(settings(), clock)
    second.hosts.hello(b"h1", "h1", ["t"], 8, 0.0)
    second.admit([row(2)])
    second.claimed([row(2)])
    assert second.running[2].run_id > first.running[1].run_id


def test_a_restarted_dispatcher_adopts_what_hosts_report_and_cancels_the_rest() -> None:
    c = core()
    running = {1: row(1), 2: row(2)}
    stale = adopt(c, b"h1", {1: 77, 3: 78}, running)
    assert stale == [3]  # not running in the Store any more
    assert c.running[1].run_id == 77
    assert c.finished([TaskResult(1, "ok", run_id=77)])[0].id == 1


def test_orphans_are_running_rows_nobody_reports_after_the_grace_period() -> None:
    clock = FakeClock()
    c = DispatcherCore(settings(), clock)
    now = c.now_ms()
    rows = [
        TaskRow(1, "t", "k" * 64, "l", 128, "running", started_at_ms=now - 10_000),
        TaskRow(2, "t", "j" * 64, "l", 128, "running", started_at_ms=now - 1_000),
    ]
    assert orphans(c, rows, grace_s=5.0) == [1]


def test_transitions_become_the_events_of_semantics() -> None:
    c = core()
    trs = [
        Transition(1, "completed", "t", "k", "l"),
        Transition(2, "retry", "t", "k", "l", error="boom"),
        Transition(3, "failed", "t", "k", "l", error="bad"),
        Transition(4, "waiting", "t", "k", "l", children_count=3),
        Transition(5, "cancelled", "t", "k", "l"),
        Transition(6, "ignored"),
        Transition(7, "requeued", "t", "k", "l"),
    ]
    _, events, _ = c.transitions(trs)
    assert [(e.type, e.data()["task_id"]) for e in events] == [
        ("completed", 1),
        ("failed", 2),
        ("failed", 3),
        ("waiting", 4),
        ("cancelled", 5),
        ("completed", 7),
    ]
    assert events[1].data()["will_retry"] is True and events[1].data()["error"] == "boom"
    assert events[2].data()["will_retry"] is False
    assert events[3].data()["children_count"] == 3


def test_a_running_task_cancelled_by_the_store_is_cancelled_on_its_host() -> None:
    c = core()
    c.admit([row(1)])
    c.claimed([row(1)])
    cancels, _, hooked = c.transitions(
        [Transition(1, "cancelled", "t", "k", "l", was_running=True)]
    )
    assert cancels == {} and hooked == {b"h1": [1]}  # stopped, its executor told why
    assert c.free_slots() == 4


def test_a_claimed_row_whose_host_is_full_goes_back_instead_of_failing() -> None:
    c = core(max_concurrency=8)
    c.hosts.hello(b"small", "small", ["resize"], 1, 0.0)
    rows = [row(1, task_type="resize"), row(2, task_type="resize")]
    runs, unserved, _ = c.claimed_next(rows)
    assert [r.id for r, _ in runs[b"small"]] == [1]
    assert unserved == [] and c.returned == [2]


# -- readings per host ---------------------------------------------------------------------------


def reported(host_id: str, write_bps: float, machine: str = "") -> HostHeartbeat:
    rates = {"cpu": 0.2, "disk_read_bps": 0.0, "disk_write_bps": write_bps}
    return HostHeartbeat(host_id, [], {**rates, "net_rx_bps": 0.0, "net_tx_bps": 0.0}, machine)


def two_machines(clock: FakeClock) -> DispatcherCore:
    """``here`` shares the monitor's machine (reports nothing), ``far`` (and ``far2``) report
    their own; 10 MB/s of write capacity everywhere, so 9.5 MB/s written leaves 1 MB."""
    c = DispatcherCore(settings(monitoring=True, disk_capacity_bps=(1e9, 10e6)), clock)
    c.hosts.hello(b"here", "here", ["t"], 1, 0.0)
    c.hosts.hello(b"far", "far", ["t"], 4, 0.0)
    c.set_readings(readings(bps=9.5e6))
    return c


def start(c: DispatcherCore, *tasks: TaskRow) -> dict[bytes, list[int]]:
    """Admit and place ``tasks``; the ids placed per host."""
    admitted = set(c.admit(list(tasks)))
    runs, _, _ = c.claimed([t for t in tasks if t.id in admitted])
    return {host: [row.id for row, _ in pairs] for host, pairs in runs.items()}


def writing(task_id: int) -> TaskRow:
    return row(task_id, expected_write_bytes=8_000_000)


def test_a_task_is_judged_by_the_machine_of_the_host_it_goes_to() -> None:
    clock = FakeClock()
    c = two_machines(clock)
    [event] = c.host_reported(b"far", reported("far", 0.0, "far-box"))
    assert event.type == "host_resources"
    assert event.data()["host"] == "far" and event.data()["machine"] == "far-box"
    # far has the most room and an idle disk: 8 + 8 MB fit its 20 MB budget
    assert start(c, writing(1)) == {b"far": [1]}
    assert start(c, writing(2)) == {b"far": [2]}
    # far's disk gets busy: the next writer goes to `here`, where no running task writes
    c.host_reported(b"far", reported("far", 9.5e6, "far-box"))
    assert start(c, writing(3)) == {b"here": [3]}
    # `here` is full and far is held: the budget holds the cycle
    assert c.admit([writing(4), row(5)]) == []
    assert c.state().host_resources == {
        "far": {
            "cpu": 0.2,
            "disk_read_bps": 0.0,
            "disk_write_bps": 9.5e6,
            "net_rx_bps": 0.0,
            "net_tx_bps": 0.0,
        }
    }


def test_host_readings_expire_after_three_heartbeats_and_the_monitors_judge_again() -> None:
    clock = FakeClock()
    c = two_machines(clock)
    c.host_reported(b"far", reported("far", 0.0))
    assert start(c, writing(1)) == {b"far": [1]}
    clock.advance(3.0)  # three heartbeat intervals: still good
    c.set_readings(readings(bps=9.5e6))
    assert c.admit([writing(2)]) == [2]
    c.forget_tentative()
    clock.advance(0.01)
    # past them far is judged like `here`, by the monitor's busy disk, beside the running writer
    assert c.admit([writing(2)]) == []
    assert c.state().host_resources == {}


def test_hosts_on_one_machine_share_its_budget_and_a_lost_host_is_forgotten() -> None:
    clock = FakeClock()
    c = two_machines(clock)
    c.hosts.hello(b"far2", "far2", ["t"], 2, 0.0)
    c.host_reported(b"far", reported("far", 5e6, "box"))
    c.host_reported(b"far2", reported("far2", 5e6, "box"))
    assert start(c, writing(1)) == {b"far": [1]}
    # 2 s x (10 - 5) MB/s = 10 MB: a second 8 MB writer on the same box does not fit, on far2
    # either; `here` takes it (no writer runs on the monitor's machine)
    assert start(c, writing(2)) == {b"here": [2]}
    assert c.admit([writing(3)]) == []
    assert set(c.host_readings) == {b"far", b"far2"}
    for lost in c.hosts.lost(clock.monotonic() + 10.0):  # silent for good
        c.lose_host(lost)
    assert c.host_readings == {}


def test_unusable_host_readings_are_dropped_and_counted() -> None:
    c = two_machines(FakeClock())
    bad = HostHeartbeat("far", [], {"disk_write_bps": float("nan")})
    assert c.host_reported(b"far", bad) == []
    assert c.host_reported(b"far", HostHeartbeat("far", [], {"cpu": "high"})) == []  # type: ignore[dict-item]
    assert c.host_reported(b"nobody", reported("nobody", 0.0)) == []
    assert c.host_reported(b"far", HostHeartbeat("far")) == []  # does not sample: no event
    assert c.malformed == 2 and c.host_readings == {}
