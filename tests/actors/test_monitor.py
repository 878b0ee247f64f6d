"""The ResourceMonitor: handlers with a fake sampler and a FakeClock, then the actor over sockets.

Handler tests call ``tick`` / ``on_pressure`` directly (no sockets). Actor tests run it in an
``ActorThread`` with the test as pusher and subscriber; every wait is for a message with a poll
timeout, never a sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.monitor.actor import MonitorSettings, ResourceMonitor
from actors.monitor.pressure import PressureSource
from actors.monitor.sampler import PsutilSampler, ResourceSnapshot
from bus.client import RequestClient
from bus.clock import FakeClock
from bus.endpoints import ensure_run_dir, inproc, ipc, new_namespace
from bus.events import Completed, Resources
from bus.hosting import ActorThread
from bus.kinds import Stats, StatsReply
from bus.kinds_run import PressureReading, Readings
from bus.protocol import PROTOCOL, decode_as, encode
from bus.topology import Topology
from taskmill.app import AppSpec
from taskmill.config import SamplerConfig
from taskmill.monitoring import PressurePublisher, monitor_actor, publish_pressure

WAIT = 5.0


class ScriptedSampler:
    """Returns the snapshots it was given, one per call (the last one repeats)."""

    def __init__(self, *snapshots: ResourceSnapshot) -> None:
        self.snapshots = list(snapshots)
        self.calls = 0

    def sample(self) -> ResourceSnapshot:
        self.calls += 1
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]


class Fixed(PressureSource):
    def __init__(self, name: str, value: float) -> None:
        self._name, self.value = name, value

    def pressure(self) -> float:
        return self.value

    def name(self) -> str:
        return self._name


class Broken(PressureSource):
    def pressure(self) -> float:
        raise RuntimeError("no load figure")

    def name(self) -> str:
        return "broken"


def settings(interval: float = 1.0, ns: str = "unused") -> MonitorSettings:
    return MonitorSettings(
        inproc(ns, "readings"), inproc(ns, "pressure"), inproc(ns, "events-in"), interval=interval
    )


def monitor(clock: FakeClock, **kwargs: Any) -> ResourceMonitor:
    return ResourceMonitor(settings(), clock=clock, **{"sampler": None, **kwargs})


# -- handlers, no sockets -------------------------------------------------------------------------


def test_a_tick_publishes_smoothed_readings_with_the_clock_time() -> None:
    clock = FakeClock(start=1_700_000_000.0)
    sampler = ScriptedSampler(
        ResourceSnapshot(0.2, 1_000.0, 2_000.0, 100.0, 50.0),
        ResourceSnapshot(0.6, 0.0, 4_000.0, 200.0, 50.0),
    )
    mon = monitor(clock, sampler=sampler)
    first = mon.tick()
    assert first == Readings(0.2, 1_000.0, 2_000.0, 100.0, 50.0, 0.0, [], 1_700_000_000_000)
    clock.advance(1.0)
    second = mon.tick()
    assert second.cpu == pytest.approx(0.32)  # 0.3 * 0.6 + 0.7 * 0.2
    assert second.disk_read_bps == pytest.approx(700.0)
    assert second.disk_write_bps == pytest.approx(2_600.0)
    assert second.net_rx_bps == pytest.approx(130.0)
    assert second.net_tx_bps == pytest.approx(50.0)
    assert second.at_ms == 1_700_000_001_000
    assert mon.latest == second
    stats = mon.stats()
    assert (stats["ticks"], stats["samples"], stats["published"]) == (2, 2, 2)
    assert stats["monitoring"] is True
    assert stats["readings"]["cpu"] == pytest.approx(0.32)


def test_without_a_sampler_rates_stay_zero_but_pressure_is_evaluated() -> None:
    mon = monitor(FakeClock(), sources=[Fixed("api", 0.4)])
    readings = mon.tick()
    assert (readings.cpu, readings.disk_read_bps, readings.net_tx_bps) == (0.0, 0.0, 0.0)
    assert (readings.pressure, readings.breakdown) == (0.4, [("api", 0.4)])
    assert mon.stats()["monitoring"] is False


def test_breakdown_is_sources_then_network_then_bus_and_pressure_is_the_max() -> None:
    clock = FakeClock()
    sampler = ScriptedSampler(
        ResourceSnapshot(net_rx_bytes_per_sec=300.0, net_tx_bytes_per_sec=200.0)
    )
    mon = monitor(
        clock, sampler=sampler, sources=[Fixed("api", 0.1), Fixed("db", 0.2)], bandwidth_limit=1000
    )
    mon.on_pressure([PressureReading("web", 0.3)])
    readings = mon.tick()
    assert readings.breakdown == [("api", 0.1), ("db", 0.2), ("network", 0.5), ("web", 0.3)]
    assert readings.pressure == 0.5


def test_a_bus_reading_counts_until_three_intervals_old_then_expires() -> None:
    clock = FakeClock()
    mon = monitor(clock, sources=[Fixed("api", 0.1)])
    published = mon.on_pressure([PressureReading("web", 0.8)])  # at_ms 0: received now
    assert published is not None  # published at once, not at the next tick
    assert (published.pressure, published.breakdown) == (0.8, [("api", 0.1), ("web", 0.8)])
    clock.advance(3.0)  # exactly 3 intervals old: still counts
    readings = mon.tick()
    assert (readings.pressure, readings.breakdown) == (0.8, [("api", 0.1), ("web", 0.8)])
    clock.advance(0.5)
    readings = mon.tick()
    assert (readings.pressure, readings.breakdown) == (0.1, [("api", 0.1)])
    assert (mon.stats()["expired"], mon.stats()["bus_sources"]) == (1, 0)


def test_a_reading_measured_earlier_ages_from_its_own_time() -> None:
    clock = FakeClock(start=1_000.0)
    mon = monitor(clock)
    mon.on_pressure([PressureReading("batch", 0.9, at_ms=998_500)])  # 1.5 s old on arrival
    assert mon.tick().pressure == 0.9
    clock.advance(1.5)  # now 3 s old
    assert mon.tick().pressure == 0.9
    clock.advance(0.1)
    assert mon.tick().pressure == 0.0
    mon.on_pressure([PressureReading("batch", 0.9, at_ms=900_000)])  # long expired on arrival
    assert mon.tick().breakdown == []


def test_a_newer_reading_replaces_the_value_and_keeps_its_place() -> None:
    clock = FakeClock()
    mon = monitor(clock)
    mon.on_pressure([PressureReading("a", 0.2), PressureReading("b", 0.6)])
    clock.advance(1.0)
    published = mon.on_pressure([PressureReading("a", 0.9)])
    assert published is not None and published.breakdown == [("a", 0.9), ("b", 0.6)]
    clock.advance(2.5)  # b is 3.5 s old, a 2.5 s
    assert mon.tick().breakdown == [("a", 0.9)]


def test_bus_readings_publish_only_when_the_combined_pressure_changes() -> None:
    mon = monitor(FakeClock())
    assert mon.on_pressure([PressureReading("web", 0.5)]) is not None
    assert mon.on_pressure([PressureReading("web", 0.5)]) is None
    assert mon.on_pressure([PressureReading("jobs", 0.2)]) is None  # max still 0.5
    lowered = mon.on_pressure([PressureReading("web", 0.1)])
    assert lowered is not None and lowered.pressure == 0.2
    assert mon.stats()["published"] == 2


def test_invalid_bus_readings_are_dropped_and_counted_and_values_clamped() -> None:
    mon = monitor(FakeClock())
    mon.on_pressure(
        [
            PressureReading("nan", float("nan")),
            PressureReading("", 0.5),
            PressureReading("x" * 300, 0.5),
            Completed(1, "t", "k", "l"),  # another kind pushed to the wrong socket
            PressureReading("hot", 7.0),
        ]
    )
    assert mon.stats()["malformed"] == 4
    assert mon.tick().breakdown == [("hot", 1.0)]


def test_a_raising_source_or_sampler_does_not_kill_the_tick() -> None:
    class FailingSampler:
        def sample(self) -> ResourceSnapshot:
            raise OSError("no /proc")

    mon = monitor(FakeClock(), sampler=FailingSampler(), sources=[Broken(), Fixed("api", 0.6)])
    readings = mon.tick()
    assert (readings.pressure, readings.breakdown) == (0.6, [("broken", 0.0), ("api", 0.6)])
    mon.tick()
    stats = mon.stats()
    assert (stats["source_errors"], stats["sampler_errors"], stats["ticks"]) == (2, 2, 2)


def test_the_resources_event_carries_readings_for_dashboards() -> None:
    clock = FakeClock(start=2_000.0)
    mon = monitor(clock, sources=[Fixed("api", 0.25)])
    event = ResourceMonitor.resources_event(mon.tick())
    assert event == Resources(
        cpu=0.0,
        disk_read_bps=0.0,
        disk_write_bps=0.0,
        net_rx_bps=0.0,
        net_tx_bps=0.0,
        pressure=0.25,
        breakdown=(("api", 0.25),),
    )
    assert event.at_ms == 2_000_000


def test_settings_refuse_nonsense() -> None:
    for kwargs in ({"interval": 0.0}, {"ewma_alpha": 0.0}, {"expiry_intervals": 0}):
        with pytest.raises(ValueError):
            MonitorSettings("inproc://r", "inproc://p", None, **kwargs)
    with pytest.raises(ValueError):
        ResourceMonitor(settings(), sampler=None, bandwidth_limit=0)


# -- built from the application spec --------------------------------------------------------------


def test_monitor_actor_follows_the_spec() -> None:
    topology = Topology.inproc()
    custom = ScriptedSampler(ResourceSnapshot())
    spec = AppSpec(
        sampler=custom,
        monitoring=True,
        bandwidth_limit=1e6,
        pressure_sources=[Fixed("api", 0.3)],
        sampler_config=SamplerConfig(interval=0.5, ewma_alpha=0.5),
    )
    mon = monitor_actor(spec, topology, clock=FakeClock())
    assert mon.sampler is custom
    assert mon.settings == MonitorSettings(
        topology.readings, topology.pressure, topology.events_in, interval=0.5, ewma_alpha=0.5
    )
    assert [name for name, _ in mon.tick().breakdown] == ["api", "network"]

    assert isinstance(monitor_actor(AppSpec(monitoring=True), topology).sampler, PsutilSampler)
    listed = SamplerConfig(interfaces=("eth1",), disks=("sdb",))
    sampler = monitor_actor(AppSpec(monitoring=True, sampler_config=listed), topology).sampler
    assert isinstance(sampler, PsutilSampler)
    assert (sampler.devices.interfaces, sampler.devices.disks) == (("eth1",), ("sdb",))
    assert monitor_actor(AppSpec(), topology).sampler is None
    with pytest.raises(TypeError):
        monitor_actor(AppSpec(pressure_sources=[object()]), topology)


def test_publish_pressure_refuses_values_outside_0_1() -> None:
    for value in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError):
            publish_pressure("inproc://nowhere", "web", value)
    with pytest.raises(ValueError):
        publish_pressure("inproc://nowhere", "", 0.5)


# -- the actor over real sockets ------------------------------------------------------------------


@dataclass
class Running:
    context: zmq.Context[Any]
    settings: MonitorSettings
    control: str
    sub: zmq.Socket[Any]
    events: zmq.Socket[Any]

    def wait_readings(self, predicate: Callable[[Readings], bool]) -> Readings:
        readings: Readings = wait_for(self.sub, lambda f: decode_as(f, Readings), predicate)
        return readings

    def stats(self) -> dict[str, Any]:
        client = RequestClient(self.context, self.control, timeout=WAIT)
        try:
            return client.call(Stats(), StatsReply).counters
        finally:
            client.close()


def wait_for(
    sock: zmq.Socket[Any], parse: Callable[[list[bytes]], Any], predicate: Callable[[Any], bool]
) -> Any:
    """The first message on ``sock`` that satisfies ``predicate``; fails after ``WAIT`` s."""
    deadline = time.monotonic() + WAIT
    seen: list[Any] = []
    while (remaining := deadline - time.monotonic()) > 0:
        if not sock.poll(int(remaining * 1000) + 1):
            break
        message = parse(sock.recv_multipart())
        if predicate(message):
            return message
        seen.append(message)
    raise AssertionError(f"nothing matching within {WAIT}s; saw {seen[-3:]}")


@pytest.fixture(params=["inproc", "ipc"])
def running(
    request: pytest.FixtureRequest, context: zmq.Context[Any], tmp_path: Path
) -> Iterator[Running]:
    if request.param == "ipc":
        run_dir = ensure_run_dir(tmp_path / "run")
        names = [ipc(run_dir, n) for n in ("readings", "pressure", "events-in", "mon-ctl")]
    else:
        ns = new_namespace()
        names = [inproc(ns, n) for n in ("readings", "pressure", "events-in", "monitor-control")]
    readings_ep, pressure_ep, events_ep, control = names
    mon_settings = MonitorSettings(readings_ep, pressure_ep, events_ep, interval=0.05)
    events = context.socket(zmq.PULL)  # the test plays the EventPublisher
    events.setsockopt(zmq.LINGER, 0)
    events.bind(events_ep)
    mon = ResourceMonitor(
        mon_settings,
        sampler=ScriptedSampler(ResourceSnapshot(0.25, 10.0, 20.0, 30.0, 40.0)),
        sources=[Fixed("api", 0.1)],
    )
    thread = ActorThread(mon, context, control).start()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(readings_ep)
    try:
        yield Running(context, mon_settings, control, sub, events)
    finally:
        sub.close()
        events.close()
        thread.stop()


def test_ticks_publish_readings_and_resources_events(running: Running) -> None:
    readings = running.wait_readings(lambda r: True)
    assert readings.cpu == 0.25 and readings.net_tx_bps == 40.0
    assert readings.breakdown == [("api", 0.1)]
    event = wait_for(running.events, lambda f: decode_as(f, Resources), lambda e: True)
    assert event.type == "resources" and event.breakdown == (("api", 0.1),)


def test_a_pushed_reading_is_published_with_its_pressure(running: Running) -> None:
    running.wait_readings(lambda r: True)  # the subscription is live: nothing after it is lost
    assert publish_pressure(running.settings.pressure_endpoint, "web", 0.7, context=running.context)
    readings = running.wait_readings(lambda r: r.pressure == 0.7)
    assert readings.breakdown == [("api", 0.1), ("web", 0.7)]
    with PressurePublisher(
        running.settings.pressure_endpoint, "web", context=running.context
    ) as publisher:
        assert publisher.publish(0.9)
        assert running.wait_readings(lambda r: r.pressure == 0.9).breakdown[-1] == ("web", 0.9)
    # Nobody repeats the reading: after 3 intervals it expires and the pressure falls back.
    assert running.wait_readings(lambda r: r.pressure == 0.1).breakdown == [("api", 0.1)]


def test_malformed_frames_are_counted_and_the_actor_keeps_working(running: Running) -> None:
    running.wait_readings(lambda r: True)
    push = running.context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(running.settings.pressure_endpoint)
    try:
        push.send_multipart([b"garbage"])
        push.send_multipart([PROTOCOL, b"monitor.pressure", b"", b"\xc1"])  # undecodable body
        push.send_multipart(encode(PressureReading("web", float("nan"))))
        push.send_multipart(encode(PressureReading("web", 0.6)))  # same pipe: arrives last
        assert running.wait_readings(lambda r: r.pressure == 0.6).breakdown[-1] == ("web", 0.6)
    finally:
        push.close()
    stats = running.stats()
    assert stats["malformed"] == 3
    assert stats["pressure_readings"] == 1
