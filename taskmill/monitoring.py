"""Resource monitoring: the ResourceMonitor built from an application, and pressure from afar.

``monitor_actor`` builds the ResourceMonitor from what ``SchedulerBuilder`` recorded (embedded mode
and the CLI use it alike); ``machine_reader`` is the same sampling for an executor host that
reports its own machine's readings (a worker on another machine). ``publish_pressure`` /
``PressurePublisher`` are the client side: any process (a web app under load, a batch job)
pushes a named reading onto the bus, and the Dispatcher holds work by the throttle policy as if
the source were registered in the scheduler. A reading counts for 3 sampling intervals, so a
publisher repeats it at least that often for as long as it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import zmq

from actors.monitor.actor import MonitorSettings, ResourceMonitor
from actors.monitor.pressure import PressureSource
from actors.monitor.sampler import ResourceSampler, SmoothedReadings, platform_sampler
from bus.clock import Clock
from bus.kinds_run import PressureReading
from bus.protocol import encode, send_frames
from bus.topology import Topology
from taskmill.app import AppSpec
from taskmill.config import SamplerConfig

__all__ = ["PressurePublisher", "machine_reader", "monitor_actor", "publish_pressure"]

DEFAULT_LINGER_MS = 1000
"""How long closing a publisher may still try to deliver a queued reading."""


def monitor_actor(
    spec: AppSpec, topology: Topology, *, clock: Clock | None = None
) -> ResourceMonitor:
    """The ResourceMonitor of ``spec``, on ``topology``'s endpoints.

    Sampler: the custom one if set, else the platform sampler when monitoring is on, else none
    (pressure only). Sources: the registered pressure sources, then ``NetworkPressure`` when a
    bandwidth limit is set. ``TypeError`` for a source or sampler missing its methods.
    """
    sampler: ResourceSampler | None = spec.sampler
    if sampler is not None and not isinstance(sampler, ResourceSampler):
        raise TypeError(f"a resource sampler needs a sample() method, got {sampler!r}")
    config = spec.sampler_config
    if sampler is None and spec.monitoring:
        sampler = platform_sampler(clock, interfaces=config.interfaces, disks=config.disks)
    sources: list[PressureSource] = []
    for source in spec.pressure_sources:
        if not isinstance(source, PressureSource):
            raise TypeError(f"a pressure source needs pressure() and name(), got {source!r}")
        sources.append(source)
    settings = MonitorSettings(
        readings_endpoint=topology.readings,
        pressure_endpoint=topology.pressure,
        events_endpoint=topology.events_in,
        interval=config.interval,
        ewma_alpha=config.ewma_alpha,
    )
    return ResourceMonitor(
        settings,
        sampler=sampler,
        sources=sources,
        bandwidth_limit=spec.bandwidth_limit,
        clock=clock,
    )


def machine_reader(
    config: SamplerConfig,
    sampler: ResourceSampler | None = None,
    clock: Clock | None = None,
) -> Callable[[], dict[str, float]]:
    """This machine's smoothed readings by name, sampled at each call (an executor host calls it
    once per heartbeat): ``sampler`` (a custom one), else the platform sampler counting the
    devices ``config`` names, smoothed with its ``ewma_alpha``."""
    if sampler is not None and not isinstance(sampler, ResourceSampler):
        raise TypeError(f"a resource sampler needs a sample() method, got {sampler!r}")
    source = sampler or platform_sampler(clock, interfaces=config.interfaces, disks=config.disks)
    smoothed = SmoothedReadings(config.ewma_alpha)

    def read() -> dict[str, float]:
        snapshot = smoothed.update(source.sample())
        return {
            "cpu": snapshot.cpu_usage,
            "disk_read_bps": snapshot.io_read_bytes_per_sec,
            "disk_write_bps": snapshot.io_write_bytes_per_sec,
            "net_rx_bps": snapshot.net_rx_bytes_per_sec,
            "net_tx_bps": snapshot.net_tx_bytes_per_sec,
        }

    return read


def _reading(source: str, value: float, at_ms: int) -> PressureReading:
    if not isinstance(source, str) or not source:
        raise ValueError(f"a pressure source name is a non-empty str, got {source!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"pressure must be a number, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"pressure must be in 0..1, got {value}")
    return PressureReading(source, value, int(at_ms))


class PressurePublisher:
    """Pushes readings of one named source to the ResourceMonitor's ``pressure`` endpoint.

    Keeps one PUSH socket open: use it for repeated readings (a web app reporting its load every
    second). Not thread-safe, like any zmq socket: one publisher per thread. ``close()`` (or the
    ``with`` block's end) waits at most ``linger_ms`` for readings still queued.
    """

    def __init__(
        self,
        endpoint: str,
        source: str,
        *,
        context: zmq.Context[Any] | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
        queue: int = 100,
    ) -> None:
        _reading(source, 0.0, 0)  # validate the name now, not at the first publish
        self.endpoint = endpoint
        self.source = source
        self.linger_ms = linger_ms
        ctx = context if context is not None else zmq.Context.instance()
        self._sock: zmq.Socket[Any] | None = ctx.socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.setsockopt(zmq.SNDHWM, queue)
        self._sock.connect(endpoint)
        self.sent = 0
        self.dropped = 0

    def publish(self, value: float, *, at_ms: int = 0) -> bool:
        """Push ``value`` (0..1; ``ValueError`` otherwise); ``at_ms`` 0 means now.

        Never blocks: False when the reading could not be queued (the monitor is unreachable and
        ``queue`` readings are already waiting), True when it was.
        """
        if self._sock is None:
            raise RuntimeError("this pressure publisher is closed")
        frames = encode(_reading(self.source, value, at_ms))
        try:
            send_frames(self._sock, frames)
        except zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=self.linger_ms)
            self._sock = None

    def __enter__(self) -> PressurePublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def publish_pressure(
    endpoint: str,
    source: str,
    value: float,
    *,
    context: zmq.Context[Any] | None = None,
    at_ms: int = 0,
    linger_ms: int = DEFAULT_LINGER_MS,
) -> bool:
    """Push one pressure reading of ``source`` (0..1) to the ResourceMonitor at ``endpoint``.

    One socket per call; for readings every second prefer a ``PressurePublisher``. ``ValueError``
    for a value outside 0..1 or an empty name. Returns whether the reading was queued; delivery
    is then tried for at most ``linger_ms`` (inproc needs the scheduler's zmq ``context``).
    """
    reading = _reading(source, value, at_ms)
    with PressurePublisher(endpoint, source, context=context, linger_ms=linger_ms) as publisher:
        return publisher.publish(reading.value, at_ms=reading.at_ms)
