"""``probe``: whether a deployment's endpoint answers at all, and if not, why, within 2 s.

A request to an actor that is not there waits in its DEALER until the request times out:
ZeroMQ reconnects silently, so a client cannot tell "slow" from "absent" by waiting. The CLI
asks first, with a connection of its own watched by its socket monitor, and says what is wrong:
no run directory (a wrong ``--run-dir``), no socket file or nobody behind it (the actor is not
running), a server that refused the handshake (a CURVE key it does not list, or CURVE on one side
only), or no handshake at all in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

PROBE_TIMEOUT_S = 2.0

_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_CONNECT_RETRIED
)


def probe(
    context: zmq.Context[Any],
    endpoint: str,
    actor: str,
    *,
    configure: Callable[[Any], None] | None = None,
    key_hint: str = "",
    timeout: float = PROBE_TIMEOUT_S,
    kind: int = zmq.DEALER,
) -> str | None:
    """None when a peer at ``endpoint`` completed a ZeroMQ handshake with this client; else
    one line saying why not. ``actor`` names who should be there; ``key_hint`` is added when
    the server refused this client's CURVE key. ``kind``: the socket type the client will use
    (ZeroMQ refuses a handshake between socket types that do not go together: a SUB for the
    event stream, a DEALER for everything else)."""
    if endpoint.startswith("inproc://"):
        return None  # in this process: there when its actor is
    if endpoint.startswith("ipc://"):
        path = Path(endpoint.removeprefix("ipc://"))
        if not path.parent.is_dir():
            return (
                f"no run directory {path.parent} (a wrong --run-dir or TASKMILL_RUN_DIR, or no "
                "deployment ever ran here)"
            )
        if not path.exists():
            return f"nothing listening at {endpoint} (the {actor} actor is not running)"
    sock = context.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if configure is not None:
        configure(sock)
    monitor = sock.get_monitor_socket(_EVENTS)
    try:
        sock.connect(endpoint)
        return _verdict(monitor, endpoint, actor, key_hint, timeout)
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def _verdict(
    monitor: zmq.Socket[Any], endpoint: str, actor: str, key_hint: str, timeout: float
) -> str | None:
    deadline = time.monotonic() + timeout
    while monitor.poll(max(0, int((deadline - time.monotonic()) * 1000))):
        event = parse_monitor_message(monitor.recv_multipart())["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            hint = f" ({key_hint})" if key_hint else ""
            return f"{endpoint} refused this client's CURVE key{hint}"
        if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            return (
                f"{endpoint} refused the handshake: CURVE on one side only? (--curve-dir on "
                "both, or --insecure on both)"
            )
        if event == zmq.EVENT_CONNECT_RETRIED:
            return f"nothing listening at {endpoint} (the {actor} actor is not running)"
    return f"no answer from the {actor} at {endpoint} within {timeout:g}s"
