"""The dispatch gate's formulas, with the numbers of semantics.md."""

from __future__ import annotations

from actors.dispatcher.gate import (
    Capacity,
    GateView,
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
