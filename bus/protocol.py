"""The taskmill wire protocol: framing, the message registry and the msgpack codec.

Every message on every socket is the same four frames (after any ROUTER routing frames)::

    [PROTOCOL, kind, correlation id, body]

* ``PROTOCOL`` is ``b"TMP4"``: the protocol name and its major version. A peer speaking another
  major version gets ``ErrorCode.VERSION_MISMATCH``.
* ``kind`` is the ASCII name of a registered message kind (``b"store.submit"``).
* ``correlation id`` is opaque bytes chosen by the requester and echoed in the reply; one-way
  messages carry ``b""``.
* ``body`` is one msgpack map of the message's fields; a struct inside it is the array of its
  fields in order (``bus.codec``). Decoders ignore unknown fields (a struct's extra trailing
  items) and fill missing ones from defaults, so fields can be added within a major version.

msgpack's traps are handled on purpose: tuples come back as lists (fields are typed ``list`` or
``tuple`` and converted), map keys are str, and times travel as epoch milliseconds in fields named
``*_ms``. ``docs/protocol.md`` is the authoritative description of every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import msgpack
import zmq
import zmq.backend

from bus.codec import (
    M,
    Message,
    _decoders,
    _encoders,
    _registry,
    family,
    message,
    registry,
    struct,
    unknown_kind_decoder,
)
from bus.errors import ErrorCode, ProtocolError

__all__ = [
    "MAX_FRAME_BYTES", "MAX_MESSAGE_BYTES", "MAX_ROWS_BYTES", "MAX_SUBSCRIPTION_BYTES", "PROTOCOL",
    "PROTOCOL_MAJOR", "PROTOCOL_NAME", "Message", "decode", "decode_as", "encode", "encode_body",
    "family", "limit_inbound", "message", "readable", "recv_ready", "recv_waiting", "registry",
    "send_frames", "split_envelope", "struct",
]  # fmt: skip

PROTOCOL = b"TMP4"
PROTOCOL_NAME = "TMP"
PROTOCOL_MAJOR = 4
MAX_FRAME_BYTES = 4 * 1024 * 1024
"""Largest body any socket accepts; payloads themselves are capped lower (1 MiB) by the Store."""
MAX_ROWS_BYTES = MAX_FRAME_BYTES * 3 // 4
"""Most bytes of rows (tasks, history) one reply carries, as far as their payloads and texts go:
a quarter of the frame is left for what that estimate leaves out (ids, numbers, times, framing).
Rows past it come in the next page, or (a snapshot's running tasks) without their payloads."""
MAX_MESSAGE_BYTES = 2 * MAX_FRAME_BYTES
"""Largest frame a socket reads at all (``ZMQ_MAXMSGSIZE``): libzmq disconnects a peer that sends
a larger one instead of buffering it. Between ``MAX_FRAME_BYTES`` and this, a request still gets
its ``TOO_LARGE`` reply."""
MAX_SUBSCRIPTION_BYTES = 1024
"""Largest message a publishing socket (PUB, XPUB) reads: a subscription (one byte and a topic),
and the commands of a CURVE handshake, which the limit covers too (its longest, INITIATE, is a
few hundred bytes). Every topic taskmill subscribes to is far shorter; libzmq keeps each one a
peer sends, byte by byte, so a longer one would only cost memory."""


# -- framing ---------------------------------------------------------------------------------

_packb = msgpack.Packer(use_bin_type=True, datetime=False).pack


def encode_body(msg: Message) -> bytes:
    body: bytes = _packb(_encoders[type(msg)](msg))
    return body


def encode(msg: Message, correlation: bytes = b"") -> list[bytes]:
    """The four frames of ``msg``."""
    return [PROTOCOL, msg.KIND.encode("ascii"), correlation, encode_body(msg)]


def split_envelope(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split the routing frames a ROUTER prepends (at least one) from the message frames.

    A message is always the last four frames; routing ids are opaque (one may even start with
    ``TMP``), so the split is by position, never by content.
    """
    if len(frames) < 2:
        raise ProtocolError(ErrorCode.MALFORMED, "no routing frame")
    cut = max(1, len(frames) - 4)
    return list(frames[:cut]), list(frames[cut:])


def decode(frames: Sequence[bytes]) -> tuple[Message, bytes]:
    """Decode the message frames (no routing frames) into ``(message, correlation id)``.

    Raises ``ProtocolError`` with a precise code for every way a message can be wrong.
    """
    if len(frames) != 4:
        raise ProtocolError(ErrorCode.MALFORMED, f"expected 4 frames, got {len(frames)}")
    header, kind, correlation, body = frames
    if header != PROTOCOL:
        if header[:3] == PROTOCOL[:3] and header[3:].isdigit():
            raise ProtocolError(
                ErrorCode.VERSION_MISMATCH,
                f"protocol {bytes(header)!r} not supported; this peer speaks {PROTOCOL!r}",
            )
        raise ProtocolError(ErrorCode.MALFORMED, f"not a taskmill frame: {bytes(header[:16])!r}")
    cls = _registry.get(bytes(kind))
    decoder = _decoders[cls] if cls is not None else unknown_kind_decoder(bytes(kind))
    if decoder is None:
        raise ProtocolError(ErrorCode.UNKNOWN_KIND, f"unknown message kind {bytes(kind[:64])!r}")
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"body of {len(body)} bytes exceeds the limit")
    try:
        data = msgpack.unpackb(body, raw=False, strict_map_key=True, timestamp=0)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(ErrorCode.MALFORMED, f"undecodable body: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        name = cls.KIND if cls is not None else bytes(kind).decode("ascii")
        raise ProtocolError(ErrorCode.MALFORMED, f"{name} body must be a map with str keys")
    msg = decoder(data)
    return msg, bytes(correlation)


def decode_as(frames: Sequence[bytes], cls: type[M]) -> M:
    msg, _ = decode(frames)
    if not isinstance(msg, cls):
        raise ProtocolError(ErrorCode.MALFORMED, f"expected {cls.KIND}, got {msg.KIND}")
    return msg


def limit_inbound(sock: zmq.Socket[Any]) -> None:
    """Bound what ``sock`` reads (``ZMQ_MAXMSGSIZE``): subscriptions on a publishing socket,
    ``MAX_MESSAGE_BYTES`` on any other."""
    publishing = sock.type in (zmq.PUB, zmq.XPUB)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES if publishing else MAX_MESSAGE_BYTES)


# -- fast socket I/O ---------------------------------------------------------------------------

_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_backend_send = zmq.backend.Socket.send
_backend_get = cast(Callable[[Any, int], int], zmq.backend.Socket.get)  # int: EVENTS, RCVMORE
_backend_recv = zmq.backend.Socket.recv
_EVENTS = int(zmq.EVENTS)
_RCVMORE = int(zmq.RCVMORE)
_POLLIN = int(zmq.POLLIN)
_FRAMES_KNOW_MORE = zmq.backend.Socket.__module__.startswith("zmq.backend.cython")


def send_frames(sock: Any, frames: Sequence[bytes]) -> None:
    """``sock.send_multipart(frames, NOBLOCK)`` without pyzmq's sugar layer, which turns flags
    into enums for every frame: that dominates the cost of a small message on the hot path.
    Raises ``zmq.Again`` as ``send_multipart`` does."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _backend_send(sock, frame, _NOBLOCK if i == last else _NOBLOCK_MORE)


def readable(sock: Any) -> bool:
    """Whether a whole message is waiting on ``sock`` (``EVENTS & POLLIN``, without the enums of
    pyzmq's sugar layer). Reading it also resets the socket's edge-triggered descriptor."""
    return bool(_backend_get(sock, _EVENTS) & _POLLIN)


def recv_ready(sock: Any, limit: int) -> list[list[bytes]]:
    """Every message already waiting on ``sock``, at most ``limit``; never blocks.

    ``recv_multipart(NOBLOCK)`` until ``zmq.Again`` does the same, but pays for an exception (and
    pyzmq's enums) on every call, which costs more than the message itself on the hot path.
    """
    batch: list[list[bytes]] = []
    while len(batch) < limit and _backend_get(sock, _EVENTS) & _POLLIN:
        batch.append(recv_waiting(sock))
    return batch


def recv_waiting(sock: Any) -> list[bytes]:
    """The frames of the message ``readable(sock)`` said is waiting (``recv_multipart(NOBLOCK)``
    without pyzmq's enums); raises ``zmq.Again`` when none is.

    Each frame is received as a ``zmq.Frame``, which carries its own "more frames follow" flag:
    asking the socket (``RCVMORE``) instead costs pyzmq an enum lookup per frame, which costs
    more than the frame itself. Only pyzmq's Cython backend sets that flag on a received frame;
    its CFFI backend (PyPy) is asked the usual way."""
    frames: list[bytes] = []
    if not _FRAMES_KNOW_MORE:
        frames.append(_backend_recv(sock, _NOBLOCK))
        while _backend_get(sock, _RCVMORE):
            frames.append(_backend_recv(sock, _NOBLOCK))
        return frames
    while True:
        frame = _backend_recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
        if not frame.more:
            return frames
