"""Resource sampling: the EWMA with numbers, and psutil counter deltas with a fake clock.

psutil is the one edge faked here (monkeypatched counters): the sampler's own arithmetic runs
for real.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import psutil
import pytest

from actors.monitor.sampler import (
    Ewma,
    PsutilSampler,
    ResourceSampler,
    ResourceSnapshot,
    SmoothedReadings,
    platform_sampler,
)
from bus.clock import FakeClock

Disk = namedtuple("Disk", "read_bytes write_bytes")
Net = namedtuple("Net", "bytes_recv bytes_sent")


class FakePsutil:
    """Cumulative counters that the test moves; ``cpu_percent`` answers from a queue."""

    def __init__(self) -> None:
        self.disk: Disk | None = Disk(0, 0)
        self.net: Net | None = Net(0, 0)
        self.cpu: list[float] = []
        self.cpu_calls: list[Any] = []

    def cpu_percent(self, interval: Any = "unset") -> float:
        self.cpu_calls.append(interval)
        return self.cpu.pop(0) if self.cpu else 0.0

    def disk_io_counters(self) -> Disk | None:
        return self.disk

    def net_io_counters(self) -> Net | None:
        return self.net


@pytest.fixture
def fake_psutil(monkeypatch: pytest.MonkeyPatch) -> FakePsutil:
    fake = FakePsutil()
    for name in ("cpu_percent", "disk_io_counters", "net_io_counters"):
        monkeypatch.setattr(psutil, name, getattr(fake, name))
    return fake


# -- Ewma ---------------------------------------------------------------------------------------


def test_the_first_sample_is_taken_as_is_then_alpha_weights_the_newest() -> None:
    ewma = Ewma()
    assert ewma.value is None
    assert ewma.update(100.0) == 100.0
    assert ewma.update(0.0) == pytest.approx(70.0)  # 0.3 * 0 + 0.7 * 100
    assert ewma.update(200.0) == pytest.approx(109.0)  # 0.3 * 200 + 0.7 * 70
    assert ewma.update(109.0) == pytest.approx(109.0)


def test_a_custom_alpha_and_invalid_ones() -> None:
    ewma = Ewma(0.5)
    ewma.update(10.0)
    assert ewma.update(20.0) == 15.0
    assert Ewma(1.0).update(3.0) == 3.0
    for alpha in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            Ewma(alpha)


def test_non_finite_samples_do_not_poison_the_average() -> None:
    ewma = Ewma()
    ewma.update(10.0)
    assert ewma.update(float("nan")) == 10.0
    assert ewma.update(float("inf")) == 10.0
    assert ewma.update(20.0) == pytest.approx(13.0)


def test_smoothed_readings_apply_one_ewma_per_series() -> None:
    smoothed = SmoothedReadings()
    assert smoothed.latest() == ResourceSnapshot()  # zeros before the first sample
    first = ResourceSnapshot(0.5, 1000.0, 2000.0, 300.0, 400.0)
    assert smoothed.update(first) == first
    second = smoothed.update(ResourceSnapshot(1.0, 0.0, 4000.0, 300.0, 0.0))
    assert second.cpu_usage == pytest.approx(0.65)  # 0.3 * 1.0 + 0.7 * 0.5
    assert second.io_read_bytes_per_sec == pytest.approx(700.0)
    assert second.io_write_bytes_per_sec == pytest.approx(2600.0)
    assert second.net_rx_bytes_per_sec == pytest.approx(300.0)
    assert second.net_tx_bytes_per_sec == pytest.approx(280.0)
    assert smoothed.latest() == second
    assert smoothed.samples == 2


def test_smoothed_readings_clamp_cpu_and_negative_rates() -> None:
    smoothed = SmoothedReadings()
    out = smoothed.update(ResourceSnapshot(1.7, -5.0, 0.0, 0.0, 0.0))
    assert (out.cpu_usage, out.io_read_bytes_per_sec) == (1.0, 0.0)


# -- PsutilSampler ------------------------------------------------------------------------------


def test_rates_are_counter_deltas_over_the_clock(fake_psutil: FakePsutil) -> None:
    clock = FakeClock()
    fake_psutil.disk = Disk(1_000, 5_000)
    fake_psutil.net = Net(10, 20)
    sampler = PsutilSampler(clock)
    assert fake_psutil.cpu_calls == [None]  # primed at construction, without waiting

    clock.advance(2.0)
    fake_psutil.disk = Disk(3_000, 5_500)
    fake_psutil.net = Net(4_010, 1_020)
    fake_psutil.cpu = [37.5]
    assert sampler.sample() == ResourceSnapshot(
        cpu_usage=0.375,
        io_read_bytes_per_sec=1_000.0,
        io_write_bytes_per_sec=250.0,
        net_rx_bytes_per_sec=2_000.0,
        net_tx_bytes_per_sec=500.0,
    )

    clock.advance(0.5)
    fake_psutil.disk = Disk(3_500, 5_500)
    fake_psutil.cpu = [100.0]
    snapshot = sampler.sample()
    assert snapshot.io_read_bytes_per_sec == 1_000.0  # 500 bytes in 0.5 s
    assert (snapshot.io_write_bytes_per_sec, snapshot.net_rx_bytes_per_sec) == (0.0, 0.0)
    assert snapshot.cpu_usage == 1.0
    assert all(call is None for call in fake_psutil.cpu_calls)  # never an interval that waits


def test_cpu_is_a_fraction_clamped_to_0_1(fake_psutil: FakePsutil) -> None:
    clock = FakeClock()
    sampler = PsutilSampler(clock)
    for percent, fraction in ((0.0, 0.0), (50.0, 0.5), (130.0, 1.0), (-3.0, 0.0)):
        clock.advance(1.0)
        fake_psutil.cpu = [percent]
        assert sampler.sample().cpu_usage == fraction


def test_a_counter_that_goes_back_reads_0_and_no_elapsed_time_repeats(
    fake_psutil: FakePsutil,
) -> None:
    clock = FakeClock()
    fake_psutil.disk = Disk(10_000, 10_000)
    sampler = PsutilSampler(clock)
    clock.advance(1.0)
    fake_psutil.disk = Disk(12_000, 4_000)  # write counter reset (a disk went away)
    first = sampler.sample()
    assert (first.io_read_bytes_per_sec, first.io_write_bytes_per_sec) == (2_000.0, 0.0)
    fake_psutil.disk = Disk(99_000, 99_000)
    assert sampler.sample() == first  # no time passed: no rate to compute
    clock.advance(1.0)
    assert sampler.sample().io_read_bytes_per_sec == 87_000.0  # from the last real reading


def test_platforms_without_counters_read_zero_rates(fake_psutil: FakePsutil) -> None:
    clock = FakeClock()
    fake_psutil.disk = None
    fake_psutil.net = None
    sampler = PsutilSampler(clock)
    clock.advance(1.0)
    assert sampler.sample() == ResourceSnapshot()


def test_the_platform_sampler_reads_this_machine() -> None:
    sampler = platform_sampler()
    assert isinstance(sampler, ResourceSampler)
    snapshot = sampler.sample()
    assert 0.0 <= snapshot.cpu_usage <= 1.0
    assert (
        min(
            snapshot.io_read_bytes_per_sec,
            snapshot.io_write_bytes_per_sec,
            snapshot.net_rx_bytes_per_sec,
            snapshot.net_tx_bytes_per_sec,
        )
        >= 0.0
    )
