"""What the Dispatcher's parts share: its state, its sockets, and the few helpers every part
uses. The Dispatcher is one actor; its handlers are split by concern over ``dispatcher.py`` (setup
and the dispatch cycle), ``dispatcher_results.py`` (work coming back from hosts, recovery) and
``dispatcher_controls.py`` (preemption and the client controls), each a mixin of this base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import zmq

from actors.dispatcher.state import DispatcherCore, Settings
from bus.client import Peer
from bus.errors import TaskmillError
from bus.kinds import (
    TaskResult,
)
from bus.kinds_run import (
    Event,
    EventBatch,
)
from bus.protocol import MAX_FRAME_BYTES, Message, encode, send_frames
from bus.runtime import Actor, ActorLoop, Timer
from bus.server import (
    MalformedLog,
    Request,
)

log = logging.getLogger("taskmill.dispatcher")


class StoreTrouble:
    """Failed Store requests, told once per episode: a WARNING at the first failure, DEBUG for
    the next ones, an INFO when a request succeeds again (or a failure long after the last one
    starts a new episode). A full disk fails every commit until room is made: a line per retry
    would fill the log too. ``failed`` also says how long to wait before a retry: doubling from
    ``first_delay_s`` to ``max_delay_s``, so a retry comes soon after the Store can commit again
    without asking it many times a second meanwhile."""

    def __init__(
        self, first_delay_s: float = 0.25, max_delay_s: float = 4.0, quiet_s: float = 60.0
    ) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.quiet_s = quiet_s
        self.failures = 0
        """Failures in the current episode (0: none)."""
        self._last_at = float("-inf")

    def failed(self, what: str, error: TaskmillError, now: float) -> float:
        """Account for a failed request; the delay before retrying it."""
        if self.failures and now - self._last_at > self.quiet_s:
            self.failures = 0  # long quiet: the Store recovered meanwhile, unnoticed
        self._last_at = now
        self.failures += 1
        if self.failures == 1:
            log.warning("store %s failed: %s (retrying; quiet until it succeeds)", what, error)
        else:
            log.debug("store %s failed again (%d): %s", what, self.failures, error)
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(self.failures - 1, 32))

    def succeeded(self) -> None:
        """A Store request succeeded: the episode, if any, is over."""
        if self.failures:
            log.info("store requests succeed again after %d failure(s)", self.failures)
            self.failures = 0


@dataclass(slots=True)
class _Cycle:
    busy: bool = False
    again: bool = False
    lookahead: int = 4


class DispatcherBase(Actor):
    """State and shared helpers; the mixins and ``Dispatcher`` add the handlers."""

    name = "dispatcher"
    loop: ActorLoop
    store: Peer
    limiter: Peer | None
    _hosts_sock: zmq.Socket[Any]
    _events: zmq.Socket[Any]

    name = "dispatcher"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = DispatcherCore(settings)
        self._cycle = _Cycle()
        self._fast = True
        """Claim without a peek while no grouped task was seen at the head of the queue."""
        self._shutdown_waiters: list[Request] = []
        self._drain_timer: Timer | None = None
        self._pending_results: list[TaskResult] = []
        self._result_hosts: dict[int, bytes] = {}
        """Run id → the host that reported it, until its result is committed and acknowledged."""
        self._finish_in_flight = False
        self._host_malformed = MalformedLog("dispatcher hosts")
        self._store_trouble = StoreTrouble()
        self.counters = {
            "cycles": 0,
            "dispatched": 0,
            "results": 0,
            "events": 0,
            "events_dropped": 0,
            "store_errors": 0,
            "preempted": 0,
            "stale_results": 0,
        }

    # -- events ------------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        """Push events to the EventPublisher: one message for all of them (one each when that
        message would be too large for a frame: events with very large fields)."""
        if not events:
            return
        batch = encode(EventBatch(events)) if len(events) > 1 else []
        if batch and len(batch[3]) <= MAX_FRAME_BYTES // 4:
            messages = [batch]
        else:
            messages = [encode(event) for event in events]
        for frames in messages:
            try:
                send_frames(self._events, frames)
                self.counters["events"] += len(events) if frames is batch else 1
            except zmq.Again:
                self.counters["events_dropped"] += len(events) if frames is batch else 1

    def _store_failed(self, what: str, error: TaskmillError) -> float:
        """Count and tell a failed Store request (``StoreTrouble``); the delay before a retry."""
        self.counters["store_errors"] += 1
        return self._store_trouble.failed(what, error, self.loop.clock.monotonic())

    def _send_host(self, identity: bytes, message: Message) -> None:
        try:
            send_frames(self._hosts_sock, [identity, *encode(message)])
        except zmq.ZMQError as exc:
            log.warning("message to host %r dropped: %s", identity, exc)

    # -- implemented by the parts ------------------------------------------------------------

    def wake(self) -> None:
        raise NotImplementedError

    def _check_drained(self) -> None:
        raise NotImplementedError

    def _apply_transitions(self, transitions: list[Any]) -> None:
        raise NotImplementedError

    def _finish(self, results: list[TaskResult]) -> None:
        raise NotImplementedError

    def _flush_releases(self) -> None:
        raise NotImplementedError

    def _on_released(self, reply: Message | TaskmillError) -> None:
        raise NotImplementedError
