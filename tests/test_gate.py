"""The dispatch gate's formulas, with the numbers of semantics.md."""

from __future__ import annotations

from actors.dispatcher.gate import (
    GateView,
    Readings,
    Verdict,
    disk_check,
    evaluate,
    network_check,
    throttle_check,
)
from bus.kinds import TaskRow


def row(task_id: int = 1, priority: int = 128, **kw: object) -> TaskRow:
    return TaskRow(task_id, "t", f"{task_id:064x}", "l", priority, "pending", **kw)  # type: ignore[arg-type]


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


def test_disk_budget_admits_when_rates_are_zero_or_monitoring_is_off() -> None:
    big = row(expected_read_bytes=10**12)
    assert disk_check(big, GateView(monitoring=True)) is Verdict.ADMIT
    busy = Readings(disk_read_bps=1000.0, disk_write_bps=1000.0)
    assert disk_check(big, GateView(readings=busy, monitoring=False)) is Verdict.ADMIT


def test_disk_budget_is_running_plus_candidate_within_80_percent_of_two_seconds() -> None:
    readings = Readings(disk_read_bps=1000.0, disk_write_bps=500.0)
    running = [row(2, expected_read_bytes=1000, expected_write_bytes=0)]
    view = GateView(running=running, readings=readings, monitoring=True)
    # budget: read 0.8 * 2 * 1000 = 1600, write 0.8 * 2 * 500 = 800
    assert disk_check(row(expected_read_bytes=600), view) is Verdict.ADMIT
    assert disk_check(row(expected_read_bytes=601), view) is Verdict.HOLD
    assert disk_check(row(expected_write_bytes=800), view) is Verdict.ADMIT
    assert disk_check(row(expected_write_bytes=801), view) is Verdict.HOLD


def test_disk_budget_ignores_a_direction_whose_observed_rate_is_zero() -> None:
    view = GateView(readings=Readings(disk_read_bps=100.0), monitoring=True)
    assert disk_check(row(expected_write_bytes=10**9), view) is Verdict.ADMIT


def test_network_budget_skips_tasks_declaring_no_network_io() -> None:
    view = GateView(readings=Readings(net_rx_bps=1.0, net_tx_bps=1.0), monitoring=True)
    assert network_check(row(), view) is Verdict.ADMIT
    assert network_check(row(expected_net_tx_bytes=2), view) is Verdict.HOLD
    assert network_check(row(expected_net_tx_bytes=1), view) is Verdict.ADMIT


def test_learned_io_raises_the_declared_expectation() -> None:
    view = GateView(
        readings=Readings(disk_read_bps=1000.0),
        monitoring=True,
        learned_io={"t": [5000.0, 0, 0, 0]},
    )
    assert disk_check(row(expected_read_bytes=10), view) is Verdict.HOLD


def test_checks_run_in_order_throttle_first() -> None:
    readings = Readings(pressure=0.9, disk_read_bps=1.0)
    view = GateView(readings=readings, monitoring=True)
    assert evaluate(row(priority=192, expected_read_bytes=1), view) is Verdict.HOLD
    assert evaluate(row(priority=64, expected_read_bytes=1), view) is Verdict.ADMIT
    assert evaluate(row(priority=64, expected_read_bytes=2), view) is Verdict.HOLD
