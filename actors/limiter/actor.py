"""The GroupLimiter actor: owns the per-group concurrency policy.

Owns: the default limit (``default_group_concurrency``) and the per-group overrides the
application was built with, and every change made at runtime. The rule: a group's effective
limit is its override if set (0 blocks the group), else the default if > 0, else none; a value
set at runtime wins over the one the application was built with, and survives restarts.

It owns the rest of the flow policy the same way: rate limits per task type and per group,
fair-share weights and minimum slots (configured and runtime layers, ``store.set_flow``), and
paused groups (``store.pause_group`` / ``store.resume_group``), publishing ``group_paused`` and
``group_resumed``. A pause with an end is resumed by a timer of the limiter's (armed again at
every start from the Store's paused groups); the claim itself lets a group's tasks start once
that end has passed, so a late or stopped limiter delays only the event.

The limiter hands its policy to the Store ahead of time (``store.set_groups``), where the claim
applies it in the same transaction that counts each group's running tasks: no task ever waits
on a round trip to the limiter, and no count can drift when an actor restarts. At every start it
sets the ``configured`` layer anew (so a rebuilt application's limits take effect); runtime
changes go to the ``runtime`` layer and are answered once the Store has committed them.

Sockets:
* ROUTER ``endpoint`` (bound) — ``limiter.set_limit`` / ``limiter.set_default`` /
  ``limiter.state`` from clients.
* DEALER to the Store (``Peer``) — ``store.set_groups``, ``store.groups``, ``store.set_flow``,
  ``store.pause_group``, ``store.resume_group``, ``store.flow``.
* PUSH to the EventPublisher (when ``events_endpoint`` is set) — ``group_paused``,
  ``group_resumed``.

Timers: a retry of the configured layer's hand-over while the Store does not answer; one per
pause with an end, to resume the group then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from bus.client import Peer
from bus.errors import InvalidRequest, TaskmillError
from bus.events import GroupPaused, GroupResumed, GroupWeightChanged, SchedulerEvent
from bus.kinds import GetGroups, GroupsReply, Ok, SetGroups
from bus.kinds_flow import (
    CLEARED_WEIGHT,
    FlowReply,
    GetFlow,
    GroupPauseReply,
    PauseGroup,
    PauseGroupRequest,
    ResetGroupWeights,
    ResumeGroup,
    ResumeGroupRequest,
    SetFlow,
    SetGroupMinimumSlots,
    SetGroupWeight,
    SetRateLimit,
)
from bus.kinds_run import (
    GetLimiterState,
    LimiterState,
    SetDefaultGroupLimit,
    SetGroupLimit,
)
from bus.protocol import Message, encode, send_frames
from bus.runtime import Actor, ActorLoop, Timer
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
    events_endpoint: str | None = None
    rate_limits: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    """Scope (``type:<t>``, ``group:<g>``) → (permits, interval_ms, burst), as built."""
    group_weights: tuple[tuple[str, float], ...] = ()
    default_group_weight: float | None = None
    group_minimum_slots: tuple[tuple[str, int], ...] = ()


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
        self.counters = {
            "changes": 0,
            "handovers": 0,
            "store_errors": 0,
            "pauses": 0,
            "resumes": 0,
            "events": 0,
            "events_dropped": 0,
        }

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        self.loop = loop
        sock = loop.socket(zmq.ROUTER)
        loop.bind(sock, s.endpoint)
        handlers: dict[type[Message], Any] = {
            SetGroupLimit: self.on_set_limit,
            SetDefaultGroupLimit: self.on_set_default,
            GetLimiterState: self.on_state,
            SetRateLimit: self.on_set_rate_limit,
            SetGroupWeight: self.on_set_weight,
            SetGroupMinimumSlots: self.on_set_minimum_slots,
            ResetGroupWeights: self.on_reset_weights,
            PauseGroupRequest: self.on_pause_group,
            ResumeGroupRequest: self.on_resume_group,
        }
        RequestServer(loop, sock, self, dispatch_each(handlers, self.name))
        self._store = Peer(loop, s.store_endpoint, timeout=s.store_timeout)
        self._events: zmq.Socket[Any] | None = None
        if s.events_endpoint is not None:
            self._events = loop.socket(zmq.PUSH, hwm=1000)
            loop.connect(self._events, s.events_endpoint)
        self._resumes: dict[str, Timer] = {}
        self._hand_over()

    def _hand_over(self) -> None:
        """Set the configured layers in the Store (at every start; again until it answers),
        then arm the timers of the pauses that have an end."""
        s = self.settings
        configured = SetGroups(
            "configured", s.default_group_concurrency, dict(s.group_concurrency), replace=True
        )
        flow = SetFlow(
            "configured",
            {scope: list(rate) for scope, rate in s.rate_limits},
            dict(s.group_weights),
            dict(s.group_minimum_slots),
            s.default_group_weight,
            replace=True,
        )
        replies: list[Message | TaskmillError] = []

        def on_reply(reply: Message | TaskmillError) -> None:
            replies.append(reply)
            if len(replies) < 3:
                return
            failed = [r for r in replies if isinstance(r, TaskmillError)]
            if failed:
                self.counters["store_errors"] += 1
                log.warning("group policy not handed to the store yet: %s", failed[0])
                self.loop.call_later(RETRY_S, self._hand_over)
                return
            self.counters["handovers"] += 1
            self.ready = True
            state = replies[2]
            assert isinstance(state, FlowReply)
            for paused in state.paused_groups:
                if paused.resume_at_ms is not None:
                    self._arm_resume(paused.group, paused.resume_at_ms)

        self._store.request(configured, on_reply)
        self._store.request(flow, on_reply)
        self._store.request(GetFlow(), on_reply)

    def _emit(self, event: SchedulerEvent) -> None:
        if self._events is None:
            return
        try:
            send_frames(self._events, encode(event))
            self.counters["events"] += 1
        except zmq.Again:
            self.counters["events_dropped"] += 1

    def _arm_resume(self, group: str, until_ms: int) -> None:
        """Resume ``group`` at ``until_ms`` (replacing an earlier timer of its)."""
        previous = self._resumes.pop(group, None)
        if previous is not None:
            previous.cancel()
        delay = max(0.0, until_ms / 1000 - self.loop.clock.time())
        self._resumes[group] = self.loop.call_later(delay, lambda: self._resume_due(group))

    def _resume_due(self, group: str) -> None:
        self._resumes.pop(group, None)

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self.counters["store_errors"] += 1
                log.warning("group %r not resumed yet: %s", group, reply)
                self.loop.call_later(RETRY_S, lambda: self._resume_due(group))
                return
            assert isinstance(reply, GroupPauseReply)
            if reply.changed:
                self._resumed(group, reply.pending_count)

        self._store.request(ResumeGroup(group, due_only=True), on_reply)

    def _resumed(self, group: str, count: int) -> None:
        self.counters["resumes"] += 1
        self._emit(GroupResumed(group, count, at_ms=self._now()))

    def _now(self) -> int:
        return int(self.loop.clock.time() * 1000)

    def _change(
        self, change: SetGroups | SetFlow, then: Callable[[Message], None] | None = None
    ) -> Deferred:
        """Apply a runtime change in the Store; answer the client once it is committed (after
        ``then`` has seen the Store's reply)."""
        request = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                request.fail(reply.code, reply.message)
                return
            self.counters["changes"] += 1
            if then is not None:
                then(reply)
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

    def on_set_rate_limit(self, message: SetRateLimit) -> Deferred:
        return self._change(SetFlow("runtime", {message.scope: message.rate}))

    def on_set_weight(self, message: SetGroupWeight) -> Deferred:
        weight = message.weight
        if weight is None:
            weight = CLEARED_WEIGHT
        elif isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise InvalidRequest(f"a group weight must be a number > 0, got {weight!r}")
        change = SetFlow("runtime", weights={check_group(message.group): weight})
        return self._change(change, self._weights_changed)

    def on_set_minimum_slots(self, message: SetGroupMinimumSlots) -> Deferred:
        return self._change(SetFlow("runtime", min_slots={check_group(message.group): message.n}))

    def on_reset_weights(self, message: ResetGroupWeights) -> Deferred:
        return self._change(SetFlow("runtime", reset_weights=True), self._weights_changed)

    def _weights_changed(self, reply: Message) -> None:
        """Publish ``group_weight_changed`` for each group whose weight the change changed (the
        Store compares the weights before and after in the change's own transaction)."""
        assert isinstance(reply, FlowReply)
        for group, previous, new in reply.weight_changes:
            self._emit(GroupWeightChanged(group, previous, new, at_ms=self._now()))

    def on_pause_group(self, message: PauseGroupRequest) -> Deferred:
        group = check_group(message.group)

        def done(reply: GroupPauseReply) -> None:
            if message.until_ms is not None:
                self._arm_resume(group, message.until_ms)
            if reply.changed:
                self.counters["pauses"] += 1
                pending, running = reply.pending_count, reply.running_count
                self._emit(GroupPaused(group, pending, running, at_ms=self._now()))

        return self._pause_change(PauseGroup(group, message.until_ms), group, done)

    def on_resume_group(self, message: ResumeGroupRequest) -> Deferred:
        group = check_group(message.group)

        def done(reply: GroupPauseReply) -> None:
            if reply.changed:
                self._resumed(group, reply.pending_count)

        return self._pause_change(ResumeGroup(group), group, done)

    def _pause_change(
        self,
        change: PauseGroup | ResumeGroup,
        group: str,
        done: Callable[[GroupPauseReply], None],
    ) -> Deferred:
        """Pause or resume in the Store; once committed, drop the group's resume timer, run
        ``done`` (a new timer, the event) and answer the client with the Store's reply."""
        request = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                request.fail(reply.code, reply.message)
                return
            assert isinstance(reply, GroupPauseReply)
            timer = self._resumes.pop(group, None)
            if timer is not None:
                timer.cancel()
            done(reply)
            request.reply(reply)

        self._store.request(change, on_reply)
        return DEFER

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
