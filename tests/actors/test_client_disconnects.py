"""Request clients and a peer that goes away: over ipc and tcp, a request in flight when the
connection drops fails at once with ``ActorUnavailable`` (not at its timeout), and the client
goes on with the peer once it is back.

Real sockets: the peer is a ROUTER in this process, bound on an ipc path; closing it drops the
connection as a killed process does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import bus  # noqa: F401  (registers every kind)
from bus.client import AsyncRequester, RequestClient
from bus.endpoints import ensure_run_dir, ipc
from bus.errors import ActorUnavailable
from bus.kinds import Ping, Pong
from bus.protocol import decode, encode

pytestmark = pytest.mark.timeout(30)

LONG = 20.0
"""The clients' timeout: a test that waited for it would fail on its message."""

WAIT_MS = 10_000


@pytest.fixture
def endpoint(tmp_path: Path) -> str:
    return ipc(ensure_run_dir(tmp_path / "run"), "peer")


class FakePeer:
    """A ROUTER bound at ``endpoint``: it takes requests, answers them or not, and goes away."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.sock = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)

    def take(self) -> tuple[list[bytes], bytes]:
        """The next request: its routing frames and its correlation id."""
        assert self.sock.poll(WAIT_MS), "no request reached the peer"
        routing, *frames = self.sock.recv_multipart()
        message, correlation = decode(frames)
        assert isinstance(message, Ping)
        return [routing], correlation

    def answer(self) -> None:
        routing, correlation = self.take()
        self.sock.send_multipart([*routing, *encode(Pong("peer"), correlation)])

    def go_away(self) -> None:
        self.sock.close(linger=0)


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def client(context: zmq.Context[Any], endpoint: str) -> Iterator[RequestClient]:
    requester = RequestClient(context, endpoint, timeout=LONG)
    yield requester
    requester.close()


def answered(peer: FakePeer, client: RequestClient) -> None:
    thread = threading.Thread(target=peer.answer)
    thread.start()
    assert client.call(Ping(), Pong).name == "peer"
    thread.join()


def answered_by_a_new_peer(context: zmq.Context[Any], endpoint: str, client: RequestClient) -> None:
    back = FakePeer(context, endpoint)
    answered(back, client)
    back.go_away()


def test_a_request_in_flight_fails_when_the_peer_goes_away(
    context: zmq.Context[Any], endpoint: str, client: RequestClient
) -> None:
    peer = FakePeer(context, endpoint)

    def take_then_go_away() -> None:
        peer.take()
        peer.go_away()

    thread = threading.Thread(target=take_then_go_away)
    thread.start()
    with pytest.raises(ActorUnavailable, match="went away before it answered ping"):
        client.request(Ping())
    thread.join()
    # The peer is back on the same endpoint: the client reaches it again.
    answered_by_a_new_peer(context, endpoint, client)


def test_a_drop_while_nothing_was_in_flight_costs_no_later_request(
    context: zmq.Context[Any], endpoint: str, client: RequestClient
) -> None:
    peer = FakePeer(context, endpoint)
    answered(peer, client)
    peer.go_away()
    monitor = client._disconnects.monitor  # type: ignore[union-attr]
    assert monitor.poll(WAIT_MS), "the client never saw the drop"
    # The drop is reported and unread when the next request goes out: it must not fail it.
    answered_by_a_new_peer(context, endpoint, client)


async def test_async_requests_in_flight_fail_when_the_peer_goes_away(
    context: zmq.Context[Any], endpoint: str
) -> None:
    peer = FakePeer(context, endpoint)
    requester = AsyncRequester(context, endpoint, timeout=LONG)
    try:
        first = asyncio.ensure_future(requester.request(Ping()))
        second = asyncio.ensure_future(requester.request(Ping()))
        await asyncio.to_thread(peer.answer)  # the first is answered, the second taken
        assert isinstance(await first, Pong)
        await asyncio.to_thread(peer.take)
        peer.go_away()
        with pytest.raises(ActorUnavailable, match="went away before it answered ping"):
            await second
        back = FakePeer(context, endpoint)
        answered = asyncio.ensure_future(asyncio.to_thread(back.answer))
        assert isinstance(await requester.request(Ping()), Pong)
        await answered
        back.go_away()
    finally:
        requester.close()


def test_an_inproc_client_watches_nothing(context: zmq.Context[Any]) -> None:
    # inproc has no connection to drop (a peer in the same process dies with it): no monitor.
    client = RequestClient(context, "inproc://nobody-here", timeout=0.1)
    try:
        assert client._disconnects is None
        with pytest.raises(ActorUnavailable, match=r"did not answer ping within 0\.1s"):
            client.request(Ping())
    finally:
        client.close()
