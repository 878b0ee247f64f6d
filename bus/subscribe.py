"""Subscribing to an event stream on an XPUB without the slow-joiner race.

The wire contract (``docs/protocol.md``, "Kinds: events" and ``event.welcome``):

* every event is the frames ``[topic, *encode(event)]`` (an ``event.<type>`` kind of
  ``bus.events``), or travels with the events of the same topic around it as
  ``[topic, *encode(EventBatch)]``; topics go general →
  specific (``task.completed``) so a SUB prefix filter selects a family (``task.``) or one type;
* ``seq`` grows by one per published event, across all topics;
* when the publisher sees a subscription to ``welcome.<token>`` it sends ``Welcome(seq)`` on that
  topic, ``seq`` being the last event it published.

A SUB sends its subscriptions in order, and the publisher applies them in order, so a subscriber
that subscribes to its topics first and to its own welcome topic last knows, once its welcome
arrives, that every later event on its topics will reach it: no sleeping, no lost first events.

``Subscription`` blocks (scripts, the CLI); ``AsyncSubscription`` runs on an asyncio loop with the
socket's file descriptor watched by ``loop.add_reader``. Both count, in ``missed``, the events
lost after the welcome (seq gaps: the publisher dropped them because this subscriber read too
slowly). Gaps mean something only when the subscription sees every event, so ``missed`` is
counted only with a ``b""`` topic; with narrower topics a gap is just an event of another topic.

On a reconnection (a publisher restart, a dropped tcp link) the SUB resubscribes by itself and the
publisher welcomes it again: a welcome whose ``seq`` went back counts in ``restarts``; one that
went forward adds the events published meanwhile to ``missed``. libzmq resends subscriptions in
byte order then, which keeps the welcome last for topics that sort before ``welcome.`` (``b""``,
``task.``, ``scheduler.``).

A subscription to ``b""`` also matches other subscribers' welcome topics: those are skipped here.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from bus.errors import ActorUnavailable, ProtocolError
from bus.events import EventBatch, SchedulerEvent
from bus.kinds_run import Welcome
from bus.protocol import decode, decode_as, limit_inbound, readable, recv_waiting

WELCOME_PREFIX = b"welcome."

Configure = Callable[[Any], None]


class _Tracker:
    """What both subscription kinds share: the welcome token, seq tracking, counters."""

    def __init__(self, endpoint: str, topics: Sequence[bytes]) -> None:
        self.endpoint = endpoint
        self.topics: tuple[bytes, ...] = tuple(bytes(t) for t in topics)
        self.token = b"b." + secrets.token_hex(8).encode("ascii")  # b.: reads batches (``events``)
        self.welcome_topic = WELCOME_PREFIX + self.token
        self.welcome_seq: int | None = None
        """``seq`` of the first welcome: events after it are all delivered (or counted missed)."""
        self.last_seq = 0
        self.missed = 0
        self.malformed = 0
        self.restarts = 0
        self.sees_all = b"" in self.topics
        self._ready: deque[SchedulerEvent] = deque()
        """Events decoded but not yet returned (the welcome's early ones, the rest of a batch)."""

    def _subscribe(self, sock: zmq.Socket[Any]) -> None:
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.setsockopt(zmq.SUBSCRIBE, self.welcome_topic)  # last: its answer means "live"

    def _feed(self, frames: list[bytes]) -> list[SchedulerEvent]:
        """Account for one message; the events it delivers (none for a welcome or garbage)."""
        if len(frames) < 2:
            self.malformed += 1
            return []
        topic = bytes(frames[0])
        if topic.startswith(WELCOME_PREFIX):
            if topic == self.welcome_topic:
                self._on_welcome(frames)
            return []  # someone else's welcome, seen through a broader topic
        try:
            message, _ = decode(frames[1:])
        except ProtocolError:
            self.malformed += 1
            return []
        if isinstance(message, SchedulerEvent):  # UnknownEvent for a kind this version lacks
            events = [message]
        elif isinstance(message, EventBatch):
            events = message.events
        else:
            self.malformed += 1
            return []
        if self.welcome_seq is not None:
            for event in events:
                if event.seq <= self.last_seq:
                    self.restarts += 1  # seq began again: a new publisher
                elif self.sees_all:
                    self.missed += event.seq - self.last_seq - 1
                self.last_seq = event.seq
        return events

    def _on_welcome(self, frames: list[bytes]) -> None:
        try:
            welcome = decode_as(frames[1:], Welcome)
        except ProtocolError:
            self.malformed += 1
            return
        if self.welcome_seq is None:
            self.welcome_seq = welcome.seq
        elif welcome.seq < self.last_seq:
            self.restarts += 1
        elif self.sees_all:
            self.missed += welcome.seq - self.last_seq  # published while we were away
        self.last_seq = welcome.seq


def _sub_socket(context: zmq.Context[Any], endpoint: str, configure: Configure | None) -> Any:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    limit_inbound(sock)
    if configure is not None:
        configure(sock)
    # Connect before subscribing: the subscriptions then go down the pipe in the order made.
    sock.connect(endpoint)
    return sock


class Subscription(_Tracker):
    """A blocking subscription, live once constructed. Not thread-safe (one per thread).

    Subscribes to every topic in ``topics`` (prefixes; ``b""`` is everything), then waits up to
    ``timeout`` seconds for its welcome and raises ``ActorUnavailable`` if none comes.
    ``configure`` is called with the SUB socket before it connects (options such as RCVHWM).
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        topics: Sequence[bytes] = (b"",),
        *,
        timeout: float = 10.0,
        configure: Configure | None = None,
    ) -> None:
        super().__init__(endpoint, topics)
        self.timeout = timeout
        self._sock = _sub_socket(context, endpoint, configure)
        try:
            self._subscribe(self._sock)
            self._await_welcome(timeout)
        except BaseException:
            self._sock.close(linger=0)
            raise

    def _await_welcome(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.welcome_seq is None:
            frames = self._recv_frames(deadline)
            if frames is None:
                raise ActorUnavailable(f"no event publisher answered at {self.endpoint}")
            self._ready.extend(self._feed(frames))  # published before the welcome: delivered

    def _recv_frames(self, deadline: float) -> list[bytes] | None:
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if not self._sock.poll(remaining_ms):
            return None
        frames: list[bytes] = self._sock.recv_multipart(zmq.NOBLOCK)
        return frames

    def recv(self, timeout: float | None = None) -> SchedulerEvent | None:
        """The next event, or None after ``timeout`` seconds (default: the subscription's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._ready:
            frames = self._recv_frames(deadline)
            if frames is None:
                return None
            self._ready.extend(self._feed(frames))
        return self._ready.popleft()

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscription(_Tracker):
    """An asyncio subscription: ``sub = await AsyncSubscription.open(...)``; live once open.

    Use from the loop it was opened on only. Events wait in the SUB socket until ``recv`` asks
    for them (but for the rest of a batch just read), so a consumer that falls behind is bounded
    by RCVHWM messages, each at most one batch (and then the publisher drops for it: ``missed``),
    rather than by memory.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        topics: Sequence[bytes] = (b"",),
        *,
        configure: Configure | None = None,
    ) -> None:
        """Subscribe without waiting for the welcome; ``open`` is the way to get a live one."""
        super().__init__(endpoint, topics)
        self._loop = asyncio.get_running_loop()
        self._sock = _sub_socket(context, endpoint, configure)
        self._fd = self._sock.getsockopt(zmq.FD)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)
        self._subscribe(self._sock)

    @classmethod
    async def open(
        cls,
        context: zmq.Context[Any],
        endpoint: str,
        topics: Sequence[bytes] = (b"",),
        timeout: float = 10.0,
        *,
        configure: Configure | None = None,
    ) -> AsyncSubscription:
        """A live subscription; ``ActorUnavailable`` if no welcome comes within ``timeout``."""
        sub = cls(context, endpoint, topics, configure=configure)
        try:
            await asyncio.wait_for(sub._until_welcome(), timeout)
        except TimeoutError:
            sub.close()
            raise ActorUnavailable(f"no event publisher answered at {endpoint}") from None
        except BaseException:
            sub.close()
            raise
        return sub

    async def _until_welcome(self) -> None:
        while self.welcome_seq is None:
            self._ready.extend(self._feed(await self._recv_frames()))

    async def _recv_frames(self) -> list[bytes]:
        while True:
            if self._closed:
                raise ActorUnavailable(f"subscription to {self.endpoint} is closed")
            # The descriptor is edge-triggered: it signals new activity, not "a message is
            # waiting". EVENTS is the truth, so ask it before every wait (subscribing is a send
            # and may already have consumed the edge of messages that arrived meanwhile).
            if readable(self._sock):
                return recv_waiting(self._sock)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _on_readable(self) -> None:
        if self._closed:
            return
        # Reading EVENTS also resets the descriptor, so the loop stops calling us even while
        # nobody is waiting; the messages themselves stay queued in the socket.
        ready = readable(self._sock)
        waiter = self._waiter
        if ready and waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> SchedulerEvent:
        """The next event; ``ActorUnavailable`` once the subscription is closed."""
        if self._closed:
            raise ActorUnavailable(f"subscription to {self.endpoint} is closed")
        while not self._ready:
            self._ready.extend(self._feed(await self._recv_frames()))
        return self._ready.popleft()

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> SchedulerEvent:
        try:
            return await self.recv()
        except ActorUnavailable:
            if self._closed:
                raise StopAsyncIteration from None
            raise

    def close(self) -> None:
        """Close now; a pending ``recv`` raises ``ActorUnavailable`` (ends ``async for``)."""
        if self._closed:
            return
        self._closed = True
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._sock.close(linger=0)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
