"""Backpressure: sources of pressure, their combination, and the policy that turns it into holds.

* ``PressureSource``: anything with ``pressure() -> float`` (0..1) and ``name() -> str``; an
  application implements it to make the scheduler yield to its own load (an API's queue depth).
* ``CompositePressure``: the max over its sources (none → 0), with a ``(name, value)`` breakdown
  in registration order. Values are clamped to 0..1; a source that raises counts as 0 and is
  logged, so one broken source never stops the ResourceMonitor.
* ``NetworkPressure``: observed network throughput against a bandwidth cap.
* ``ThrottlePolicy``: (priority floor, pressure limit) tiers; the Dispatcher holds a task when,
  for some tier, its priority number ≥ floor and pressure > limit.

The ResourceMonitor evaluates the sources on its loop — the scheduler's actor thread (embedded)
or its own process (Procfile); ``pressure()`` is called there once per sampling interval and must
return promptly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from actors.monitor.sampler import ResourceSnapshot

log = logging.getLogger("taskmill.monitor")

REALTIME, HIGH, NORMAL, BACKGROUND, IDLE = 0, 64, 128, 192, 255
"""The priority tiers as plain numbers (``taskmill.Priority`` is an int with these values)."""


@runtime_checkable
class PressureSource(Protocol):
    """A source of backpressure: ``pressure()`` in 0..1 (1 = saturated) and a stable ``name()``.

    Subclass it or just provide both methods. Values outside 0..1 are clamped; an exception
    counts as 0 for that evaluation.
    """

    def pressure(self) -> float: ...

    def name(self) -> str: ...


@runtime_checkable
class ResourceReader(Protocol):
    """Read access to the latest smoothed ``ResourceSnapshot`` (what ``NetworkPressure`` reads)."""

    def latest(self) -> ResourceSnapshot: ...


def clamp_pressure(value: float) -> float:
    """``value`` as a pressure: clamped to 0..1, NaN as 0."""
    value = float(value)
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


class CompositePressure:
    """The max over registered sources; ``breakdown()`` names each source's value.

    ``errors`` counts evaluations where a source raised (or returned something that is not a
    number); such a source counts as 0. The first failure of a source is logged with its
    traceback, repeats only at debug level until it succeeds again, so a broken source cannot
    flood the log once a second.
    """

    def __init__(self, sources: Iterable[PressureSource] = ()) -> None:
        self._sources: list[PressureSource] = []
        self._failing: set[int] = set()
        self.errors = 0
        for source in sources:
            self.add_source(source)

    def add_source(self, source: PressureSource) -> None:
        """Register ``source`` (after those already registered)."""
        if not isinstance(source, PressureSource):
            raise TypeError(
                f"a pressure source needs pressure() and name() methods, got {source!r}"
            )
        self._sources.append(source)

    @property
    def sources(self) -> tuple[PressureSource, ...]:
        return tuple(self._sources)

    def __len__(self) -> int:
        return len(self._sources)

    def breakdown(self) -> list[tuple[str, float]]:
        """``(name, value)`` of every source, in registration order, each evaluated once."""
        return [self._evaluate(index, source) for index, source in enumerate(self._sources)]

    def pressure(self) -> float:
        """The highest pressure of any source; 0 with no sources."""
        return max((value for _, value in self.breakdown()), default=0.0)

    def _evaluate(self, index: int, source: PressureSource) -> tuple[str, float]:
        name = _name_of(source)
        try:
            value = clamp_pressure(source.pressure())
        except Exception:  # user code: whatever it raises, the source reads 0 this time
            self.errors += 1
            if index in self._failing:
                log.debug("pressure source %r failed again", name, exc_info=True)
            else:
                self._failing.add(index)
                log.warning("pressure source %r failed; it counts as 0", name, exc_info=True)
            return name, 0.0
        self._failing.discard(index)
        return name, value


def _name_of(source: PressureSource) -> str:
    try:
        return str(source.name())
    except Exception:
        log.debug("pressure source %r has no usable name", source, exc_info=True)
        return type(source).__name__


class NetworkPressure:
    """Pressure from network use: ``min(1, (rx + tx bytes/s) / max_bytes_per_sec)``.

    ``reader`` supplies the smoothed rates (the ResourceMonitor passes its ``SmoothedReadings``).
    ``SchedulerBuilder.bandwidth_limit(bps)`` registers one.
    """

    NAME = "network"

    def __init__(self, reader: ResourceReader, max_bytes_per_sec: float) -> None:
        limit = float(max_bytes_per_sec)
        if not limit > 0 or math.isinf(limit):  # `not >` also refuses NaN
            raise ValueError(f"max_bytes_per_sec must be a finite number > 0, got {limit}")
        self.reader = reader
        self.max_bytes_per_sec = limit

    def pressure(self) -> float:
        snapshot = self.reader.latest()
        used = max(0.0, snapshot.net_rx_bytes_per_sec) + max(0.0, snapshot.net_tx_bytes_per_sec)
        return clamp_pressure(used / self.max_bytes_per_sec)

    def name(self) -> str:
        return self.NAME


@dataclass(frozen=True, init=False)
class ThrottlePolicy:
    """Which priorities pressure holds back: ``tiers`` of (priority floor, pressure limit).

    A task is held when, for some tier, its priority number ≥ floor (lower numbers are more
    urgent) and pressure > limit. ``ThrottlePolicy([])`` never holds anything. A policy iterates
    over its tiers, so ``ThrottlePolicy(x)`` accepts a policy or a plain list of pairs alike.
    """

    tiers: tuple[tuple[int, float], ...]

    def __init__(self, tiers: Iterable[Sequence[float]]) -> None:
        normalised: list[tuple[int, float]] = []
        for tier in tiers:
            if len(tier) != 2:
                raise ValueError(f"a throttle tier is (priority floor, limit), got {tier!r}")
            floor, limit = tier
            if isinstance(floor, bool) or not isinstance(floor, int) or not 0 <= floor <= 255:
                raise ValueError(f"a priority floor is an int in 0..=255, got {floor!r}")
            limit = float(limit)
            if not 0.0 <= limit <= 1.0:  # also refuses NaN
                raise ValueError(f"a pressure limit is in 0..1, got {limit}")
            normalised.append((int(floor), limit))
        object.__setattr__(self, "tiers", tuple(normalised))

    @classmethod
    def default_three_tier(cls) -> ThrottlePolicy:
        """BACKGROUND and IDLE held above 50 % pressure, NORMAL above 75 %, HIGH+ never."""
        return cls([(BACKGROUND, 0.50), (NORMAL, 0.75)])

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return iter(self.tiers)

    def __len__(self) -> int:
        return len(self.tiers)

    def held(self, priority: int, pressure: float) -> bool:
        """Whether a task of ``priority`` waits at ``pressure``."""
        return any(priority >= floor and pressure > limit for floor, limit in self.tiers)
