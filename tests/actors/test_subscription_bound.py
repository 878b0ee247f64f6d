"""A publishing socket keeps its subscriptions bounded (``bus.publishing``).

The EventPublisher runs in an ``ActorThread`` with a small bound; a peer sends more distinct
subscriptions than the bound: the socket is closed and bound again (one WARNING for the episode),
and a well-behaved subscriber connects again by itself, is welcomed again and receives the events
published after. Over inproc there is no bound. The flood of 100,000 at real actor processes, with
their memory measured, is in ``test_subscription_flood.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bus.events import Paused
from bus.subscribe import Subscription
from tests.actors.test_publisher import MARKER_MS, Running, running

pytestmark = pytest.mark.timeout(60)

BOUND = 20
WAIT_S = 10.0


def flooder(context: zmq.Context[Any], endpoint: str, n: int, tag: str) -> zmq.Socket[Any]:
    """An XSUB that sends ``n`` distinct subscriptions and, once dropped, stays away."""
    sock: zmq.Socket[Any] = context.socket(zmq.XSUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, -1)
    sock.connect(endpoint)
    for i in range(n):
        sock.send(b"\x01flood-%s-%d" % (tag.encode(), i))
    return sock


def stats_until(run: Running, key: str, at_least: int) -> dict[str, Any]:
    """Ask the actor for its counters until ``key`` reaches ``at_least`` (each ask a round
    trip)."""
    deadline = time.monotonic() + WAIT_S
    while (stats := run.stats()).get(key, 0) < at_least:
        assert time.monotonic() < deadline, stats
    return stats


def receives_again(run: Running, sub: Subscription) -> None:
    """Push an event until ``sub`` gets one: it has connected again and subscribed again."""
    deadline = time.monotonic() + WAIT_S
    while True:
        run.push(Paused(at_ms=MARKER_MS))
        event = sub.recv(timeout=0.2)
        if event is not None and event.at_ms == MARKER_MS:
            return
        assert time.monotonic() < deadline, "the subscriber never received events again"


@pytest.fixture
def on_ipc(context: zmq.Context[Any], tmp_path: Path) -> Iterator[Running]:
    with running(context, "ipc", tmp_path, max_subscriptions=BOUND) as run:
        yield run


def test_past_the_bound_the_socket_is_bound_again_and_subscribers_come_back(
    on_ipc: Running, context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskmill.bus")
    with on_ipc.subscribe() as sub:
        on_ipc.push(Paused())
        assert sub.recv(WAIT_S) is not None
        floods = [flooder(context, on_ipc.pub_endpoint, BOUND * 3, "a")]
        stats_until(on_ipc, "rebinds", 1)
        receives_again(on_ipc, sub)
        floods.append(flooder(context, on_ipc.pub_endpoint, BOUND * 3, "b"))
        stats_until(on_ipc, "rebinds", 2)
        receives_again(on_ipc, sub)
        assert sub.welcome_seq is not None and sub.restarts == 0
        for sock in floods:
            sock.close()
    stats = on_ipc.stats()
    assert stats["subscription_topics"] <= 3 and stats["rebinds"] == 2
    past = [r for r in caplog.records if "past the bound" in r.getMessage()]
    assert [r.levelname for r in past] == ["WARNING", "DEBUG"]  # one episode, one warning


def test_a_single_only_subscriber_left_with_the_old_socket(
    on_ipc: Running, context: zmq.Context[Any]
) -> None:
    """A 1.0 subscriber (no ``b.`` mark) stops batching only while it is connected: its
    connection ended with the old socket, so the new one batches again."""
    raw = context.socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.RECONNECT_IVL, -1)
    raw.connect(on_ipc.pub_endpoint)
    raw.setsockopt(zmq.SUBSCRIBE, b"welcome.old")
    assert raw.poll(int(WAIT_S * 1000))
    assert stats_until(on_ipc, "welcomes", 1)["batching"] is False
    flood = flooder(context, on_ipc.pub_endpoint, BOUND * 3, "c")
    assert stats_until(on_ipc, "rebinds", 1)["batching"] is True
    flood.close()
    raw.close()


def test_over_inproc_there_is_no_bound(context: zmq.Context[Any]) -> None:
    with running(context, "inproc", max_subscriptions=BOUND) as run, run.subscribe() as sub:
        flood = flooder(context, run.pub_endpoint, BOUND * 3, "d")
        stats = stats_until(run, "subscription_topics", BOUND * 3)
        assert stats["rebinds"] == 0
        run.push(Paused())
        assert sub.recv(WAIT_S) is not None
        flood.close()
