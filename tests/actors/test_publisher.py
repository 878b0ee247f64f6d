"""The EventPublisher actor and the bus subscription helpers.

Handler tests call ``on_events`` / ``on_subscription`` with no sockets; the rest run the actor in
an ``ActorThread`` with the test as its pusher and subscriber. Nothing sleeps: every wait is for a
message, with a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from actors.publisher.actor import EventPublisher, LabelCap, topic_for
from bus.client import RequestClient
from bus.clock import FakeClock
from bus.endpoints import ensure_run_dir, inproc, ipc, new_namespace
from bus.errors import ActorUnavailable
from bus.events import EVENT_TYPES, Dispatched, Paused, Resumed, SchedulerEvent
from bus.hosting import ActorThread
from bus.kinds import Stats, StatsReply
from bus.kinds_run import Welcome
from bus.protocol import PROTOCOL, decode, decode_as, encode
from bus.subscribe import AsyncSubscription, Subscription
from taskmill.events import event_from_wire

WAIT = 5.0


AT_MS = 1_700_000_000_000
MARKER_MS = 4_242
"""The time of a marker event: the sender's last, which a receiver waits for."""
REQUIRED: dict[str, Any] = {
    "task_type": "t", "key": "k", "label": "l", "error": "", "percent": 0.0,
    "children_count": 0, "group": "g",
}  # fmt: skip
"""Values for the required fields an event built by ``ev`` is not given."""


def ev(type_: str, *, marker: bool = False, **data: Any) -> SchedulerEvent:
    """The event ``type_`` with the fields ``data`` (others it requires filled in, unknown ones
    ignored), at a fixed time (``MARKER_MS`` for a marker)."""
    cls = EVENT_TYPES.get(type_)
    names = {f.name for f in dataclasses.fields(cls)} if cls else set()
    filled = {k: v for k, v in REQUIRED.items() if k in names} | data
    return event_from_wire(type_, filled, at_ms=MARKER_MS if marker else AT_MS)


def decoded(frames: list[bytes]) -> tuple[bytes, SchedulerEvent, int, int]:
    """A published message's topic, event, and that event's seq and time."""
    event, _ = decode(frames[1:])
    assert isinstance(event, SchedulerEvent)
    return frames[0], event, event.seq, event.at_ms


# -- handlers, no sockets ---------------------------------------------------------------------


def test_topics_go_general_to_specific() -> None:
    assert topic_for("completed", {"task_id": 1}) == b"task.completed"
    assert topic_for("progress", {"task_id": 1}) == b"task.progress"
    assert topic_for("waiting", {}) == b"task.waiting"
    assert topic_for("paused", {}) == b"scheduler.paused"
    assert topic_for("resumed", {"task_id": 3}) == b"scheduler.resumed"
    assert topic_for("retuned", {"task_id": 3}) == b"task.retuned"
    assert topic_for("retuned", {}) == b"scheduler.retuned"


def test_events_are_numbered_from_one_and_framed() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    publisher.clock = FakeClock(start=1_000.0)
    out = publisher.on_events([ev("dispatched", task_id=7), Paused()])
    assert [decoded(f) for f in out] == [
        (b"task.dispatched", Dispatched(7, "t", "k", "l"), 1, 1_700_000_000_000),
        (b"scheduler.paused", Paused(), 2, 1_000_000),  # at_ms from the clock
    ]
    assert publisher.stats()["by_type"] == {"dispatched": 1, "paused": 1}


def test_other_kinds_pushed_to_the_inbox_are_dropped_and_counted() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    assert publisher.on_events([Welcome(3), ev("completed", task_id=1)]) != []
    stats = publisher.stats()
    assert (stats["malformed"], stats["published"], publisher.seq) == (1, 1, 1)


def test_a_welcome_subscription_is_answered_with_the_current_seq() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    publisher.on_events([ev("completed", task_id=1), ev("failed", task_id=2)])
    assert publisher.on_subscription(b"\x01task.") is None
    welcome = publisher.on_subscription(b"\x01welcome.abc")
    assert welcome is not None
    assert welcome[0] == b"welcome.abc"
    assert decode_as(welcome[1:], Welcome) == Welcome(seq=2)
    assert publisher.on_subscription(b"\x01welcome.") is None  # no token: nobody to welcome
    assert publisher.on_subscription(b"\x00task.") is None
    assert publisher.on_subscription(b"") is None
    stats = publisher.stats()
    assert (stats["subscriptions"], stats["unsubscriptions"], stats["welcomes"]) == (3, 1, 1)


def test_a_dead_letter_counts_as_a_failure_and_as_a_dead_letter() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    publisher.on_events(
        [
            ev("failed", task_id=3, task_type="y", error="x", will_retry=True, retry_after=2.0),
            ev("failed", task_id=3, task_type="y", error="x", will_retry=False),
            ev("dead_lettered", task_id=3, task_type="y", error="x", retry_count=1),
        ]
    )
    value = publisher.metrics.registry.get_sample_value
    assert value("taskmill_tasks_retried_total", {"task_type": "y"}) == 1
    assert value("taskmill_tasks_failed_total", {"task_type": "y"}) == 1
    assert value("taskmill_tasks_dead_lettered_total", {"task_type": "y"}) == 1
    assert value("taskmill_events_total", {"type": "dead_lettered"}) == 1


def test_metrics_have_bounded_labels_and_durations_only_when_given() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    publisher.on_events(
        [
            ev("completed", task_id=1, task_type="x", duration_ms=1500),
            ev("completed", task_id=2, task_type="x"),
            ev("failed", task_id=3, task_type="y", duration_ms=20),
            ev("progress", task_id=1, task_type="x", percent=0.5),
        ]
    )
    value = publisher.metrics.registry.get_sample_value
    assert value("taskmill_events_total", {"type": "completed"}) == 2
    assert value("taskmill_tasks_completed_total", {"task_type": "x"}) == 2
    assert value("taskmill_tasks_failed_total", {"task_type": "y"}) == 1
    assert value("taskmill_task_duration_seconds_count", {"task_type": "x"}) == 1
    assert value("taskmill_task_duration_seconds_sum", {"task_type": "x"}) == 1.5
    labels = {
        name
        for family in publisher.metrics.registry.collect()
        for sample in family.samples
        for name in sample.labels
    }
    assert labels <= {"type", "task_type", "le"}


def test_host_readings_are_gauges_labelled_by_host_and_bounded() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    publisher.metrics.hosts = LabelCap(limit=2)
    rates = {"cpu": 0.25, "disk_read_bps": 1.0, "disk_write_bps": 2.0, "net_rx_bps": 3.0}
    publisher.on_events(
        [
            ev("resources", cpu=0.5, disk_write_bps=9.0),
            *(ev("host_resources", host=h, machine=h, **rates, net_tx_bps=4.0) for h in "abc"),
            ev("host_resources", host="a", machine="a", disk_write_bps=7.0),
        ]
    )
    value = publisher.metrics.registry.get_sample_value
    assert value("taskmill_disk_write_bytes_per_second") == 9.0  # the monitor's machine
    assert value("taskmill_host_disk_write_bytes_per_second", {"host": "a"}) == 7.0
    assert value("taskmill_host_cpu_usage_ratio", {"host": "b"}) == 0.25
    assert value("taskmill_host_network_transmit_bytes_per_second", {"host": "b"}) == 4.0
    assert value("taskmill_host_network_receive_bytes_per_second", {"host": "other"}) == 3.0
    assert value("taskmill_host_cpu_usage_ratio", {"host": "c"}) is None


def test_label_cap_turns_values_past_the_limit_into_other() -> None:
    cap = LabelCap(limit=2)
    assert [cap(v) for v in ("a", "b", "c", "a", 5)] == ["a", "b", "other", "a", "other"]


# -- the actor over real sockets --------------------------------------------------------------


@dataclass
class Running:
    context: zmq.Context[Any]
    publisher: EventPublisher
    pub_endpoint: str
    control: str
    pusher: zmq.Socket[Any]

    def push(self, *events: SchedulerEvent) -> None:
        for event in events:
            self.pusher.send_multipart(encode(event))

    def push_raw(self, frames: list[bytes]) -> None:
        self.pusher.send_multipart(frames)

    def subscribe(self, topics: list[bytes] | None = None, **kwargs: Any) -> Subscription:
        return Subscription(self.context, self.pub_endpoint, topics or [b""], **kwargs)

    def stats(self) -> dict[str, Any]:
        client = RequestClient(self.context, self.control, timeout=WAIT)
        try:
            return client.call(Stats(), StatsReply).counters
        finally:
            client.close()


def endpoints(transport: str, tmp_path: Path) -> tuple[str, str, str]:
    if transport == "ipc":
        run_dir = ensure_run_dir(tmp_path / "run")
        return ipc(run_dir, "ev-in"), ipc(run_dir, "ev-pub"), ipc(run_dir, "ev-ctl")
    ns = new_namespace()
    return inproc(ns, "events-in"), inproc(ns, "events-pub"), inproc(ns, "events-control")


@contextmanager
def running(
    context: zmq.Context[Any], transport: str = "inproc", tmp_path: Path | None = None, **kw: Any
) -> Iterator[Running]:
    in_ep, pub_ep, control = endpoints(transport, tmp_path or Path("/nonexistent"))
    publisher = EventPublisher(in_ep, pub_ep, **kw)
    thread = ActorThread(publisher, context, control).start()
    pusher = context.socket(zmq.PUSH)
    pusher.setsockopt(zmq.LINGER, 0)
    pusher.connect(in_ep)
    try:
        yield Running(context, publisher, pub_ep, control, pusher)
    finally:
        pusher.close()
        thread.stop()


def recv_all(sub: Subscription, n: int) -> list[SchedulerEvent]:
    out: list[SchedulerEvent] = []
    for _ in range(n):
        event = sub.recv(WAIT)
        assert event is not None, f"only {len(out)} of {n} events arrived"
        out.append(event)
    return out


def until_marker(sub: Subscription) -> list[SchedulerEvent]:
    """Events up to and including the marker (``MARKER_MS``: the sender's last)."""
    out: list[SchedulerEvent] = []
    while not out or out[-1].at_ms != MARKER_MS:
        event = sub.recv(WAIT)
        assert event is not None, f"no marker after {out}"
        out.append(event)
    return out


def raw_sub(context: zmq.Context[Any], endpoint: str, topics: list[bytes], token: bytes) -> Any:
    """A bare SUB doing the welcome handshake by hand: the wire contract, not the helper."""
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for topic in [*topics, b"welcome." + token]:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    return sock


def recv_frames(sock: Any) -> list[bytes]:
    assert sock.poll(int(WAIT * 1000)), "nothing arrived"
    frames: list[bytes] = sock.recv_multipart()
    return frames


MIXED = [
    ev("dispatched", task_id=1, task_type="x"),
    ev("progress", task_id=1, task_type="x", percent=0.5),
    Paused(at_ms=5),
    ev("completed", task_id=1, task_type="x"),
    Resumed(at_ms=6),
    ev("failed", task_id=2, task_type="y", error="boom", will_retry=True),
]


@pytest.mark.parametrize("transport", ["inproc", "ipc"])
def test_events_arrive_all_in_order_with_consecutive_seq_on_their_topics(
    context: zmq.Context[Any], transport: str, tmp_path: Path
) -> None:
    events = MIXED * 20
    with running(context, transport, tmp_path) as bus, bus.subscribe() as sub:
        wire = raw_sub(context, bus.pub_endpoint, [b""], b"raw")  # the topic frames as sent
        try:
            assert recv_frames(wire)[0] == b"welcome.raw"
            bus.push(*events)
            got = recv_all(sub, len(events))
            topics = [recv_frames(wire)[0] for _ in events]
        finally:
            wire.close()
    assert sub.welcome_seq == 0
    assert [e.seq for e in got] == list(range(1, len(events) + 1))
    assert [(e, e.at_ms) for e in got] == [(e, e.at_ms) for e in events]
    assert topics[:6] == [
        b"task.dispatched",
        b"task.progress",
        b"scheduler.paused",
        b"task.completed",
        b"scheduler.resumed",
        b"task.failed",
    ]
    assert sub.missed == 0


def test_a_topic_prefix_receives_only_its_events(context: zmq.Context[Any]) -> None:
    marker = ev("completed", task_id=99, marker=True)
    with (
        running(context) as bus,
        bus.subscribe([b"task.completed"]) as completed,
        bus.subscribe([b"task."]) as tasks,
        bus.subscribe([b"scheduler."]) as scheduler,
    ):
        bus.push(*MIXED, Resumed(at_ms=MARKER_MS), marker)
        assert {e.type for e in until_marker(completed)} == {"completed"}
        assert len(until_marker(tasks)) == 5  # 4 task events + marker
        assert [e.type for e in until_marker(scheduler)] == ["paused", "resumed", "resumed"]


def test_each_subscriber_is_welcomed_once_and_alone(context: zmq.Context[Any]) -> None:
    with running(context) as bus:
        a = raw_sub(context, bus.pub_endpoint, [b"task."], b"a")
        b = raw_sub(context, bus.pub_endpoint, [b"task."], b"b")
        twin: Any = None
        try:
            for sock, topic in ((a, b"welcome.a"), (b, b"welcome.b")):
                frames = recv_frames(sock)
                assert frames[0] == topic
                assert decode_as(frames[1:], Welcome) == Welcome(0)
            bus.push(ev("completed", task_id=1))
            # The next thing each one sees is the event: no second welcome, nobody else's.
            assert recv_frames(a)[0] == b"task.completed"
            assert recv_frames(b)[0] == b"task.completed"
            # A subscription the XPUB has already seen is still passed up (XPUB_VERBOSE) and
            # welcomed: a SUB that reuses a token (or resubscribes) is never left waiting.
            twin = raw_sub(context, bus.pub_endpoint, [b"task."], b"b")
            frames = recv_frames(twin)
            assert frames[0] == b"welcome.b"
            assert decode_as(frames[1:], Welcome) == Welcome(1)
            assert bus.stats()["welcomes"] == 3
        finally:
            for sock in (a, b, twin):
                if sock is not None:
                    sock.close()


def test_a_catch_all_subscription_skips_other_subscribers_welcomes(
    context: zmq.Context[Any],
) -> None:
    with running(context) as bus, bus.subscribe([b""]) as everything:
        bus.subscribe([b"task."]).close()  # its welcome also matches b""
        bus.push(ev("completed", task_id=1))
        event = everything.recv(WAIT)
        assert event is not None and event.type == "completed"
        assert (everything.malformed, everything.missed) == (0, 0)


def test_malformed_one_way_frames_are_dropped_counted_and_publishing_goes_on(
    context: zmq.Context[Any],
) -> None:
    with running(context) as bus, bus.subscribe() as sub:
        bus.push_raw([b"junk"])
        bus.push_raw([PROTOCOL, b"event", b"", b"\xc1"])  # not msgpack
        bus.push_raw([PROTOCOL, b"no.such.kind", b"", msgpack.packb({})])
        bus.push_raw([PROTOCOL, b"event", b"", msgpack.packb({"type": 3, "data": {}})])
        bus.push_raw(encode(Welcome(1)))  # a real kind, but not an event
        bus.push_raw([PROTOCOL, b"event.completed", b"", b"\xc1"])
        bus.push_raw([PROTOCOL, b"event.completed", b"", msgpack.packb({"task_id": "one"})])
        bus.push_raw([PROTOCOL, b"event.teleported", b"", msgpack.packb({"seq": "x"})])
        bad_item = {"events": [["completed", {"task_id": 1}]]}  # its task_type, key, label?
        bus.push_raw([PROTOCOL, b"events", b"", msgpack.packb(bad_item)])
        bus.push(ev("completed", task_id=1))
        event = sub.recv(WAIT)
        assert event is not None
        assert (event.seq, event.type) == (1, "completed")
        stats = bus.stats()
    assert (stats["malformed"], stats["published"]) == (9, 1)


def test_a_subscriber_that_never_reads_does_not_hold_up_the_others(
    context: zmq.Context[Any],
) -> None:
    total, batch = 600, 50
    with running(context, queue_limit=5) as bus:
        slow = bus.subscribe(configure=lambda s: s.setsockopt(zmq.RCVHWM, 5))
        fast = bus.subscribe()
        try:
            got: list[SchedulerEvent] = []
            for start in range(0, total, batch):
                bus.push(*(ev("progress", task_id=start + i) for i in range(batch)))
                got += recv_all(fast, batch)
            # The fast subscriber saw everything, while the slow one's queue stayed full.
            assert [e.seq for e in got] == list(range(1, total + 1))
            queued = []
            while (event := slow.recv(0)) is not None:  # what the slow queue held
                queued.append(event)
            bus.push(ev("completed", task_id=1, marker=True))
            tail = until_marker(slow)
            assert until_marker(fast)[-1].seq == total + 1
        finally:
            slow.close()
            fast.close()
    seqs = [e.seq for e in queued + tail]
    assert seqs == sorted(seqs) and seqs[-1] == total + 1
    assert len(seqs) < total / 2
    assert slow.missed == total + 1 - len(seqs) > 0  # the loss shows as a seq gap
    assert fast.missed == 0


def test_prometheus_endpoint_over_http(context: zmq.Context[Any]) -> None:
    with running(context, metrics_port=0) as bus, bus.subscribe() as sub:
        port = bus.publisher.metrics_port
        assert port
        bus.push(
            ev("completed", task_id=1, task_type="x", duration_ms=250),
            ev("completed", task_id=2, task_type="x", duration_ms=750),
            ev("failed", task_id=3, task_type="x"),
        )
        recv_all(sub, 3)  # published: the counters are up to date
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as resp:
            text = resp.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("taskmill_events_total", (("type", "completed"),))] == 2
        assert samples[("taskmill_events_total", (("type", "failed"),))] == 1
        assert samples[("taskmill_tasks_completed_total", (("task_type", "x"),))] == 2
        assert samples[("taskmill_tasks_failed_total", (("task_type", "x"),))] == 1
        assert samples[("taskmill_task_duration_seconds_count", (("task_type", "x"),))] == 2
        assert samples[("taskmill_subscriptions_total", ())] >= 2
        assert samples[("taskmill_events_dropped_total", ())] == 0
    with pytest.raises(urllib.error.URLError):  # stopped with the actor
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT)


def test_subscribing_with_no_publisher_raises_actor_unavailable(
    context: zmq.Context[Any],
) -> None:
    with pytest.raises(ActorUnavailable):
        Subscription(context, inproc(new_namespace(), "nobody"), timeout=0.2)


# -- asyncio ----------------------------------------------------------------------------------


async def test_async_subscription_receives_in_order_and_ends_on_close(
    context: zmq.Context[Any],
) -> None:
    with running(context) as bus:
        async with await AsyncSubscription.open(context, bus.pub_endpoint, [b"task."]) as sub:
            bus.push(*MIXED)
            got = []
            async for event in sub:
                got.append(event)
                if len(got) == 4:
                    break
            assert [e.type for e in got] == ["dispatched", "progress", "completed", "failed"]
            assert [e.seq for e in got] == [1, 2, 4, 6]

            pending = asyncio.ensure_future(anext(sub))
            await asyncio.sleep(0)  # let it start waiting (a yield, not a timed wait)
            await sub.aclose()
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(pending, WAIT)


async def test_async_subscription_waits_for_events_pushed_later(
    context: zmq.Context[Any],
) -> None:
    with running(context) as bus:
        sub = await AsyncSubscription.open(context, bus.pub_endpoint, [b""], timeout=WAIT)
        try:
            for i in range(50):
                receiving = asyncio.ensure_future(sub.recv())
                await asyncio.sleep(0)
                bus.push(ev("progress", task_id=i, percent=i / 50))
                event = await asyncio.wait_for(receiving, WAIT)
                assert (event.seq, event.data()["task_id"]) == (i + 1, i)
            assert sub.missed == 0
        finally:
            await sub.aclose()


async def test_async_open_with_no_publisher_raises_actor_unavailable(
    context: zmq.Context[Any],
) -> None:
    with pytest.raises(ActorUnavailable):
        await AsyncSubscription.open(context, inproc(new_namespace(), "nobody"), timeout=0.2)
