"""Backpressure: CompositePressure, NetworkPressure and ThrottlePolicy, with numbers."""

from __future__ import annotations

import logging

import pytest

from actors.monitor.pressure import (
    CompositePressure,
    NetworkPressure,
    PressureSource,
    ThrottlePolicy,
)
from actors.monitor.sampler import ResourceSnapshot
from taskmill.priority import Priority


class Fixed(PressureSource):
    def __init__(self, name: str, value: float) -> None:
        self._name = name
        self.value = value

    def pressure(self) -> float:
        return self.value

    def name(self) -> str:
        return self._name


class Broken(PressureSource):
    def __init__(self) -> None:
        self.calls = 0

    def pressure(self) -> float:
        self.calls += 1
        raise RuntimeError("api unreachable")

    def name(self) -> str:
        return "broken"


class Reader:
    def __init__(self, rx: float, tx: float) -> None:
        self.snapshot = ResourceSnapshot(net_rx_bytes_per_sec=rx, net_tx_bytes_per_sec=tx)

    def latest(self) -> ResourceSnapshot:
        return self.snapshot


# -- CompositePressure --------------------------------------------------------------------------


def test_no_sources_is_no_pressure() -> None:
    composite = CompositePressure()
    assert composite.pressure() == 0.0
    assert composite.breakdown() == []


def test_pressure_is_the_max_and_the_breakdown_keeps_registration_order() -> None:
    composite = CompositePressure([Fixed("api", 0.4), Fixed("db", 0.9)])
    composite.add_source(Fixed("queue", 0.1))
    assert composite.pressure() == 0.9
    assert composite.breakdown() == [("api", 0.4), ("db", 0.9), ("queue", 0.1)]


def test_values_are_clamped_to_0_1_and_nan_reads_0() -> None:
    composite = CompositePressure(
        [Fixed("hot", 3.0), Fixed("neg", -0.5), Fixed("nan", float("nan"))]
    )
    assert composite.breakdown() == [("hot", 1.0), ("neg", 0.0), ("nan", 0.0)]
    assert composite.pressure() == 1.0


def test_a_raising_source_counts_as_0_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    broken = Broken()
    composite = CompositePressure([broken, Fixed("api", 0.3)])
    with caplog.at_level(logging.DEBUG, logger="taskmill.monitor"):
        assert composite.breakdown() == [("broken", 0.0), ("api", 0.3)]
        assert composite.pressure() == 0.3
    assert (broken.calls, composite.errors) == (2, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "broken" in warnings[0].getMessage()
    assert warnings[0].exc_info is not None


def test_a_duck_typed_source_is_accepted_and_an_object_without_methods_is_not() -> None:
    class Duck:
        def pressure(self) -> float:
            return 0.2

        def name(self) -> str:
            return "duck"

    composite = CompositePressure([Duck()])
    assert composite.breakdown() == [("duck", 0.2)]
    with pytest.raises(TypeError):
        composite.add_source(object())  # type: ignore[arg-type]


# -- NetworkPressure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rx", "tx", "expected"),
    [
        (0.0, 0.0, 0.0),
        (10_000.0, 15_000.0, 0.25),
        (60_000.0, 40_000.0, 1.0),
        (90_000.0, 90_000.0, 1.0),
    ],
)
def test_network_pressure_is_throughput_over_the_cap(rx: float, tx: float, expected: float) -> None:
    source = NetworkPressure(Reader(rx, tx), 100_000)
    assert source.pressure() == pytest.approx(expected)
    assert source.name() == "network"


def test_network_pressure_follows_the_reader() -> None:
    reader = Reader(0.0, 0.0)
    source = NetworkPressure(reader, 1_000.0)
    assert source.pressure() == 0.0
    reader.snapshot = ResourceSnapshot(net_rx_bytes_per_sec=500.0, net_tx_bytes_per_sec=250.0)
    assert source.pressure() == 0.75


@pytest.mark.parametrize("limit", [0, -1.0, float("nan"), float("inf")])
def test_network_pressure_needs_a_positive_cap(limit: float) -> None:
    with pytest.raises(ValueError):
        NetworkPressure(Reader(0, 0), limit)


# -- ThrottlePolicy -----------------------------------------------------------------------------


def test_default_three_tier_policy_tiers() -> None:
    policy = ThrottlePolicy.default_three_tier()
    assert policy.tiers == ((192, 0.50), (128, 0.75))
    assert policy.tiers == ((Priority.BACKGROUND, 0.50), (Priority.NORMAL, 0.75))


@pytest.mark.parametrize(
    ("priority", "pressure", "held"),
    [
        (Priority.IDLE, 0.50, False),
        (Priority.IDLE, 0.51, True),
        (Priority.BACKGROUND, 0.50, False),
        (Priority.BACKGROUND, 0.51, True),
        (Priority.BACKGROUND + 1, 0.6, True),
        (Priority.BACKGROUND - 1, 0.6, False),  # NORMAL tier: only above 0.75
        (Priority.NORMAL, 0.50, False),
        (Priority.NORMAL, 0.75, False),
        (Priority.NORMAL, 0.76, True),
        (Priority.HIGH, 1.0, False),
        (Priority.NORMAL - 1, 1.0, False),
        (Priority.REALTIME, 1.0, False),
        (Priority.IDLE, 0.0, False),
    ],
)
def test_default_policy_holds_by_tier(priority: int, pressure: float, held: bool) -> None:
    assert ThrottlePolicy.default_three_tier().held(priority, pressure) is held


def test_a_custom_policy_and_an_empty_one() -> None:
    policy = ThrottlePolicy([(Priority.HIGH, 0.9)])
    assert policy.held(Priority.HIGH, 0.95)
    assert not policy.held(Priority.REALTIME, 1.0)
    assert not ThrottlePolicy([]).held(Priority.IDLE, 1.0)
    assert ThrottlePolicy([[64, 1]]).tiers == ((64, 1.0),)  # lists, as msgpack returns them
    assert ThrottlePolicy([(64, 0.5)]) == ThrottlePolicy([(Priority.HIGH, 0.5)])
    default = ThrottlePolicy.default_three_tier()
    assert ThrottlePolicy(default) == default  # a policy or a list of pairs, alike
    assert list(default) == [(192, 0.5), (128, 0.75)]


@pytest.mark.parametrize(
    "tiers",
    [[(256, 0.5)], [(-1, 0.5)], [(True, 0.5)], [(64.0, 0.5)], [(64, 1.5)], [(64, float("nan"))]],
)
def test_a_policy_refuses_tiers_out_of_range(tiers: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(tiers)
