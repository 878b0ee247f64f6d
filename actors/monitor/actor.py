"""The ResourceMonitor actor (``monitor``): samples the machine and combines pressure.

Owns the resource sampler and its smoothing (one EWMA per series), the registered pressure
sources (``CompositePressure``, plus ``NetworkPressure`` when a bandwidth limit is set) and the
latest pressure reading of every source that reports over the bus.

Sockets:

* XPUB bound at ``readings_endpoint`` (a ``bus.publishing.PublishingSocket``: closed and bound
  again when its subscriptions pass ``MAX_SUBSCRIPTIONS`` distinct topics, which frees what
  libzmq kept of them; the subscribers connect again): sends ``monitor.readings``
  (``Readings``), plain four frames, to the Dispatcher (and anyone else) subscribed to ``b""``.
  What peers send it is read and dropped.
* PULL bound at ``pressure_endpoint``: any process PUSHes ``monitor.pressure``
  (``PressureReading``) one-way. Malformed frames, other kinds, a non-finite value or an
  unusable source name are dropped and counted (``malformed``), never answered. Values outside
  0..1 are clamped. ``at_ms`` 0 means "now": the monitor uses the time it received the reading.
* PUSH connected to ``events_endpoint`` (the EventPublisher's PULL), when set: one
  ``event`` of type ``resources`` per tick for dashboards (topic ``scheduler.resources``).
* the control ROUTER every actor has (ping, stats, stop), bound by the runtime.

Timers: ``tick`` every ``interval`` seconds: sample (only with a sampler: monitoring on), smooth,
evaluate the registered sources, drop bus readings older than ``expiry_intervals * interval``,
publish one ``Readings`` and one ``resources`` event. A batch of bus readings that changes the
combined pressure is published at once, so a reading holds work without waiting for the next
tick (registered sources are evaluated on ticks only: their values come from the last tick).

The sampler and the sources run on this loop: they must return promptly (the built-in sampler
reads counters and never waits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from actors.monitor.pressure import (
    CompositePressure,
    NetworkPressure,
    PressureSource,
    clamp_pressure,
)
from actors.monitor.sampler import ResourceSampler, ResourceSnapshot, SmoothedReadings
from bus.clock import Clock, SystemClock, now_ms
from bus.events import Resources
from bus.kinds_run import PressureReading, Readings
from bus.limits import MAX_SUBSCRIPTIONS
from bus.protocol import Message, encode, send_frames
from bus.publishing import PublishingSocket
from bus.runtime import Actor, ActorLoop
from bus.server import Inbox

log = logging.getLogger("taskmill.monitor")

MAX_SOURCE_NAME = 256
MAX_BUS_SOURCES = 1000
"""Distinct bus sources remembered at once; readings from further names are dropped and counted."""


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    """Where the monitor listens and how often it samples (one frozen object, passed down)."""

    readings_endpoint: str
    pressure_endpoint: str
    events_endpoint: str | None
    interval: float = 1.0
    ewma_alpha: float = 0.3
    expiry_intervals: int = 3
    max_subscriptions: int = MAX_SUBSCRIPTIONS
    """Distinct topics subscribed to the readings at once before the socket is bound again."""

    def __post_init__(self) -> None:
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise ValueError(f"interval must be a finite number > 0, got {self.interval}")
        if not 0.0 < self.ewma_alpha <= 1.0:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if self.expiry_intervals < 1:
            raise ValueError(f"expiry_intervals must be >= 1, got {self.expiry_intervals}")
        if self.max_subscriptions < 1:
            raise ValueError(f"max_subscriptions must be >= 1, got {self.max_subscriptions}")

    @property
    def expiry_s(self) -> float:
        """Age past which a bus reading counts as 0."""
        return self.expiry_intervals * self.interval


@dataclass(slots=True)
class _BusReading:
    value: float
    at: float  # on the monotonic clock


Emit = Callable[[Readings, Resources | None], None]
_SYSTEM_CLOCK = SystemClock()


class ResourceMonitor(Actor):
    """Samples resources, combines pressure and publishes ``Readings`` every interval."""

    name = "monitor"

    def __init__(
        self,
        settings: MonitorSettings,
        *,
        sampler: ResourceSampler | None = None,
        sources: Sequence[PressureSource] = (),
        bandwidth_limit: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.sampler = sampler
        self._clock = clock
        self.smoothed = SmoothedReadings(settings.ewma_alpha)
        self.composite = CompositePressure(sources)
        if bandwidth_limit is not None:
            self.composite.add_source(NetworkPressure(self.smoothed, bandwidth_limit))
        self.bus: dict[str, _BusReading] = {}
        self.local: list[tuple[str, float]] = []
        """The registered sources' breakdown at the last tick."""
        self.latest: Readings | None = None
        """The last ``Readings`` published."""
        self.counters = {
            "ticks": 0,
            "samples": 0,
            "sampler_errors": 0,
            "published": 0,
            "pressure_readings": 0,
            "malformed": 0,
            "expired": 0,
            "events": 0,
            "events_dropped": 0,
        }
        self._emit: Emit = lambda readings, event: None
        self._inbox: Inbox | None = None
        self._pub: PublishingSocket | None = None

    @property
    def clock(self) -> Clock:
        """The injected clock; else the loop's once set up (the system clock before that)."""
        return self._clock if self._clock is not None else _SYSTEM_CLOCK

    # -- handlers (no sockets: they return the Readings and hand them to the loop's emitter, ---
    # -- which does nothing before ``setup``, so tests call them directly) ----------------------

    def tick(self) -> Readings:
        """Sample, smooth, evaluate every source and publish; returns the ``Readings``."""
        self.counters["ticks"] += 1
        if self.sampler is not None:
            self._sample(self.sampler)
        self.local = self.composite.breakdown()
        readings = self._readings()
        self._publish(readings, self.resources_event(readings))
        return readings

    def on_pressure(self, messages: Sequence[Message]) -> Readings | None:
        """Record bus readings; the ``Readings`` to publish when the combined pressure changed."""
        now = self.clock.monotonic()
        wall = self.clock.time()
        for message in messages:
            reading = self._accept(message)
            if reading is None:
                continue
            # at_ms 0: measured now. A reading from the future (clock skew) counts as fresh.
            age = 0.0 if reading.at_ms <= 0 else max(0.0, wall - reading.at_ms / 1000)
            at = now - age
            known = self.bus.get(reading.source)
            if known is not None and known.at > at:
                continue  # an older reading overtaken by a newer one: keep the newer
            if known is None and len(self.bus) >= MAX_BUS_SOURCES:
                self.counters["malformed"] += 1
                log.warning("monitor: too many pressure sources; %r dropped", reading.source)
                continue
            self.bus[reading.source] = _BusReading(clamp_pressure(reading.value), at)
            self.counters["pressure_readings"] += 1
        if self.latest is None:
            self.local = self.composite.breakdown()  # before the first tick: evaluate them once
        before = self.latest.pressure if self.latest is not None else 0.0
        readings = self._readings()
        if readings.pressure == before:
            return None
        self._publish(readings, None)
        return readings

    def _accept(self, message: Message) -> PressureReading | None:
        if (
            not isinstance(message, PressureReading)
            or not math.isfinite(message.value)
            or not 0 < len(message.source) <= MAX_SOURCE_NAME
        ):
            self.counters["malformed"] += 1
            log.debug("monitor: dropped %r pushed to the pressure inbox", message)
            return None
        return message

    def _sample(self, sampler: ResourceSampler) -> None:
        try:
            snapshot = sampler.sample()
        except Exception:  # user code; the rates keep their last smoothed values
            self.counters["sampler_errors"] += 1
            log.warning("monitor: the resource sampler failed", exc_info=True)
            return
        if not isinstance(snapshot, ResourceSnapshot):
            self.counters["sampler_errors"] += 1
            log.warning("monitor: the sampler returned %r, not a ResourceSnapshot", snapshot)
            return
        self.smoothed.update(snapshot)
        self.counters["samples"] += 1

    def _bus_breakdown(self) -> list[tuple[str, float]]:
        """The live bus readings in first-seen order; expired ones are forgotten."""
        oldest = self.clock.monotonic() - self.settings.expiry_s
        for source in [s for s, r in self.bus.items() if r.at < oldest]:
            del self.bus[source]
            self.counters["expired"] += 1
        return [(source, r.value) for source, r in self.bus.items()]

    def _readings(self) -> Readings:
        breakdown = [*self.local, *self._bus_breakdown()]
        rates = self.smoothed.latest()
        readings = Readings(
            cpu=rates.cpu_usage,
            disk_read_bps=rates.io_read_bytes_per_sec,
            disk_write_bps=rates.io_write_bytes_per_sec,
            net_rx_bps=rates.net_rx_bytes_per_sec,
            net_tx_bps=rates.net_tx_bytes_per_sec,
            pressure=max((value for _, value in breakdown), default=0.0),
            breakdown=breakdown,
            at_ms=now_ms(self.clock),
        )
        return readings

    @staticmethod
    def resources_event(readings: Readings) -> Resources:
        """The dashboard event of one tick (type ``resources``)."""
        return Resources(
            cpu=readings.cpu,
            disk_read_bps=readings.disk_read_bps,
            disk_write_bps=readings.disk_write_bps,
            net_rx_bps=readings.net_rx_bps,
            net_tx_bps=readings.net_tx_bps,
            pressure=readings.pressure,
            breakdown=tuple((name, value) for name, value in readings.breakdown),
            at_ms=readings.at_ms,
        )

    def _publish(self, readings: Readings, event: Resources | None) -> None:
        self.latest = readings
        self.counters["published"] += 1
        self._emit(readings, event)

    def stats(self) -> dict[str, Any]:
        latest = self.latest
        malformed = self.counters["malformed"] + (self._inbox.dropped if self._inbox else 0)
        return {
            **self.counters,
            "malformed": malformed,
            **(self._pub.stats() if self._pub else {}),
            "source_errors": self.composite.errors,
            "monitoring": self.sampler is not None,
            "sources": len(self.composite),
            "bus_sources": len(self.bus),
            "interval": self.settings.interval,
            "pressure": latest.pressure if latest else 0.0,
            "breakdown": [[n, v] for n, v in latest.breakdown] if latest else [],
            "readings": {
                "cpu": latest.cpu if latest else 0.0,
                "disk_read_bps": latest.disk_read_bps if latest else 0.0,
                "disk_write_bps": latest.disk_write_bps if latest else 0.0,
                "net_rx_bps": latest.net_rx_bps if latest else 0.0,
                "net_tx_bps": latest.net_tx_bps if latest else 0.0,
            },
        }

    # -- the loop ------------------------------------------------------------------------------

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        if self._clock is None:
            self._clock = loop.clock
        pub = PublishingSocket(
            loop, s.readings_endpoint, name=self.name, hwm=1000, max_topics=s.max_subscriptions
        )
        self._pub = pub
        events: zmq.Socket[Any] | None = None
        if s.events_endpoint is not None:
            events = loop.socket(zmq.PUSH, hwm=1000)
            loop.connect(events, s.events_endpoint)
        pull = loop.socket(zmq.PULL)
        loop.bind(pull, s.pressure_endpoint)
        self._inbox = Inbox(loop, pull, self._on_inbox)

        def emit(readings: Readings, event: Resources | None) -> None:
            # An XPUB never blocks: past a subscriber's queue it drops for that subscriber only.
            pub.send(encode(readings))
            if event is None or events is None:
                return
            try:
                send_frames(events, encode(event))
                self.counters["events"] += 1
            except zmq.Again:  # the publisher is gone or slow: dashboards can miss a tick
                self.counters["events_dropped"] += 1

        self._emit = emit
        # The first tick comes one interval after the start, not at once: the sampler's rates
        # and CPU usage are deltas since its construction, meaningless over a few milliseconds.
        loop.call_every(s.interval, self._on_timer)

    def _on_inbox(self, messages: list[Message]) -> None:
        self.on_pressure(messages)

    def _on_timer(self) -> None:
        self.tick()
