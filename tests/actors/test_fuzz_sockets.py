"""Malformed frames of every kind at every socket of a deployment; every actor keeps serving.

Every actor of ``tests.system_app`` runs as a thread of this process, built as the Procfile
processes build them, on ipc sockets (``actor_threads``). A fixed corpus goes to every socket an
actor binds: the Store's, the Dispatcher's and the GroupLimiter's request ROUTERs, the
Dispatcher's hosts ROUTER, the EventPublisher's PULL and XPUB, the ResourceMonitor's PULL, the
two PUBs (Store notifications, monitor readings) and every control ROUTER, the executor host's
included. The corpus: wrong frame counts, bad headers, unknown kinds, bodies that are not
msgpack (or claim huge lengths, or nest deeply), every registered kind with each of its fields
of the wrong type, bodies just under, at and over the maximum frame size, empty frames.

A request ROUTER answers each of these messages with exactly one reply ("never silent"); the
one-way sockets drop them. Afterwards every actor answers ``ping``, on its control socket and on
its request socket, and a submitted task still completes.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

import bus  # noqa: F401  (registers every kind)
from bus.client import RequestClient
from bus.errors import ProtocolError
from bus.kinds import Counts, Ping, Pong, Stats, StatsReply
from bus.protocol import MAX_FRAME_BYTES, PROTOCOL, decode, encode, registry
from taskmill.deploy import DeploymentConfig
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from tests.procfile_support import actor_threads

pytestmark = pytest.mark.timeout(60)

HOST_ID = "t1"
"""The executor host ``actor_threads`` starts."""
REQUEST_SOCKETS = ("store", "dispatcher", "limiter")
CONTROLS = ("store", "dispatcher", "limiter", "monitor", "events")
ONE_WAY = {"hosts": zmq.DEALER, "events_in": zmq.PUSH, "pressure": zmq.PUSH}
PUBLISHERS = ("events", "readings")
"""Publishing sockets: what a peer sends them are subscriptions (first byte 1, or 0 to cancel),
which they keep, so big frames there start with another byte (how many they keep is bounded:
``test_subscription_flood.py``)."""
REPLY_WAIT_S = 15.0

packb = msgpack.Packer(use_bin_type=True).pack
WRONG: tuple[object, ...] = (b"\xff", [[]], {"x": {}}, 2**64 - 1, 1.5, None)
"""Values of the wrong type for any field (bytes, nested lists and maps, an integer past 64
bits' signed range, a float, nil); a string that is not UTF-8 is added by hand."""
NOT_UTF8 = b"\xa2\xff\xfe"
"""A msgpack str of two bytes that are not UTF-8."""


def framed(kind: bytes, body: bytes, correlation: bytes = b"1") -> list[bytes]:
    return [PROTOCOL, kind, correlation, body]


def wrong_fields() -> list[list[bytes]]:
    """Every registered kind with fields, each field given each wrong value in turn (the rest
    left out), keeping only what the codec refuses: nothing here may decode to a real request."""
    messages = []
    for kind, cls in sorted(registry().items()):
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            bodies = [packb({field.name: value}) for value in WRONG]
            for body in [*bodies, b"\x81" + packb(field.name) + NOT_UTF8]:
                frames = framed(kind.encode(), body)
                try:
                    decode(frames)
                except ProtocolError:
                    messages.append(frames)
    return messages


def corpus() -> list[list[bytes]]:
    rng = random.Random(20)
    ping = packb({})
    near = [MAX_FRAME_BYTES - 64, MAX_FRAME_BYTES, MAX_FRAME_BYTES + 1]
    messages: list[list[bytes]] = [
        # wrong frame counts
        [b""],
        [PROTOCOL],
        [PROTOCOL, b"ping"],
        [PROTOCOL, b"ping", b"1"],
        [*framed(b"ping", ping), b"extra"],
        [*framed(b"ping", ping), *framed(b"ping", ping)],
        [rng.randbytes(rng.randint(1, 40)) for _ in range(40)],
        # bad headers
        [b"TMP9", b"ping", b"1", ping],
        [b"TMP", b"ping", b"1", ping],
        [b"tmp3", b"ping", b"1", ping],
        [b"XXXX", b"ping", b"1", ping],
        [b"", b"ping", b"1", ping],
        # unknown kinds
        framed(b"no.such.kind", ping),
        framed(b"", ping),
        framed(b"\xff\xfe", ping),
        framed(b"ping.reply.x" * 100, ping),
        # bodies that are not a msgpack map, or lie about their length
        framed(b"ping", b""),
        framed(b"ping", b"\xc1"),
        framed(b"ping", b"\x92\x01\x02"),
        framed(b"ping", b"\x81\xa1"),
        framed(b"ping", b"\xde\xff\xff"),
        framed(b"ping", b"\xdf\xff\xff\xff\xff"),
        framed(b"ping", b"\xdd\xff\xff\xff\xff"),
        framed(b"ping", b"\xdb\xff\xff\xff\xff"),
        framed(b"ping", b"\xc6\xff\xff\xff\xff"),
        framed(b"ping", b"\x91" * 100_000 + b"\x80"),
        framed(b"ping", b"\x81\x01\x02"),
        framed(b"ping", b"\x81\xa1\xff\x01"),
        framed(b"ping", b"\xd6\xff\x00\x00\x00\x01"),
        framed(b"ping", packb({"x": 1}) + b"trailing"),
        framed(b"store.counts", rng.randbytes(64)),
        # empty frames
        [b"", b"", b"", b""],
        [PROTOCOL, b"", b"", b""],
        [PROTOCOL, b"store.counts", b"", b""],
        # a correlation id too long to echo
        framed(b"no.such.kind", ping, b"c" * 100_000),
        # bodies near the maximum frame size: garbage, and a map of one long string
        *[framed(b"store.counts", b"\x02" * n) for n in near],
        *[framed(b"store.counts", padded(n)) for n in near],
        # well-formed, for another actor or for nobody on a one-way socket
        encode(Ping(), b"7"),
        encode(Counts(), b"8"),
    ]
    return messages + wrong_fields()


def padded(n: int) -> bytes:
    """A well-formed body of exactly ``n`` bytes: a map of one long string (a str32)."""
    body: bytes = packb({"pad": "x" * (n - 10)})
    assert len(body) == n
    return body


def for_publisher(frames: list[bytes]) -> bool:
    """Whether a publishing socket may get this message (no big subscription frame)."""
    return not any(len(f) > 256 and f[:1] in (b"\x00", b"\x01") for f in frames)


SUBSCRIPTIONS: list[list[bytes]] = [
    [b"\x01"],
    [b"\x01" + b"t" * 200],
    [b"\x00never subscribed"],
    [b"\x00"],
    *[[b"\x01garbage-" + str(i).encode()] for i in range(500)],
    *[[b"\x00garbage-" + str(i).encode()] for i in range(500)],
]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[DeploymentConfig]:
    with actor_threads(tmp_path) as cfg:
        yield cfg


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)  # closes the sockets a test connected too


def connect(context: zmq.Context[Any], kind: int, endpoint: str) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDTIMEO, 5_000)
    # No send limit: an XSUB drops what does not fit under it (a PUSH or DEALER would block).
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(endpoint)
    return sock


def send_all(sock: zmq.Socket[Any], messages: list[list[bytes]]) -> None:
    for frames in messages:
        sock.send_multipart(frames)


def replies(sock: zmq.Socket[Any], n: int) -> list[list[bytes]]:
    """Up to ``n`` replies, waiting at most ``REPLY_WAIT_S`` in all."""
    got: list[list[bytes]] = []
    deadline = time.monotonic() + REPLY_WAIT_S
    while len(got) < n and sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        got.append(sock.recv_multipart())
    return got


def ask_until(context: zmq.Context[Any], endpoint: str, counter: str, at_least: int) -> None:
    """Ask ``endpoint`` for its counters until ``counter`` reaches ``at_least`` (each ask is a
    round trip)."""
    stats = RequestClient(context, endpoint, timeout=10.0)
    deadline = time.monotonic() + REPLY_WAIT_S
    try:
        while (counters := dict(stats.call(Stats(), StatsReply).counters))[counter] < at_least:
            assert time.monotonic() < deadline, f"{endpoint}: {counters}"
    finally:
        stats.close()


def test_malformed_frames_on_every_socket_leave_every_actor_serving(
    deployment: DeploymentConfig, context: zmq.Context[Any]
) -> None:
    topology = deployment.topology()
    messages = corpus()
    answering = {name: getattr(topology, name) for name in REQUEST_SOCKETS}
    answering |= {f"{name}_control": getattr(topology, f"{name}_control") for name in CONTROLS}
    answering["host_control"] = topology.host_control(HOST_ID)

    # Requests: each is answered, once, and with an error unless it was a well-formed ping or
    # (at the Store) a well-formed count.
    dealers = {name: connect(context, zmq.DEALER, endpoint) for name, endpoint in answering.items()}
    for sock in dealers.values():
        send_all(sock, messages)
    silent = {}
    for name, sock in dealers.items():
        got = replies(sock, len(messages))
        assert not sock.poll(200), f"{name} answered some message more than once"
        if len(got) != len(messages):
            silent[name] = len(messages) - len(got)
        # A message is the last four frames: whatever came before them is sent back in front.
        kinds = {decode(frames[-4:])[0].KIND for frames in got}
        assert kinds <= {"error", "pong", "store.counts.reply"}, (name, kinds)
    assert silent == {}, f"requests left unanswered: {silent}"

    # One-way sockets: nothing to answer; the actor behind must shrug it off.
    senders = [connect(context, kind, getattr(topology, name)) for name, kind in ONE_WAY.items()]
    for sock in senders:
        send_all(sock, messages)
    # Subscriptions on a connection of their own: a publishing socket drops the connection
    # that sends it a frame over its size, with whatever that connection sent after it.
    subscribers = [connect(context, zmq.XSUB, getattr(topology, name)) for name in PUBLISHERS]
    for sock in subscribers:
        send_all(sock, SUBSCRIPTIONS)
    subscribers += [connect(context, zmq.XSUB, getattr(topology, name)) for name in PUBLISHERS]
    for sock in subscribers[len(PUBLISHERS) :]:
        send_all(sock, [m for m in messages if for_publisher(m)])

    # Each one-way receiver has read every message (and counted each as malformed or not
    # for it), and the event XPUB every subscription, before anyone is asked anything else.
    for actor in ("dispatcher", "monitor", "events"):
        ask_until(context, getattr(topology, f"{actor}_control"), "malformed", len(messages))
    ask_until(context, topology.events_control, "subscriptions", 500)

    for name, endpoint in answering.items():
        pinger = RequestClient(context, endpoint, timeout=10.0)
        try:
            assert isinstance(pinger.call(Ping(), Pong), Pong), name
        finally:
            pinger.close()
    with Client(deployment, timeout=10.0) as client, client.subscribe() as events:
        outcome = client.submit(TaskSubmission("noop", key="after the fuzz"))
        deadline = time.monotonic() + 15
        completed = False
        while not completed and time.monotonic() < deadline:
            event = events.recv(timeout=0.5)
            completed = event is not None and event.type == "completed"
            completed = completed and getattr(event, "task_id", None) == outcome.id
        assert completed, "the task submitted after the fuzz did not complete"
    for sock in [*dealers.values(), *senders, *subscribers]:
        sock.close(linger=0)
