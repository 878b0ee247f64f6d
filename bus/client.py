"""Request clients: correlation ids, timeouts, and ``ActorUnavailable`` instead of hanging.

* ``RequestClient`` — blocking, for scripts, the CLI and ``taskmill.Client``; ``pipeline`` sends
  many requests before collecting the replies.
* ``AsyncRequester`` — for an asyncio loop: a plain (blocking-type) DEALER whose file descriptor is
  watched by the loop, one future per request; many requests in flight at once. Faster than
  ``zmq.asyncio`` because it adds nothing but a future per request.
* ``Peer`` — for an actor asking another actor: the reply comes back as a callback on the actor's
  own loop, never a blocking wait.

``RequestClient`` and ``AsyncRequester`` watch their connection over tcp and ipc (``Disconnects``):
a request in flight when the connection drops fails at once with ``ActorUnavailable`` instead of
at its timeout, so a caller's retry reaches a restarted peer as soon as it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import zmq

from bus.errors import ActorUnavailable, ErrorCode, ProtocolError, TaskmillError, error_from_reply
from bus.kinds import Error, Ping, Pong
from bus.protocol import (
    Message,
    decode,
    encode,
    limit_inbound,
    readable,
    recv_waiting,
    send_frames,
)
from bus.runtime import ActorLoop, Timer

log = logging.getLogger("taskmill.bus")

M = TypeVar("M", bound=Message)


def check_reply(request: Message, reply: Message) -> Message:
    """Raise the error an ``error`` reply stands for; check the reply kind otherwise."""
    if isinstance(reply, Error):
        raise error_from_reply(reply.code, reply.reason)
    expected = request.REPLY
    if expected is not None and not isinstance(reply, expected):
        raise ProtocolError(
            ErrorCode.MALFORMED, f"{request.KIND} answered with {reply.KIND}, not {expected.KIND}"
        )
    return reply


def _dealer(
    context: zmq.Context[Any], endpoint: str, configure: Callable[[Any], None] | None
) -> Any:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    limit_inbound(sock)
    if configure is not None:
        configure(sock)
    sock.connect(endpoint)
    return sock


def is_disconnect(frames: Sequence[bytes]) -> bool:
    """Whether a socket monitor's report says the connection dropped."""
    return (
        len(frames) == 2
        and len(frames[0]) == 6
        and int.from_bytes(frames[0][:2], "little") == zmq.EVENT_DISCONNECTED
    )


class Disconnects:
    """The drops of a DEALER's connection, from the socket's monitor (tcp and ipc: inproc has no
    connection to drop, and ``watch`` returns None for it).

    A request in flight when its connection drops is never answered: the peer died with it,
    or the restarted peer never saw it (ZeroMQ does not send a message again). A request sent
    while the peer is away waits in the DEALER and goes out when the peer is back.
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self.monitor: zmq.Socket[Any] = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        fd = self.monitor.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        self.fd = fd
        """The monitor's descriptor, for an event loop to watch (edge-triggered, as any)."""

    @classmethod
    def watch(cls, sock: zmq.Socket[Any], endpoint: str) -> Disconnects | None:
        return cls(sock) if endpoint.startswith(("tcp://", "ipc://")) else None

    def dropped(self) -> bool:
        """Whether the connection dropped since the last call (reads every report)."""
        dropped = False
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return dropped
            dropped |= is_disconnect(frames)

    def close(self) -> None:
        self._sock.disable_monitor()
        self.monitor.close(linger=0)


class RequestClient:
    """A blocking request client on a DEALER socket. Not thread-safe (one per thread)."""

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        *,
        timeout: float = 10.0,
        configure: Callable[[Any], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock = _dealer(context, endpoint, configure)
        self._ids = itertools.count(1)
        self._disconnects = Disconnects.watch(self._sock, endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        if self._disconnects is not None:
            self._poller.register(self._disconnects.monitor, zmq.POLLIN)
            self._disconnects.dropped()

    def request(self, message: Message, timeout: float | None = None) -> Message:
        return self.pipeline([message], timeout)[0]

    def call(self, message: Message, reply_type: type[M], timeout: float | None = None) -> M:
        reply = self.request(message, timeout)
        assert isinstance(reply, reply_type)
        return reply

    def pipeline(self, messages: Sequence[Message], timeout: float | None = None) -> list[Message]:
        """Send every message, then collect every reply (in request order)."""
        timeout = self.timeout if timeout is None else timeout
        if self._disconnects is not None:
            self._disconnects.dropped()  # a drop before these requests cost none of them
        pending: dict[bytes, int] = {}
        for i, message in enumerate(messages):
            correlation = str(next(self._ids)).encode()
            pending[correlation] = i
            try:
                send_frames(self._sock, encode(message, correlation))
            except zmq.Again:
                raise ActorUnavailable(f"{self.endpoint} is not accepting requests") from None
        replies: list[Message | None] = [None] * len(messages)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(int(remaining * 1000) + 1):
                kind = messages[next(iter(pending.values()))].KIND
                raise ActorUnavailable(f"{self.endpoint} did not answer {kind} within {timeout:g}s")
            if not readable(self._sock):
                if self._disconnects is not None and self._disconnects.dropped():
                    kind = messages[next(iter(pending.values()))].KIND
                    raise ActorUnavailable(f"{self.endpoint} went away before it answered {kind}")
                continue
            frames = self._sock.recv_multipart()
            try:
                reply, correlation = decode(frames)
            except ProtocolError as exc:
                log.warning("undecodable reply from %s dropped: %s", self.endpoint, exc)
                continue
            index = pending.pop(correlation, None)
            if index is not None:  # else: a stale reply to a request that timed out
                replies[index] = reply
        return [check_reply(m, r) for m, r in zip(messages, replies, strict=True) if r is not None]

    def close(self) -> None:
        if self._disconnects is not None:
            self._disconnects.close()
        self._sock.close(linger=0)


def await_pong(
    context: zmq.Context[Any],
    endpoint: str,
    *,
    timeout: float,
    exited: Callable[[], int | None],
    every: float = 0.5,
) -> str | None:
    """Ask ``endpoint`` PING every ``every`` seconds until it answers (None), or say why not:
    its process ``exited()`` (a return code), or ``timeout`` seconds passed."""
    client = RequestClient(context, endpoint)
    deadline = time.monotonic() + timeout
    try:
        while True:
            code = exited()
            if code is not None:
                return f"exited with {code}"
            if time.monotonic() > deadline:
                return "never answered PING"
            try:
                client.call(Ping(), Pong, timeout=every)
                return None
            except ActorUnavailable:
                continue
    finally:
        client.close()


class AsyncRequester:
    """An asyncio request client. Use from the loop it was created on only.

    Timeouts: one loop timer for all the requests in flight, armed for the earliest deadline,
    instead of a timer per request (creating and cancelling one costs more than the rest of an
    inproc request's bookkeeping in the caller's thread).
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        *,
        timeout: float = 10.0,
        configure: Callable[[Any], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._sock = _dealer(context, endpoint, configure)
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[Message]] = {}
        self._deadlines: dict[bytes, tuple[float, str, float]] = {}
        """Per request in flight: when it expires, its kind and its timeout (for the error)."""
        self._sweep: asyncio.TimerHandle | None = None
        self._fd = self._sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._disconnects = Disconnects.watch(self._sock, endpoint)
        if self._disconnects is not None:
            self._disconnects.dropped()
            self._loop.add_reader(self._disconnects.fd, self._on_monitor)
        self._closed = False

    async def request(self, message: Message, timeout: float | None = None) -> Message:
        if self._closed:
            raise ActorUnavailable(f"client for {self.endpoint} is closed")
        correlation = str(next(self._ids)).encode()
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[correlation] = future
        try:
            send_frames(self._sock, encode(message, correlation))
        except zmq.Again:
            del self._pending[correlation]
            raise ActorUnavailable(f"{self.endpoint} is not accepting requests") from None
        # Sending may consume the edge of the (edge-triggered) descriptor: look for replies now.
        if readable(self._sock):
            self._loop.call_soon(self._drain)
        timeout = self.timeout if timeout is None else timeout
        deadline = self._loop.time() + timeout
        self._deadlines[correlation] = (deadline, message.KIND, timeout)
        if self._sweep is None or deadline < self._sweep.when():
            self._arm(deadline)
        try:
            reply = await future
        finally:
            del self._deadlines[correlation]
            self._pending.pop(correlation, None)
        return check_reply(message, reply)

    async def call(self, message: Message, reply_type: type[M], timeout: float | None = None) -> M:
        reply = await self.request(message, timeout)
        assert isinstance(reply, reply_type)
        return reply

    def _arm(self, when: float) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
        self._sweep = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Fail the requests whose deadline has passed; re-arm for the earliest left."""
        self._sweep = None
        now = self._loop.time()
        earliest: float | None = None
        for correlation, (deadline, kind, timeout) in self._deadlines.items():
            if deadline > now:
                earliest = deadline if earliest is None else min(earliest, deadline)
                continue
            future = self._pending.pop(correlation, None)
            if future is not None and not future.done():
                future.set_exception(
                    ActorUnavailable(f"{self.endpoint} did not answer {kind} within {timeout:g}s")
                )
        if earliest is not None:
            self._arm(earliest)

    def _drain(self) -> None:
        sock = self._sock
        while not self._closed and readable(sock):
            frames = recv_waiting(sock)
            try:
                reply, correlation = decode(frames)
            except ProtocolError as exc:
                log.warning("undecodable reply from %s dropped: %s", self.endpoint, exc)
                continue
            future = self._pending.pop(correlation, None)
            if future is not None and not future.done():
                future.set_result(reply)

    def _on_monitor(self) -> None:
        """The connection dropped: fail every request in flight now (after taking the replies
        that came before the drop)."""
        if self._closed or self._disconnects is None or not self._disconnects.dropped():
            return
        self._drain()
        for correlation, future in list(self._pending.items()):
            if not future.done():  # a request in flight has its deadline (set before any await)
                kind = self._deadlines[correlation][1]
                future.set_exception(
                    ActorUnavailable(f"{self.endpoint} went away before it answered {kind}")
                )
        self._pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._disconnects is not None:
            self._loop.remove_reader(self._disconnects.fd)
            self._disconnects.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ActorUnavailable(f"client for {self.endpoint} closed"))
        self._pending.clear()
        self._sock.close(linger=0)


ReplyCallback = Callable[[Message | TaskmillError], None]


class Peer:
    """An actor's requests to another actor; replies arrive as callbacks on the actor's loop.

    ``on_notice`` receives the one-way messages (empty correlation id) the other actor sends on
    the same pipe: they arrive in order with the replies (the Store's ``store.changed``)."""

    def __init__(
        self,
        loop: ActorLoop,
        endpoint: str,
        *,
        timeout: float = 10.0,
        configure: Callable[[Any], None] | None = None,
        on_notice: Callable[[Message], None] | None = None,
    ) -> None:
        self.loop = loop
        self.on_notice = on_notice
        self.endpoint = endpoint
        self.timeout = timeout
        self._sock = loop.socket(zmq.DEALER)
        if configure is not None:
            configure(self._sock)
        loop.connect(self._sock, endpoint)
        self._ids = itertools.count(1)
        self._pending: dict[bytes, tuple[Message, ReplyCallback, Timer]] = {}
        loop.add_reader(self._sock, self._on_frames)
        self._disconnects = Disconnects.watch(self._sock, endpoint)
        if self._disconnects is not None:
            loop.own(self._disconnects.monitor)
            loop.add_reader(self._disconnects.monitor, self._on_monitor)
            loop.after_stop(self._disconnects.close)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def request(
        self, message: Message, on_reply: ReplyCallback, timeout: float | None = None
    ) -> None:
        correlation = str(next(self._ids)).encode()
        timeout = self.timeout if timeout is None else timeout
        timer = self.loop.call_later(timeout, lambda: self._expire(correlation, timeout))
        self._pending[correlation] = (message, on_reply, timer)
        try:
            send_frames(self._sock, encode(message, correlation))
        except zmq.Again:
            self._expire(correlation, timeout)

    def _on_monitor(self, batch: list[list[bytes]]) -> None:
        """The connection dropped (the other actor died or restarted): a request in flight will
        never be answered, so each fails now rather than at its timeout — after the replies
        that came before the drop are taken."""
        if not any(is_disconnect(frames) for frames in batch) or not self._pending:
            return
        replies = []
        while True:
            try:
                replies.append(self._sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        if replies:
            self._on_frames(replies)
        for correlation in list(self._pending):
            message, on_reply, timer = self._pending.pop(correlation)
            timer.cancel()
            on_reply(
                ActorUnavailable(f"{self.endpoint} went away before it answered {message.KIND}")
            )

    def _expire(self, correlation: bytes, timeout: float) -> None:
        entry = self._pending.pop(correlation, None)
        if entry is not None:
            message, on_reply, timer = entry
            timer.cancel()
            on_reply(
                ActorUnavailable(
                    f"{self.endpoint} did not answer {message.KIND} within {timeout:g}s"
                )
            )

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        for frames in batch:
            try:
                reply, correlation = decode(frames)
            except ProtocolError as exc:
                log.warning("undecodable reply from %s dropped: %s", self.endpoint, exc)
                continue
            if not correlation:
                if self.on_notice is not None:
                    self.on_notice(reply)
                continue
            entry = self._pending.pop(correlation, None)
            if entry is None:
                continue
            message, on_reply, timer = entry
            timer.cancel()
            try:
                result: Message | TaskmillError = check_reply(message, reply)
            except TaskmillError as exc:
                result = exc
            on_reply(result)
