"""The GroupLimiter actor: owns the per-group concurrency policy.

Owns: the default limit (``default_group_concurrency``) and the per-group overrides the
application was built with, and every change made at runtime. The rule: a group's effective
limit is its override if set (0 blocks the group), else the default if > 0, else none; a value
set at runtime wins over the one the application was built with, and survives restarts.

The limiter hands its policy to the Store ahead of time (``store.set_groups``), where the claim
applies it in the same transaction that counts each group's running tasks: no task ever waits
on a round trip to the limiter, and no count can drift when an actor restarts. At every start it
sets the ``configured`` layer anew (so a rebuilt application's limits take effect); runtime
changes go to the ``runtime`` layer and are answered once the Store has committed them.

Sockets:
* ROUTER ``endpoint`` (bound) — ``limiter.set_limit`` / ``limiter.set_default`` /
  ``limiter.state`` from clients.
* DEALER to the Store (``Peer``) — ``store.set_groups`` and ``store.groups``.

Timers: a retry of the configured layer's hand-over while the Store does not answer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import zmq

from bus.client import Peer
from bus.errors import InvalidRequest, TaskmillError
from bus.kinds import GetGroups, GroupsReply, Ok, SetGroups
from bus.kinds_run import GetLimiterState, LimiterState, SetDefaultGroupLimit, SetGroupLimit
from bus.protocol import Message
from bus.runtime import Actor, ActorLoop
from bus.server import DEFER, Deferred, RequestServer, current_request, dispatch_each

log = logging.getLogger("taskmill.limiter")

RETRY_S = 1.0
CLEARED = -1
"""The runtime value that removes a group's override (the Store's ``group_policy``)."""


def check_limit(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidRequest(f"a group limit must be an integer >= 0, got {n!r}")
    return n


def check_group(group: object) -> str:
    if not isinstance(group, str) or not group:
        raise InvalidRequest(f"a group name must be a non-empty string, got {group!r}")
    return group


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    endpoint: str
    store_endpoint: str
    default_group_concurrency: int = 0
    group_concurrency: tuple[tuple[str, int], ...] = ()
    store_timeout: float = 10.0


class GroupLimiter(Actor):
    name = "limiter"

    def __init__(self, settings: LimiterSettings) -> None:
        self.settings = settings
        check_limit(settings.default_group_concurrency)
        for group, limit in settings.group_concurrency:
            check_group(group)
            check_limit(limit)
        self.ready = False
        """The configured layer is in the Store."""
        self.counters = {"changes": 0, "handovers": 0, "store_errors": 0}

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        self.loop = loop
        sock = loop.socket(zmq.ROUTER)
        loop.bind(sock, s.endpoint)
        handlers: dict[type[Message], Any] = {
            SetGroupLimit: self.on_set_limit,
            SetDefaultGroupLimit: self.on_set_default,
            GetLimiterState: self.on_state,
        }
        RequestServer(loop, sock, self, dispatch_each(handlers, self.name))
        self._store = Peer(loop, s.store_endpoint, timeout=s.store_timeout)
        self._hand_over()

    def _hand_over(self) -> None:
        """Set the configured layer in the Store (at every start; again until it answers)."""
        s = self.settings
        configured = SetGroups(
            "configured", s.default_group_concurrency, dict(s.group_concurrency), replace=True
        )

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self.counters["store_errors"] += 1
                log.warning("group limits not handed to the store yet: %s", reply)
                self.loop.call_later(RETRY_S, self._hand_over)
                return
            self.counters["handovers"] += 1
            self.ready = True

        self._store.request(configured, on_reply)

    def _change(self, change: SetGroups) -> Deferred:
        """Apply a runtime change in the Store; answer the client once it is committed."""
        request = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                request.fail(reply.code, reply.message)
                return
            self.counters["changes"] += 1
            request.reply(Ok())

        self._store.request(change, on_reply)
        return DEFER

    # -- handlers ------------------------------------------------------------------------------

    def on_set_limit(self, message: SetGroupLimit) -> Deferred:
        group = check_group(message.group)
        # Removing an override is a runtime value of its own (-1), so that it also removes the
        # override the application was built with, and stays removed across restarts.
        limit = CLEARED if message.limit is None else check_limit(message.limit)
        return self._change(SetGroups("runtime", None, {group: limit}))

    def on_set_default(self, message: SetDefaultGroupLimit) -> Deferred:
        return self._change(SetGroups("runtime", check_limit(message.n)))

    def on_state(self, message: GetLimiterState) -> Deferred:
        request = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                request.fail(reply.code, reply.message)
                return
            assert isinstance(reply, GroupsReply)
            default = reply.configured_default
            if reply.runtime_default is not None:
                default = reply.runtime_default
            merged = {**reply.configured, **reply.runtime}
            overrides = {g: n for g, n in merged.items() if n != CLEARED}
            request.reply(LimiterState(default, overrides, reply.running, self.ready))

        self._store.request(GetGroups(), on_reply)
        return DEFER

    def stats(self) -> dict[str, Any]:
        return {**self.counters, "ready": self.ready}
