"""Serving requests and receiving one-way messages on an actor's loop.

"Cheap or nasty": every request gets exactly one reply, the handler's result or an ``error`` with a
numeric code. A malformed request still gets an error reply when its routing envelope can be
recovered; malformed one-way messages are dropped and counted. Nothing here ever raises into the
loop because of what a peer sent. Malformed traffic is also logged, at a bounded rate
(``MalformedLog``).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from bus.errors import ErrorCode, ProtocolError, TaskmillError
from bus.kinds import Error, Ok, Ping, Pong, Stats, StatsReply, Stop
from bus.protocol import Message, decode, encode, send_frames, split_envelope
from bus.runtime import Actor, ActorLoop

log = logging.getLogger("taskmill.bus")

MALFORMED_LOG_INTERVAL_S = 60.0


class MalformedLog:
    """Counts the malformed messages one socket got and reports them at WARNING, at most once
    per ``interval`` seconds with how many came since the last report: counters alone hide a
    broken peer or a probe at the default level, and a line per message would let a flood fill
    the log."""

    __slots__ = ("_next_at", "_unreported", "count", "interval", "where")

    def __init__(self, where: str, interval: float = MALFORMED_LOG_INTERVAL_S) -> None:
        self.where = where
        self.interval = interval
        self.count = 0
        self._unreported = 0
        self._next_at = float("-inf")

    def note(self, reason: object, now: float) -> None:
        """One more malformed message at ``now`` (monotonic seconds); ``reason`` says what was
        wrong with it."""
        self.count += 1
        self._unreported += 1
        if now < self._next_at:
            return
        log.warning(
            "%s: %d malformed message(s) dropped since the last report (%d in all); latest: %s",
            self.where,
            self._unreported,
            self.count,
            reason,
        )
        self._unreported = 0
        self._next_at = now + self.interval


class Deferred:
    """Returned by a handler that will reply later through ``Request.reply``."""


DEFER = Deferred()

Handler = Callable[[Any], "Message | Deferred"]


@dataclass(slots=True)
class Request:
    """A decoded request and the way back to its sender."""

    message: Message
    envelope: list[bytes]
    correlation: bytes
    server: RequestServer
    replied: bool = field(default=False)

    def reply(self, message: Message) -> None:
        if not self.replied:
            self.replied = True
            self.server.send(self.envelope, message, self.correlation)

    def fail(self, code: int, reason: str) -> None:
        self.reply(Error(int(code), reason))


class RequestServer:
    """Decodes batches from a ROUTER, answers control kinds, hands the rest to ``on_batch``."""

    def __init__(
        self,
        loop: ActorLoop,
        sock: zmq.Socket[Any],
        actor: Actor,
        on_batch: Callable[[list[Request]], None],
        *,
        control: bool = False,
    ) -> None:
        self.loop = loop
        self.control = control
        self.sock = sock
        self.actor = actor
        self.on_batch = on_batch
        self.counters = {"requests": 0, "malformed": 0, "errors": 0}
        self.malformed = MalformedLog(f"{actor.name} {_endpoint(sock)}")
        loop.add_reader(sock, self._on_frames)
        loop.after_stop(self._refuse_queued)

    def send(self, envelope: list[bytes], message: Message, correlation: bytes) -> None:
        if isinstance(message, Error):
            self.counters["errors"] += 1
        self.send_frames(envelope, encode(message, correlation))

    def send_frames(self, envelope: list[bytes], frames: list[bytes]) -> bool:
        """Send encoded message frames to the peer at ``envelope``: a reply, or a one-way
        message (empty correlation id) that travels behind the replies sent before it. False
        when the message was dropped."""
        try:
            send_frames(self.sock, [*envelope, *frames])
        except zmq.Again:
            log.warning("%s: reply to a peer that is not reading dropped", self.actor.name)
        except zmq.ZMQError as exc:  # e.g. EHOSTUNREACH: the peer went away
            log.warning("%s: reply dropped: %s", self.actor.name, exc)
        else:
            return True
        return False

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        requests: list[Request] = []
        for frames in batch:
            request = self._decode(frames)
            if request is None:
                continue
            if not self._control(request):
                requests.append(request)
        if requests:
            self.counters["requests"] += len(requests)
            self.on_batch(requests)

    def _decode(self, frames: list[bytes]) -> Request | None:
        envelope, parts = _split(frames)
        if envelope is None:
            self.counters["malformed"] += 1
            self.malformed.note("an empty message", self.loop.clock.monotonic())
            return None  # no way back to the sender: drop and count
        try:
            message, correlation = decode(parts)
        except ProtocolError as exc:
            self.counters["malformed"] += 1
            self.malformed.note(exc, self.loop.clock.monotonic())
            correlation = parts[2] if len(parts) >= 3 and len(parts[2]) <= 64 else b""
            self.send(envelope, Error(int(exc.code), exc.message), bytes(correlation))
            return None
        return Request(message, envelope, correlation, self)

    def _control(self, request: Request) -> bool:
        message = request.message
        if isinstance(message, Ping):
            request.reply(Pong(self.actor.name))
        elif isinstance(message, Stats):
            counters = dict(self.actor.stats())
            counters.update({f"bus_{k}": v for k, v in self.counters.items()})
            request.reply(StatsReply(self.actor.name, counters))
        elif isinstance(message, Stop):
            if not self.control:
                request.fail(ErrorCode.UNKNOWN_KIND, "stop is accepted on the control socket only")
                return True
            request.reply(Ok())
            self.loop.stop()
        else:
            return False
        return True

    def _refuse_queued(self) -> None:
        """Requests still queued when the actor stops get an error instead of silence."""
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                return
            envelope, parts = _split(frames)
            if envelope is not None and len(parts) == 4:
                self.send(
                    envelope,
                    Error(int(ErrorCode.STOPPING), f"{self.actor.name} is stopping"),
                    bytes(parts[2]),
                )


def _endpoint(sock: zmq.Socket[Any]) -> str:
    """The endpoint ``sock`` is bound or connected to, for log lines (set by ``ActorLoop``)."""
    try:
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    except zmq.ZMQError:
        return "socket"
    if not isinstance(endpoint, bytes) or not endpoint:
        return "socket"
    return endpoint.decode(errors="replace")


def _split(frames: Sequence[bytes]) -> tuple[list[bytes] | None, list[bytes]]:
    """Routing frames and message frames; (None, []) when there is no way back at all."""
    if not frames:
        return None, []
    if len(frames) == 1:
        return [frames[0]], []  # routing id only: answer "malformed" to it
    return split_envelope(frames)


def dispatch_each(
    handlers: dict[type[Message], Handler], name: str
) -> Callable[[list[Request]], None]:
    """An ``on_batch`` that calls one handler per request and turns exceptions into replies."""

    def on_batch(requests: list[Request]) -> None:
        for request in requests:
            handle_one(handlers, name, request)

    return on_batch


_current: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "taskmill_current_request", default=None
)


def current_request() -> Request:
    """The request being handled: a handler that returns ``DEFER`` keeps it to reply later."""
    request = _current.get()
    if request is None:
        raise RuntimeError("current_request() called outside a request handler")
    return request


def handle_one(handlers: dict[type[Message], Handler], name: str, request: Request) -> None:
    token = _current.set(request)
    try:
        _handle(handlers, name, request)
    finally:
        _current.reset(token)


def _handle(handlers: dict[type[Message], Handler], name: str, request: Request) -> None:
    handler = handlers.get(type(request.message))
    if handler is None:
        request.fail(ErrorCode.UNKNOWN_KIND, f"{name} does not handle {request.message.KIND}")
        return
    try:
        result = handler(request.message)
    except TaskmillError as exc:
        request.fail(exc.code, exc.message)
        return
    except Exception as exc:  # a handler bug: answer, log, keep serving
        log.exception("%s: handler for %s failed", name, request.message.KIND)
        request.fail(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        return
    if isinstance(result, Deferred):
        return
    request.reply(result)


def serve_control(loop: ActorLoop, actor: Actor, endpoint: str) -> RequestServer:
    """Bind the actor's control ROUTER: PING, STATS and STOP, nothing else."""
    sock = loop.socket(zmq.ROUTER)
    loop.bind(sock, endpoint)

    def refuse(requests: list[Request]) -> None:
        for request in requests:
            request.fail(ErrorCode.UNKNOWN_KIND, "the control socket answers ping, stats, stop")

    return RequestServer(loop, sock, actor, refuse, control=True)


class Inbox:
    """Receives one-way messages on a PULL or SUB socket; drops and counts malformed ones."""

    def __init__(
        self,
        loop: ActorLoop,
        sock: zmq.Socket[Any],
        on_messages: Callable[[list[Message]], None],
        *,
        topic_frames: int = 0,
    ) -> None:
        self.on_messages = on_messages
        self.topic_frames = topic_frames
        self.malformed = MalformedLog(f"{loop.name} {_endpoint(sock)}")
        self.clock = loop.clock
        loop.add_reader(sock, self._on_frames)

    @property
    def dropped(self) -> int:
        """Malformed messages dropped."""
        return self.malformed.count

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        messages: list[Message] = []
        for frames in batch:
            try:
                message, _ = decode(frames[self.topic_frames :])
            except ProtocolError as exc:
                self.malformed.note(exc, self.clock.monotonic())
                continue
            messages.append(message)
        if messages:
            self.on_messages(messages)
