"""A flood of 100,000 distinct short subscriptions at a publishing actor's process.

libzmq keeps every distinct topic a peer subscribes to; unbounded, the flood costs the actor tens
of MiB for as long as it runs. Bounded (``bus.publishing``), the EventPublisher and the
ResourceMonitor close and bind their socket again past ``MAX_SUBSCRIPTIONS`` topics, so their
memory grows by less than ``GROWTH_LIMIT``; they still answer, a well-behaved subscriber connected
before the flood receives what is published after it, and the actor logs one WARNING.

The flood comes over twenty connections (XSUBs, plain libzmq peers), one after the other, each
chunk once the actor has read the one before, so every subscription reaches it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.client import RequestClient
from bus.events import Paused
from bus.kinds import Ping, Pong, Stats, StatsReply
from bus.protocol import decode, encode
from bus.subscribe import Subscription
from tests.actors.test_publisher import MARKER_MS
from tests.procfile_support import Deployment, deployed
from tests.system.test_system_faults import MiB, raw_subscriber, rss, started

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

FLOOD = 100_000
CHUNK = 5_000
GROWTH_LIMIT = 40 * MiB
"""What the flood may add to the actor: its bound of distinct topics (~7 MiB of libzmq's trie
for 10,000 of these), twice while libzmq frees one socket's as the next fills, what the
allocator keeps of them, with room to spare (18 to 24 MiB measured); unbounded, the flood took
80 MiB."""
WAIT_S = 60.0


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def flood(
    context: zmq.Context[Any], endpoint: str, control: str, socks: list[zmq.Socket[Any]]
) -> dict[str, Any]:
    """Send ``FLOOD`` distinct subscriptions, ``CHUNK`` per connection, each chunk once the
    actor has read the one before or dropped its connection (each ask is a round trip); the
    actor's counters at the end. Every connection (in ``socks``) stays open, for the caller to
    close: libzmq frees a peer's subscriptions when its connection ends. A dropped one stays
    away (a flooder that comes back on connections of its own is dropped again; connections,
    each costing a little, are another matter)."""
    client = RequestClient(context, control, timeout=10.0)
    deadline = time.monotonic() + WAIT_S
    try:
        stats = dict(client.call(Stats(), StatsReply).counters)
        for start in range(0, FLOOD, CHUNK):
            sock = raw_subscriber(context, endpoint, reconnect=False)
            socks.append(sock)
            for i in range(start, start + CHUNK):
                sock.send(b"\x01" + topic(i))
            read, rebinds = frames_read(stats), stats.get("rebinds", 0)
            # Read whole, or dropped with its connection (the rest of it never comes).
            while frames_read(stats) < read + CHUNK and stats.get("rebinds", 0) == rebinds:
                assert time.monotonic() < deadline, f"the flood is not read: {stats}"
                stats = dict(client.call(Stats(), StatsReply).counters)
        return stats
    finally:
        client.close()


def topic(i: int) -> bytes:
    """The ``i``-th topic of the flood: 16 bytes, distinct from the others after the first
    few, as random topics are (libzmq's trie shares nothing past a common prefix)."""
    return hashlib.blake2b(i.to_bytes(4, "big"), digest_size=8).hexdigest().encode()


def frames_read(stats: dict[str, Any]) -> int:
    """Subscriptions the actor has read (the publisher counted them before it was bounded)."""
    return int(stats.get("subscription_frames", stats.get("subscriptions", 0)))


class EventsReader:
    """A subscriber of the event stream; ``receives`` pushes an event until it arrives (the
    subscriber connects again on its own time after the socket was bound again)."""

    def __init__(self, deployment: Deployment) -> None:
        context = deployment.context
        self.pusher = context.socket(zmq.PUSH)
        self.pusher.setsockopt(zmq.LINGER, 0)
        self.pusher.connect(deployment.topology.events_in)
        self.sub = Subscription(context, deployment.topology.events, [b""], timeout=WAIT_S)

    def receives(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            self.pusher.send_multipart(encode(Paused(at_ms=MARKER_MS)))
            event = self.sub.recv(timeout=0.25)
            if event is not None and event.at_ms == MARKER_MS:
                return
            assert time.monotonic() < deadline, "the subscriber receives no events"

    def close(self) -> None:
        self.sub.close()
        self.pusher.close()


class ReadingsReader:
    """A plain SUB of the monitor's readings (one each second)."""

    def __init__(self, deployment: Deployment) -> None:
        self.sock = deployment.context.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(deployment.topology.readings)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")

    def receives(self) -> None:
        assert self.sock.poll(int(WAIT_S * 1000)), "the subscriber receives no readings"
        frames = self.sock.recv_multipart()
        assert decode(frames)[0].KIND == "monitor.readings"

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("actor", ["events", "monitor"])
def test_a_flood_of_distinct_subscriptions_leaves_the_actor_small_and_serving(
    deployment: Deployment, actor: str
) -> None:
    proc = started(deployment, actor)
    context = deployment.context
    control = deployment.control(actor)
    reader = EventsReader(deployment) if actor == "events" else ReadingsReader(deployment)
    reader.receives()
    before = rss(proc)
    endpoint = deployment.topology.events if actor == "events" else deployment.topology.readings
    socks: list[zmq.Socket[Any]] = []
    try:
        stats = flood(context, endpoint, control, socks)
        after = rss(proc)  # while the flood's connections are open
    finally:
        for sock in socks:
            sock.close()
    try:
        reader.receives()
        pinger = RequestClient(context, control, timeout=10.0)
        try:
            assert pinger.call(Ping(), Pong).name == actor
        finally:
            pinger.close()
    finally:
        reader.close()
    grown = (after - before) / MiB
    assert after - before < GROWTH_LIMIT, f"the {actor} grew by {grown:.0f} MiB: {stats}"
    assert deployment.stop(proc) == 0
    warnings = [line for line in proc.log_tail(10_000).splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "past the bound" in warnings[0], warnings
