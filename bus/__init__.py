"""The taskmill bus: wire protocol, message kinds, endpoints, the actor runtime and clients.

``bus`` knows nothing of the actors built on it.
"""

from bus import events, kinds, kinds_flow, kinds_run
from bus.errors import ActorUnavailable, ErrorCode, ProtocolError, TaskmillError
from bus.protocol import PROTOCOL, Message, decode, encode

__all__ = [
    "PROTOCOL",
    "ActorUnavailable",
    "ErrorCode",
    "Message",
    "ProtocolError",
    "TaskmillError",
    "decode",
    "encode",
    "events",
    "kinds",
    "kinds_flow",
    "kinds_run",
]
