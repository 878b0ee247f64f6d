"""A publishing socket whose subscriptions stay bounded: ``PublishingSocket``.

libzmq keeps every subscription a peer sends (a trie per socket, the peer's pipe at each topic;
in XPUB manual mode too) and frees one only when it is cancelled or the peer's connection ends.
``ZMQ_MAXMSGSIZE`` bounds one topic (``bus.protocol.MAX_SUBSCRIPTION_BYTES``), nothing bounds how
many: 100,000 distinct short topics cost a publisher over 50 MiB, for as long as it runs.

So a publishing actor binds an XPUB through this class, which reads what libzmq reports (the first
subscription to a topic and, once no peer holds it any more, its cancellation; with
``XPUB_VERBOSE`` each repeated subscription too, which changes nothing here) and so knows the
distinct topics libzmq keeps and their bytes. Past ``MAX_SUBSCRIPTIONS`` topics or
``MAX_SUBSCRIPTION_TOPIC_BYTES`` bytes it closes the socket and binds a new one at the same
endpoint: every connection ends and libzmq frees all it kept. libzmq does not say which peer sent
a subscription, so the bound is on the socket, not on a peer.

A libzmq SUB whose owner reads it connects again by itself (within its reconnect interval, 0.1 s
by default) and sends its subscriptions again; ``bus.subscribe`` is welcomed again and counts the
events published meanwhile as missed. The bound protects the publisher's memory, not the stream:
a peer that floods again and again keeps every subscriber reconnecting (keep strangers out with
CURVE, ``bus.security``). The first rebinding of an episode is logged as a WARNING, the next ones
only while ``EPISODE_S`` has not passed since the previous one at DEBUG.

Over inproc (embedded mode) there is no bound: the peers are the process's own code, and libzmq
does not connect an inproc SUB again once its peer socket closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from bus.limits import MAX_SUBSCRIPTION_TOPIC_BYTES, MAX_SUBSCRIPTIONS
from bus.protocol import send_frames
from bus.runtime import ActorLoop

log = logging.getLogger("taskmill.bus")

EPISODE_S = 60.0
"""A rebinding within this long of the previous one belongs to the same episode (no WARNING)."""
SUBSCRIPTION_QUEUE = 1_000
"""RCVHWM: subscriptions waiting to be read. The send queue (``hwm``) is for what is published;
subscriptions are not, and must not be lost to it."""
_REBIND_RETRY_S = (0.01, 1.0)
"""First and longest wait before binding again when the endpoint is still in use (a tcp port
whose old listener libzmq closes in its own thread)."""

OnFrame = Callable[[bytes], None]


class PublishingSocket:
    """An XPUB bound at ``endpoint`` on ``loop``, closed and bound again when its subscriptions
    pass the bound; ``on_frame`` sees every frame a peer sent (subscriptions and anything else),
    ``on_rebind`` is told when the socket was replaced (every subscriber is gone for now)."""

    def __init__(
        self,
        loop: ActorLoop,
        endpoint: str,
        *,
        name: str,
        hwm: int,
        verbose: bool = False,
        on_frame: OnFrame | None = None,
        on_rebind: Callable[[], None] | None = None,
        max_topics: int = MAX_SUBSCRIPTIONS,
        max_topic_bytes: int = MAX_SUBSCRIPTION_TOPIC_BYTES,
    ) -> None:
        if max_topics < 1 or max_topic_bytes < 1:
            raise ValueError("max_topics and max_topic_bytes must be at least 1")
        self.loop = loop
        self.endpoint = endpoint
        self.name = name
        self.hwm = hwm
        self.verbose = verbose
        self.on_frame = on_frame
        self.on_rebind = on_rebind
        self.max_topics = max_topics
        self.max_topic_bytes = max_topic_bytes
        self.bounded = not endpoint.startswith("inproc://")
        self.rebinds = 0
        self.frames = 0
        """Subscriptions read (repeated ones too, with ``XPUB_VERBOSE``)."""
        self.topic_bytes = 0
        self._topics: set[bytes] = set()
        self._last_rebind: float | None = None
        self.socket = self._open()
        loop.bind(self.socket, endpoint)

    @property
    def topics(self) -> int:
        """Distinct topics subscribed to now (as far as libzmq has reported them)."""
        return len(self._topics)

    def send(self, frames: Sequence[bytes]) -> None:
        """Publish one message; ``zmq.Again`` as ``send_frames`` raises it."""
        send_frames(self.socket, frames)

    def stats(self) -> dict[str, Any]:
        return {
            "subscription_topics": len(self._topics),
            "subscription_bytes": self.topic_bytes,
            "subscription_frames": self.frames,
            "rebinds": self.rebinds,
        }

    def _open(self) -> zmq.Socket[Any]:
        sock = self.loop.socket(zmq.XPUB, hwm=self.hwm)
        sock.setsockopt(zmq.RCVHWM, SUBSCRIPTION_QUEUE)
        if self.verbose:
            sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.loop.add_reader(sock, self._on_frames)
        return sock

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        sock = self.socket
        for frames in batch:
            frame = frames[0] if frames else b""
            if not self._account(frame):
                self._rebind()
                return  # the rest came over connections that no longer exist
            if self.on_frame is not None:
                self.on_frame(frame)
            if self.socket is not sock:
                return

    def _account(self, frame: bytes) -> bool:
        """Note a (un)subscription; False when the topics are now past the bound."""
        if not frame or frame[0] > 1:
            return True  # not a subscription: libzmq keeps nothing of it
        topic = bytes(frame[1:])
        if frame[0] == 1:
            self.frames += 1
            if topic not in self._topics:
                self._topics.add(topic)
                self.topic_bytes += len(topic)
        elif topic in self._topics:
            self._topics.discard(topic)
            self.topic_bytes -= len(topic)
        if not self.bounded:
            return True
        return len(self._topics) <= self.max_topics and self.topic_bytes <= self.max_topic_bytes

    def _rebind(self) -> None:
        now = self.loop.clock.monotonic()
        quiet = self._last_rebind is not None and now - self._last_rebind < EPISODE_S
        self._last_rebind = now
        self.rebinds += 1
        (log.debug if quiet else log.warning)(
            "%s: %d distinct subscriptions (%d bytes of topics) at %s, past the bound of %d "
            "(%d bytes): every subscriber is disconnected to free them and connects again "
            "(further ones within %gs of each other are not logged as warnings)",
            self.name,
            len(self._topics),
            self.topic_bytes,
            self.endpoint,
            self.max_topics,
            self.max_topic_bytes,
            EPISODE_S,
        )
        self.loop.close_socket(self.socket)
        self._topics.clear()
        self.topic_bytes = 0
        self.socket = self._open()
        self._bind(self.socket, _REBIND_RETRY_S[0])
        if self.on_rebind is not None:
            self.on_rebind()

    def _bind(self, sock: zmq.Socket[Any], wait: float) -> None:
        """Bind ``sock`` (while it is still the current socket), again after ``wait`` seconds
        (doubling) while the old socket's listener still holds the endpoint."""
        if sock is not self.socket or self.loop.stopping:
            return
        try:
            self.loop.bind(sock, self.endpoint)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE:
                raise
            again = min(wait * 2, _REBIND_RETRY_S[1])
            self.loop.call_later(wait, lambda: self._bind(sock, again))
