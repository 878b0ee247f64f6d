"""The dispatch gate's formulas, with the numbers of docs/semantics.md."""

from __future__ import annotations

from collections import Counter

from actors.dispatcher.gate import (
    Capacity,
    GateView,
    IOLearning,
    Readings,
    Verdict,
    disk_check,
    evaluate,
    network_check,
    throttle_check,
)
from bus.kinds import TaskRow


def row(task_id: int = 1, priority: int = 128, task_type: str = "t", **kw: object) -> TaskRow:
    return TaskRow(task_id, task_type, f"{task_id:064x}", "l", priority, "pending", **kw)  # type: ignore[arg-type]


def test_default_throttle_holds_background_above_half_normal_above_three_quarters() -> None:
    def verdict(priority: int, pressure: float) -> Verdict:
        return throttle_check(
            row(priority=priority), GateView(readings=Readings(pressure=pressure))
        )

    assert verdict(192, 0.50) is Verdict.ADMIT
    assert verdict(192, 0.51) is Verdict.HOLD
    assert verdict(255, 0.51) is Verdict.HOLD
    assert verdict(128, 0.75) is Verdict.ADMIT
    assert verdict(128, 0.76) is Verdict.HOLD
    assert verdict(64, 1.0) is Verdict.ADMIT
    assert verdict(0, 1.0) is Verdict.ADMIT


MB = 1_000_000


def budget_view(
    running: list[TaskRow] | None = None,
    capacity: tuple[float, float, float, float] = (100 * MB,) * 4,
    **rates: float,
) -> GateView:
    return GateView(
        running=running or [], readings=Readings(**rates), monitoring=True, capacity=capacity
    )


def test_the_budget_is_off_without_monitoring() -> None:
    running = [row(2, expected_read_bytes=10**12)]
    view = GateView(running=running, readings=Readings(disk_read_bps=1e12), monitoring=False)
    assert disk_check(row(expected_read_bytes=10**12), view) is Verdict.ADMIT


def test_the_budget_is_two_seconds_of_headroom_below_capacity() -> None:
    # capacity 100 MB/s, 40 MB/s observed: 2 s x 60 MB/s = 120 MB for running + candidate
    running = [row(2, expected_read_bytes=20 * MB, expected_net_rx_bytes=20 * MB)]
    view = budget_view(running, disk_read_bps=40 * MB, net_rx_bps=40 * MB)
    assert disk_check(row(expected_read_bytes=100 * MB), view) is Verdict.ADMIT
    assert disk_check(row(expected_read_bytes=100 * MB + 1), view) is Verdict.HOLD
    assert network_check(row(expected_net_rx_bytes=100 * MB), view) is Verdict.ADMIT
    assert network_check(row(expected_net_rx_bytes=100 * MB + 1), view) is Verdict.HOLD


def test_a_quiet_machine_leaves_the_whole_capacity_not_a_budget_of_nothing() -> None:
    """An upload declaring network bytes while the machine sends ~2 B/s starts."""
    running = [row(2, expected_net_tx_bytes=5 * MB)]
    view = budget_view(running, capacity=(50 * MB,) * 4, net_tx_bps=2.0, net_rx_bps=2.0)
    assert network_check(row(expected_net_tx_bytes=5 * MB), view) is Verdict.ADMIT


def test_each_axis_is_checked_on_its_own_and_an_axis_expecting_nothing_passes() -> None:
    running = [row(2, expected_read_bytes=10**12, expected_net_rx_bytes=10**12)]
    view = budget_view(running, disk_read_bps=100 * MB, net_rx_bps=100 * MB)
    assert disk_check(row(expected_write_bytes=10 * MB), view) is Verdict.ADMIT
    assert disk_check(row(expected_read_bytes=1), view) is Verdict.HOLD
    assert network_check(row(expected_net_tx_bytes=10 * MB), view) is Verdict.ADMIT
    assert network_check(row(expected_net_rx_bytes=1), view) is Verdict.HOLD
    assert evaluate(row(), view) is Verdict.ADMIT


def test_no_starvation_a_task_is_admitted_when_nothing_running_does_io_on_its_axis() -> None:
    saturated = {"disk_read_bps": 500 * MB, "disk_write_bps": 500 * MB}
    huge = row(expected_read_bytes=10**12)
    assert disk_check(huge, budget_view(**saturated)) is Verdict.ADMIT
    only_network = [row(2, expected_net_tx_bytes=10**12), row(3)]
    assert disk_check(huge, budget_view(only_network, **saturated)) is Verdict.ADMIT
    reading = [row(2, expected_read_bytes=1)]
    assert disk_check(huge, budget_view(reading, **saturated)) is Verdict.HOLD


def test_learned_io_raises_the_declared_expectation() -> None:
    view = GateView(
        running=[row(2, task_type="u", expected_read_bytes=1)],
        readings=Readings(disk_read_bps=50 * MB),
        monitoring=True,
        capacity=(100 * MB,) * 4,
        learned_io={"t": [200.0 * MB, 0, 0, 0]},
    )
    assert disk_check(row(expected_read_bytes=10), view) is Verdict.HOLD
    assert disk_check(row(task_type="u", expected_read_bytes=10), view) is Verdict.ADMIT


def test_a_running_task_with_learned_io_counts_against_the_budget() -> None:
    view = budget_view([row(2, task_type="big")], disk_write_bps=0.0)
    assert disk_check(row(expected_write_bytes=10**12), view) is Verdict.ADMIT
    view.learned_io = {"big": [0.0, 150.0 * MB, 0.0, 0.0]}
    assert disk_check(row(expected_write_bytes=50 * MB), view) is Verdict.ADMIT
    assert disk_check(row(expected_write_bytes=50 * MB + 1), view) is Verdict.HOLD


def test_capacity_is_the_configured_one_or_the_hour_peak_never_below_50_mb() -> None:
    capacity = Capacity((10 * MB, None, None, None))
    assert capacity.current(0.0) == (10 * MB, 50 * MB, 50 * MB, 50 * MB)
    capacity.observe((500 * MB, 80 * MB, 20 * MB, 60 * MB), 0.0)
    capacity.observe((1 * MB, 70 * MB, 1 * MB, 1 * MB), 1800.0)
    assert capacity.current(1800.0) == (10 * MB, 80 * MB, 50 * MB, 60 * MB)
    assert capacity.current(3600.0) == (10 * MB, 80 * MB, 50 * MB, 60 * MB)
    assert capacity.current(3600.5) == (10 * MB, 70 * MB, 50 * MB, 50 * MB)
    assert capacity.current(5400.5) == (10 * MB, 50 * MB, 50 * MB, 50 * MB)


def test_checks_run_in_order_throttle_first() -> None:
    running = [row(2, expected_read_bytes=1)]
    view = budget_view(running, pressure=0.9, disk_read_bps=100 * MB)
    assert evaluate(row(priority=192), view) is Verdict.HOLD
    assert evaluate(row(priority=64, expected_read_bytes=1), view) is Verdict.HOLD
    assert evaluate(row(priority=64, expected_write_bytes=1), view) is Verdict.ADMIT


def test_a_completed_run_of_a_type_not_learned_yet_holds_its_type_until_the_answer() -> None:
    learning = IOLearning(refresh_s=5.0)
    learning.completed(run_id=1, task_type="copy")
    learning.completed(run_id=2, task_type="copy")
    assert learning.waiting == {"copy"}
    view = GateView(monitoring=True, learning=learning.waiting)
    assert evaluate(row(task_type="copy"), view) is Verdict.HOLD
    assert evaluate(row(task_type="other"), view) is Verdict.ADMIT
    assert evaluate(row(task_type="copy"), GateView(learning=learning.waiting)) is Verdict.ADMIT
    # Run 1's result goes out alone: a refresh is asked at once, whatever the rate limit.
    assert learning.sent([1], now=0.0) == (["copy"], Counter(copy=1))
    learning.answered({}, Counter(copy=1))  # 4 runs: nothing learned yet
    assert learning.waiting == {"copy"}  # run 2's answer is still to come
    assert learning.sent([2], now=0.1) == (["copy"], Counter(copy=1))
    learning.answered({"copy": [1e6, 0.0, 0.0, 0.0]}, Counter(copy=1))
    assert learning.waiting == frozenset() and learning.means["copy"][0] == 1e6


def test_learned_types_are_refreshed_at_most_every_interval() -> None:
    learning = IOLearning(refresh_s=5.0)
    assert learning.due(0.0) == []  # at start: every type in history
    learning.answered({"copy": [1.0, 0.0, 0.0, 0.0]}, Counter())
    assert learning.due(10.0) is None  # nothing completed since
    learning.completed(1, "copy")
    assert learning.waiting == frozenset()  # learned already: nothing waits
    assert learning.sent([1], now=10.0) == (["copy"], Counter(copy=1))
    learning.completed(2, "copy")
    assert learning.sent([2], now=11.0) is None  # asked 1 s ago
    assert learning.due(12.0) is None
    assert learning.due(15.0) == ["copy"]


def test_a_refresh_that_fails_holds_nothing_and_is_asked_again() -> None:
    learning = IOLearning(refresh_s=5.0)
    assert learning.due(0.0) == []
    learning.failed([], Counter())
    assert learning.due(0.5) is None  # asked 0.5 s ago
    assert learning.due(5.0) == []  # the whole history again
    learning.completed(1, "copy")
    asked = learning.sent([1], now=6.0)
    assert asked is not None
    learning.failed(*asked)
    assert learning.waiting == frozenset()
    assert learning.due(11.0) == ["copy"]
