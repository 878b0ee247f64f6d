"""Resource sampling: the EWMA with numbers, and psutil counter deltas with a fake clock.

psutil is the one edge faked here (monkeypatched counters): the sampler's own arithmetic runs
for real.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import psutil
import pytest

from actors.monitor import sampler as sampler_module
from actors.monitor.sampler import (
    DeviceFilter,
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
    """Cumulative counters per device that the test moves; ``cpu_percent`` answers from a queue.

    ``disk`` and ``net`` are the counters of the one physical disk (sda) and interface (eth0);
    ``disks`` and ``nics`` hold every device, virtual ones included.
    """

    def __init__(self) -> None:
        self.disks: dict[str, Disk] | None = {"sda": Disk(0, 0)}
        self.nics: dict[str, Net] | None = {"eth0": Net(0, 0)}
        self.cpu: list[float] = []
        self.cpu_calls: list[Any] = []

    @property
    def disk(self) -> Disk | None:
        return self.disks["sda"] if self.disks else None

    @disk.setter
    def disk(self, value: Disk | None) -> None:
        self.disks = None if value is None else {**(self.disks or {}), "sda": value}

    @property
    def net(self) -> Net | None:
        return self.nics["eth0"] if self.nics else None

    @net.setter
    def net(self, value: Net | None) -> None:
        self.nics = None if value is None else {**(self.nics or {}), "eth0": value}

    def cpu_percent(self, interval: Any = "unset") -> float:
        self.cpu_calls.append(interval)
        return self.cpu.pop(0) if self.cpu else 0.0

    def disk_io_counters(self, perdisk: bool = False) -> dict[str, Disk] | Disk | None:
        if self.disks is None:
            return None
        if perdisk:
            return dict(self.disks)
        # psutil's total: every whole device, virtual ones included
        whole = [d for name, d in self.disks.items() if not name[-1].isdigit() or "loop" in name]
        return Disk(*(sum(column) for column in zip(*whole, strict=True)))

    def net_io_counters(self, pernic: bool = False) -> dict[str, Net] | Net | None:
        if self.nics is None:
            return None
        if pernic:
            return dict(self.nics)
        return Net(*(sum(column) for column in zip(*self.nics.values(), strict=True)))  # all


def fake_sysfs(root: Path, physical: dict[str, list[str]], virtual: dict[str, list[str]]) -> str:
    """A sysfs tree as Linux shows it: ``class/net/<if>`` and ``block/<disk>``, with a
    ``device`` entry behind the physical ones only."""
    for where, names in physical.items():
        for name in names:
            (root / where / name / "device").mkdir(parents=True)
    for where, names in virtual.items():
        for name in names:
            (root / where / name).mkdir(parents=True)
    return str(root)


@pytest.fixture
def fake_psutil(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakePsutil:
    fake = FakePsutil()
    for name in ("cpu_percent", "disk_io_counters", "net_io_counters"):
        monkeypatch.setattr(psutil, name, getattr(fake, name))
    sysfs = fake_sysfs(
        tmp_path / "sys",
        {"class/net": ["eth0", "eth1"], "block": ["sda", "nvme0n1"]},
        {"class/net": ["lo", "docker0", "veth9a", "br-1f", "tun0"], "block": ["loop0", "zram0"]},
    )
    monkeypatch.setattr(sampler_module, "SYSFS", sysfs)
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


# -- which devices count ------------------------------------------------------------------------


def test_loopback_and_virtual_interfaces_and_disks_do_not_count(fake_psutil: FakePsutil) -> None:
    clock = FakeClock()
    sampler = PsutilSampler(clock)
    clock.advance(1.0)
    # A deployment on one machine talks to itself over loopback; containers over bridges and veths.
    fake_psutil.nics = {
        "lo": Net(900_000, 900_000),
        "docker0": Net(50_000, 50_000),
        "veth9a": Net(50_000, 50_000),
        "br-1f": Net(7_000, 7_000),
        "tun0": Net(3_000, 3_000),
        "eth0": Net(1_000, 200),
        "eth1": Net(500, 100),
    }
    fake_psutil.disks = {
        "sda": Disk(4_000, 2_000),
        "sda1": Disk(4_000, 2_000),  # a partition of sda: the same bytes again
        "nvme0n1": Disk(1_000, 0),
        "loop0": Disk(80_000, 80_000),
        "zram0": Disk(60_000, 60_000),
    }
    snapshot = sampler.sample()
    assert (snapshot.net_rx_bytes_per_sec, snapshot.net_tx_bytes_per_sec) == (1_500.0, 300.0)
    assert (snapshot.io_read_bytes_per_sec, snapshot.io_write_bytes_per_sec) == (5_000.0, 2_000.0)


def test_listed_interfaces_and_disks_count_and_nothing_else(fake_psutil: FakePsutil) -> None:
    clock = FakeClock()
    fake_psutil.nics = {"lo": Net(0, 0), "eth0": Net(0, 0), "eth1": Net(0, 0)}
    fake_psutil.disks = {"sda": Disk(0, 0), "loop0": Disk(0, 0), "loop1": Disk(0, 0)}
    sampler = PsutilSampler(clock, DeviceFilter(interfaces=["lo", "eth1"], disks=["loop*"]))
    clock.advance(2.0)
    fake_psutil.nics = {"lo": Net(400, 200), "eth0": Net(10_000, 10_000), "eth1": Net(600, 0)}
    fake_psutil.disks = {"sda": Disk(9_000, 9_000), "loop0": Disk(100, 0), "loop1": Disk(0, 300)}
    snapshot = sampler.sample()
    assert (snapshot.net_rx_bytes_per_sec, snapshot.net_tx_bytes_per_sec) == (500.0, 100.0)
    assert (snapshot.io_read_bytes_per_sec, snapshot.io_write_bytes_per_sec) == (50.0, 150.0)


def test_a_container_with_only_a_veth_counts_it_but_not_loopback(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path, {}, {"class/net": ["lo", "eth0"], "block": []})
    devices = DeviceFilter(sysfs=sysfs)
    assert devices.network(["lo", "eth0"]) == ["eth0"]
    assert DeviceFilter(sysfs=str(tmp_path / "none")).network(["lo0", "en0", "utun3"]) == ["en0"]
    assert DeviceFilter(sysfs=str(tmp_path / "none")).block(["disk0", "ram0"]) == ["disk0"]
