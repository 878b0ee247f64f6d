"""The GroupLimiter actor: per-group concurrency limits and the running count of each group.

Owns: the default limit (``default_group_concurrency``), the per-group overrides, and which running
task belongs to which group (finalizers included). The rule (semantics.md "Groups"): a group's
effective limit is its override if set (0 blocks the group), else the default if > 0, else none.

Sockets:
* ROUTER ``endpoint`` (bound) — ``limiter.admit`` / ``limiter.release`` from the Dispatcher,
  ``limiter.set_limit`` / ``limiter.set_default`` / ``limiter.state`` from clients.
* PUB ``notify_endpoint`` (bound) — ``limiter.changed`` when a limit changes or a full group gets
  room again, so the Dispatcher runs a cycle at once instead of on its next poll.
* DEALER to the Store (``Peer``) — on start, the running tasks, to rebuild the counts.

Timers: a retry of the rebuild while the Store does not answer. ``limiter.admit`` requests that
arrive before the counts are rebuilt are answered after it, so a restarted limiter never lets a
group exceed its limit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from bus.client import Peer
from bus.errors import InvalidRequest, TaskmillError
from bus.kinds import ListTasks, Ok, TasksReply
from bus.kinds_run import (
    Admit,
    AdmitReply,
    GetLimiterState,
    GroupCandidate,
    LimiterState,
    LimitsChanged,
    ReleaseGroups,
    SetDefaultGroupLimit,
    SetGroupLimit,
)
from bus.protocol import Message, encode, send_frames
from bus.runtime import Actor, ActorLoop
from bus.server import DEFER, Deferred, Request, RequestServer, current_request, dispatch_each

log = logging.getLogger("taskmill.limiter")


class GroupBook:
    """Limits and running counts; pure bookkeeping, unit-tested without sockets."""

    def __init__(self, default: int = 0, overrides: Mapping[str, int] | None = None) -> None:
        self.default = default
        self.overrides: dict[str, int] = dict(overrides or {})
        self.running: Counter[str] = Counter()
        self.members: dict[int, str] = {}

    def limit(self, group: str) -> int | None:
        if group in self.overrides:
            return self.overrides[group]
        return self.default if self.default > 0 else None

    def has_room(self, group: str) -> bool:
        limit = self.limit(group)
        return limit is None or self.running[group] < limit

    def saturated(self) -> list[str]:
        groups = set(self.running) | set(self.overrides)
        return sorted(g for g in groups if not self.has_room(g))

    def admit(self, candidates: Iterable[GroupCandidate]) -> list[int]:
        admitted: list[int] = []
        for candidate in candidates:
            if candidate.id in self.members:
                admitted.append(candidate.id)  # already counted (a repeated request)
            elif self.has_room(candidate.group):
                self.members[candidate.id] = candidate.group
                self.running[candidate.group] += 1
                admitted.append(candidate.id)
        return admitted

    def release(self, ids: Iterable[int]) -> bool:
        """Forget these tasks; True if a group that was full has room now."""
        freed = False
        for task_id in ids:
            group = self.members.pop(task_id, None)
            if group is None:
                continue
            was_full = not self.has_room(group)
            self.running[group] -= 1
            if self.running[group] <= 0:
                del self.running[group]
            freed = freed or (was_full and self.has_room(group))
        return freed

    def set_limit(self, group: str, limit: int | None) -> None:
        if limit is None:
            self.overrides.pop(group, None)
        else:
            self.overrides[group] = _non_negative(limit)

    def set_default(self, n: int) -> None:
        self.default = _non_negative(n)


def _non_negative(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidRequest(f"a group limit must be an integer >= 0, got {n!r}")
    return n


@dataclass(frozen=True, slots=True)
class LimiterSettings:
    endpoint: str
    notify_endpoint: str
    store_endpoint: str
    default_group_concurrency: int = 0
    group_concurrency: tuple[tuple[str, int], ...] = ()
    store_timeout: float = 10.0
    rebuild_limit: int = 100_000


class GroupLimiter(Actor):
    name = "limiter"

    def __init__(self, settings: LimiterSettings) -> None:
        s = self.settings = settings
        self.book = GroupBook(s.default_group_concurrency, dict(s.group_concurrency))
        self.ready = False
        self._waiting: list[Request] = []
        self.counters = {"admitted": 0, "refused": 0, "released": 0, "changes": 0}

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        sock = loop.socket(zmq.ROUTER)
        loop.bind(sock, s.endpoint)
        handlers: dict[type[Message], Any] = {
            Admit: self.on_admit,
            ReleaseGroups: self.on_release,
            SetGroupLimit: self.on_set_limit,
            SetDefaultGroupLimit: self.on_set_default,
            GetLimiterState: self.on_state,
        }
        RequestServer(loop, sock, self, dispatch_each(handlers, self.name))
        self._notify = loop.socket(zmq.PUB)
        loop.bind(self._notify, s.notify_endpoint)
        self._store = Peer(loop, s.store_endpoint, timeout=s.store_timeout)
        self._rebuild()

    def _rebuild(self) -> None:
        """Count the tasks the Store says are running (after a restart of this actor)."""

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                log.warning("cannot rebuild group counts yet: %s", reply)
                self._store.loop.call_later(1.0, self._rebuild)
                return
            assert isinstance(reply, TasksReply)
            self.book.admit(
                GroupCandidate(t.id, t.group_key) for t in reply.tasks if t.group_key is not None
            )
            self.ready = True
            for request in self._waiting:
                assert isinstance(request.message, Admit)
                request.reply(self._admit(request.message))
            self._waiting.clear()
            self._changed()

        self._store.request(ListTasks("running", self.settings.rebuild_limit), on_reply)

    def _changed(self) -> None:
        self.counters["changes"] += 1
        send_frames(self._notify, encode(LimitsChanged(self.book.saturated())))

    # -- handlers (pure: message in, message out) ----------------------------------------------

    def on_admit(self, message: Admit) -> Message | Deferred:
        if not self.ready:
            self._waiting.append(current_request())  # answered once the counts are rebuilt
            return DEFER
        return self._admit(message)

    def _admit(self, message: Admit) -> AdmitReply:
        admitted = self.book.admit(message.candidates)
        self.counters["admitted"] += len(admitted)
        self.counters["refused"] += len(message.candidates) - len(admitted)
        return AdmitReply(admitted, self.book.saturated())

    def on_release(self, message: ReleaseGroups) -> Message:
        self.counters["released"] += len(message.ids)
        if self.book.release(message.ids):
            self._changed()
        return Ok()

    def on_set_limit(self, message: SetGroupLimit) -> Message:
        self.book.set_limit(message.group, message.limit)
        self._changed()
        return Ok()

    def on_set_default(self, message: SetDefaultGroupLimit) -> Message:
        self.book.set_default(message.n)
        self._changed()
        return Ok()

    def on_state(self, message: GetLimiterState) -> Message:
        return LimiterState(
            self.book.default, dict(self.book.overrides), dict(self.book.running), self.ready
        )

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "ready": self.ready,
            "default": self.book.default,
            "overrides": dict(self.book.overrides),
            "running": dict(self.book.running),
        }
