"""Resource sampling: what the machine is doing, as rates, smoothed.

A ``ResourceSampler`` turns the system's counters into a ``ResourceSnapshot`` (CPU usage as a
fraction 0..1 and bytes/s for disk read, disk write, network receive and network send). The
built-in one, ``PsutilSampler`` (``platform_sampler()``), derives each rate from the difference
between two readings of psutil's cumulative counters, over the time between them on an injected
monotonic clock, so it never waits: a call reads counters and returns. It counts the machine's
physical network interfaces and disks only (``DeviceFilter``): loopback and virtual interfaces
carry traffic that never leaves the machine (a deployment's own ZeroMQ connections), and
virtual block devices and partitions would count the same bytes twice.

``SmoothedReadings`` applies an ``Ewma`` per series (docs/semantics.md "Resource sampling":
alpha 0.3, the first sample taken as is); it is also the ``ResourceReader`` that
``NetworkPressure`` reads.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import psutil

from bus.clock import Clock, SystemClock

DEFAULT_ALPHA = 0.3


@dataclass(frozen=True, slots=True)
class ResourceSnapshot:
    """One reading of the machine: ``cpu_usage`` (fraction 0..1) and four rates in bytes/s."""

    cpu_usage: float = 0.0
    io_read_bytes_per_sec: float = 0.0
    io_write_bytes_per_sec: float = 0.0
    net_rx_bytes_per_sec: float = 0.0
    net_tx_bytes_per_sec: float = 0.0


@runtime_checkable
class ResourceSampler(Protocol):
    """Anything with ``sample() -> ResourceSnapshot``; called once per sampling interval.

    It runs on the ResourceMonitor's loop, so it must return promptly (read counters, never wait
    for an interval to pass).
    """

    def sample(self) -> ResourceSnapshot: ...


def _fraction(value: float) -> float:
    """``value`` clamped to 0..1; NaN counts as 0."""
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def _rate(new: float, old: float, seconds: float) -> float:
    # A counter that went back (a disk removed, a NIC reset) has no meaningful delta: report 0.
    return max(0.0, new - old) / seconds


@dataclass(frozen=True, slots=True)
class _Counters:
    read: float
    write: float
    rx: float
    tx: float


LOOPBACK = ("lo", "lo[0-9]*", "Loopback*")
VIRTUAL_INTERFACES = (
    *LOOPBACK,
    "docker*",
    "veth*",
    "br-*",
    "virbr*",
    "tun*",
    "tap*",
    "utun*",
    "bridge*",
    "vmnet*",
    "awdl*",
    "llw*",
)
"""Interface names taken for loopback or virtual wherever the system cannot say (no sysfs)."""
SYSFS = "/sys"
"""Where Linux shows its devices."""
VIRTUAL_DISKS = ("loop*", "ram*", "zram*", "dm-*", "md*", "nbd*")
"""Block device names taken for virtual (or stacked on other disks) wherever sysfs cannot say."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class DeviceFilter:
    """Which network interfaces and disks the sampler counts.

    ``interfaces`` / ``disks``: names or shell patterns (``"eth*"``) to count, exactly those; None
    (the default) counts the physical ones. On Linux an interface is physical when sysfs shows a
    device behind it (``/sys/class/net/<name>/device``) and a disk when it is a whole disk with a
    device behind it (``/sys/block/<name>/device``): loopback, bridges, veth pairs, tunnels,
    loop, RAM and device-mapper disks and partitions are left out. Elsewhere, or when sysfs is
    not there, the names in ``VIRTUAL_INTERFACES`` / ``VIRTUAL_DISKS`` are left out. When that
    leaves no interface at all (a container whose only link is a veth), every interface but
    loopback counts: its traffic still leaves the container.
    """

    def __init__(
        self,
        interfaces: Iterable[str] | None = None,
        disks: Iterable[str] | None = None,
        sysfs: str | None = None,
    ) -> None:
        self.interfaces = None if interfaces is None else tuple(interfaces)
        self.disks = None if disks is None else tuple(disks)
        self.sysfs = sysfs or SYSFS

    def _sys(self, *parts: str) -> str | None:
        """A sysfs directory, or None where there is no sysfs to ask (not Linux)."""
        root = os.path.join(self.sysfs, *parts)
        return root if os.path.isdir(root) else None

    def physical_interface(self, name: str) -> bool:
        if _matches(name, VIRTUAL_INTERFACES):
            return False
        root = self._sys("class", "net")
        return root is None or os.path.exists(os.path.join(root, name, "device"))

    def physical_disk(self, name: str) -> bool:
        if _matches(name, VIRTUAL_DISKS):
            return False
        root = self._sys("block")
        return root is None or os.path.exists(os.path.join(root, name, "device"))

    def network(self, names: Iterable[str]) -> list[str]:
        """The interfaces among ``names`` to count."""
        names = list(names)
        if self.interfaces is not None:
            return [n for n in names if _matches(n, self.interfaces)]
        chosen = [n for n in names if self.physical_interface(n)]
        return chosen or [n for n in names if not _matches(n, LOOPBACK)]

    def block(self, names: Iterable[str]) -> list[str]:
        """The disks among ``names`` to count."""
        if self.disks is not None:
            return [n for n in names if _matches(n, self.disks)]
        return [n for n in names if self.physical_disk(n)]


def _sum(counters: Mapping[str, Any] | None, names: list[str], *fields: str) -> list[float]:
    # psutil answers None or nothing where the platform exposes no counters (some containers).
    found = [counters[n] for n in names] if counters else []
    return [float(sum(getattr(c, f) for c in found)) for f in fields]


def _read_counters(devices: DeviceFilter) -> _Counters:
    disks: Any = psutil.disk_io_counters(perdisk=True)
    nics: Any = psutil.net_io_counters(pernic=True)
    read, write = _sum(disks, devices.block(disks or ()), "read_bytes", "write_bytes")
    rx, tx = _sum(nics, devices.network(nics or ()), "bytes_recv", "bytes_sent")
    return _Counters(read, write, rx, tx)


class PsutilSampler:
    """System-wide CPU, disk and network rates from psutil, without ever blocking.

    Disk and network rates sum the devices ``devices`` selects (``DeviceFilter``: the physical
    ones by default).

    Rates are counter deltas divided by the time since the previous ``sample()`` (or since
    construction) on ``clock.monotonic()``. CPU usage is ``psutil.cpu_percent(interval=None)`` /
    100, which measures since its previous call; the constructor primes it because the first
    value psutil returns is meaningless. (That psutil state is per process: two samplers in one
    process share it, and each then measures since the other's last call.) A ``sample()`` with no
    time elapsed repeats the previous snapshot.
    """

    def __init__(self, clock: Clock | None = None, devices: DeviceFilter | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self.devices = devices or DeviceFilter()
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        self._counters = _read_counters(self.devices)
        self._at = self.clock.monotonic()
        self._last = ResourceSnapshot()

    def sample(self) -> ResourceSnapshot:
        now = self.clock.monotonic()
        cpu = _fraction(float(psutil.cpu_percent(interval=None)) / 100.0)
        counters = _read_counters(self.devices)
        elapsed = now - self._at
        if elapsed <= 0:
            return self._last
        old = self._counters
        self._last = ResourceSnapshot(
            cpu_usage=cpu,
            io_read_bytes_per_sec=_rate(counters.read, old.read, elapsed),
            io_write_bytes_per_sec=_rate(counters.write, old.write, elapsed),
            net_rx_bytes_per_sec=_rate(counters.rx, old.rx, elapsed),
            net_tx_bytes_per_sec=_rate(counters.tx, old.tx, elapsed),
        )
        self._counters, self._at = counters, now
        return self._last


def platform_sampler(
    clock: Clock | None = None,
    *,
    interfaces: Iterable[str] | None = None,
    disks: Iterable[str] | None = None,
) -> ResourceSampler:
    """The built-in sampler for this platform (psutil: Linux, macOS, Windows, BSD), counting the
    named interfaces and disks (names or shell patterns), else the physical ones."""
    return PsutilSampler(clock, DeviceFilter(interfaces, disks))


def _alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"ewma_alpha must be in (0, 1], got {alpha}")
    return alpha


class Ewma:
    """An exponentially weighted moving average: ``alpha * x + (1 - alpha) * previous``.

    The first sample is taken as is; ``value`` is None until then. A NaN or infinite sample is
    ignored (it would poison every later value).
    """

    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = _alpha(alpha)
        self.value: float | None = None

    def update(self, sample: float) -> float:
        sample = float(sample)
        if not math.isfinite(sample):
            return 0.0 if self.value is None else self.value
        if self.value is None:
            self.value = sample
        else:
            self.value = self.alpha * sample + (1.0 - self.alpha) * self.value
        return self.value


class SmoothedReadings:
    """One ``Ewma`` per series (cpu, disk read, disk write, net rx, net tx).

    ``update`` folds in a raw snapshot (CPU clamped to 0..1, negative rates as 0) and returns the
    smoothed one; ``latest()`` (so this is a
    ``ResourceReader``) is the last smoothed snapshot, all zeros before the first sample.
    """

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        self.alpha = _alpha(alpha)
        self._series = tuple(Ewma(self.alpha) for _ in range(5))
        self._latest = ResourceSnapshot()
        self.samples = 0

    def update(self, snapshot: ResourceSnapshot) -> ResourceSnapshot:
        cpu, read, write, rx, tx = self._series
        self._latest = ResourceSnapshot(
            cpu_usage=cpu.update(_fraction(snapshot.cpu_usage)),
            io_read_bytes_per_sec=read.update(max(0.0, snapshot.io_read_bytes_per_sec)),
            io_write_bytes_per_sec=write.update(max(0.0, snapshot.io_write_bytes_per_sec)),
            net_rx_bytes_per_sec=rx.update(max(0.0, snapshot.net_rx_bytes_per_sec)),
            net_tx_bytes_per_sec=tx.update(max(0.0, snapshot.net_tx_bytes_per_sec)),
        )
        self.samples += 1
        return self._latest

    def latest(self) -> ResourceSnapshot:
        return self._latest
