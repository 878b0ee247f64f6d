"""Resource sampling: what the machine is doing, as rates, smoothed.

A ``ResourceSampler`` turns the system's counters into a ``ResourceSnapshot`` (CPU usage as a
fraction 0..1 and bytes/s for disk read, disk write, network receive and network send). The
built-in one, ``PsutilSampler`` (``platform_sampler()``), derives each rate from the difference
between two readings of psutil's cumulative counters, over the time between them on an injected
monotonic clock, so it never waits: a call reads counters and returns.

``SmoothedReadings`` applies an ``Ewma`` per series (semantics.md "Resource sampling": alpha 0.3,
the first sample taken as is); it is also the ``ResourceReader`` that ``NetworkPressure`` reads.
"""

from __future__ import annotations

import math
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


def _read_counters() -> _Counters:
    disk: Any = psutil.disk_io_counters()
    net: Any = psutil.net_io_counters()
    # psutil answers None where the platform exposes no counters (some containers): no traffic.
    return _Counters(
        read=float(disk.read_bytes) if disk is not None else 0.0,
        write=float(disk.write_bytes) if disk is not None else 0.0,
        rx=float(net.bytes_recv) if net is not None else 0.0,
        tx=float(net.bytes_sent) if net is not None else 0.0,
    )


class PsutilSampler:
    """System-wide CPU, disk and network rates from psutil, without ever blocking.

    Rates are counter deltas divided by the time since the previous ``sample()`` (or since
    construction) on ``clock.monotonic()``. CPU usage is ``psutil.cpu_percent(interval=None)`` /
    100, which measures since its previous call; the constructor primes it because the first
    value psutil returns is meaningless. (That psutil state is per process: two samplers in one
    process share it, and each then measures since the other's last call.) A ``sample()`` with no
    time elapsed repeats the previous snapshot.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless
        self._counters = _read_counters()
        self._at = self.clock.monotonic()
        self._last = ResourceSnapshot()

    def sample(self) -> ResourceSnapshot:
        now = self.clock.monotonic()
        cpu = _fraction(float(psutil.cpu_percent(interval=None)) / 100.0)
        counters = _read_counters()
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


def platform_sampler(clock: Clock | None = None) -> ResourceSampler:
    """The built-in sampler for this platform (psutil: Linux, macOS, Windows, BSD)."""
    return PsutilSampler(clock)


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
