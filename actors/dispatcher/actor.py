"""The Dispatcher actor: turns the queue into work on executor hosts.

Owns: the set of running tasks (which host runs each, its latest progress), the hosts table,
max_concurrency, the paused flag, and the dispatch cycle of semantics.md "Dispatch".

Sockets:
* ROUTER ``control_endpoint`` (bound) — client controls: ``dispatcher.*`` kinds.
* ROUTER ``hosts_endpoint`` (bound) — executor hosts: ``host.hello``/``host.heartbeat``/
  ``host.results``/``host.progress`` in; ``host.welcome``/``host.run``/``host.cancel`` out.
* DEALER to the Store (``Peer``) — peek, claim, finish, preempt, resume, cancel, release.
* DEALER to the GroupLimiter (``Peer``) — the group step of the gate (``limiter.admit``) and
  ``limiter.release`` when grouped tasks stop running; SUB to its ``limiter.changed``.
* SUB to the Store's notifications — ``store.changed`` wakes a cycle and may preempt.
* PUSH to the EventPublisher — every task lifecycle event, sent only after the Store committed.

Timers: the poll interval (a cycle), the host liveness check (every heartbeat interval), the
graceful-shutdown drain deadline.

The cycle is a chain of requests, never a blocking wait: resume paused → peek → local gate →
GroupLimiter (only when a candidate has a group) → claim → send to hosts; at most one cycle is
in flight, a wake during it runs one more after it. Finishing work is pipelined the same way:
results from hosts go to the Store in batches, and the events for them are published from the
Store's reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq

from actors.dispatcher.base import DispatcherBase
from actors.dispatcher.controls import ControlsMixin
from actors.dispatcher.results import ResultsMixin
from actors.dispatcher.state import Settings
from bus.client import Peer
from bus.errors import TaskmillError
from bus.kinds import (
    Claim,
    ClaimNext,
    ClaimNextReply,
    Peek,
    Release,
    ResumePaused,
    TaskResult,
    TaskRow,
    TasksReply,
)
from bus.kinds_run import (
    Admit,
    AdmitReply,
    CancelTask,
    Event,
    GetState,
    GroupCandidate,
    PauseAll,
    ReleaseGroups,
    ResumeAll,
    RunTasks,
    SetMaxConcurrency,
    Shutdown,
    Start,
)
from bus.protocol import Message
from bus.runtime import ActorLoop
from bus.server import (
    Deferred,
    Inbox,
    RequestServer,
    dispatch_each,
)

log = logging.getLogger("taskmill.dispatcher")

__all__ = ["Dispatcher", "Settings"]


class Dispatcher(ResultsMixin, ControlsMixin, DispatcherBase):
    """The Dispatcher actor (see the module docstring)."""

    # -- setup -------------------------------------------------------------------------------

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        self.loop = loop
        self.core.clock = loop.clock
        control = loop.socket(zmq.ROUTER)
        loop.bind(control, s.control_endpoint)
        handlers: dict[type[Message], Callable[[Any], Message | Deferred]] = {
            Start: self._start,
            PauseAll: self._pause_all,
            ResumeAll: self._resume_all,
            SetMaxConcurrency: self._set_max_concurrency,
            CancelTask: self._cancel,
            GetState: lambda m: self.core.state(),
            Shutdown: self._shutdown,
        }
        RequestServer(loop, control, self, dispatch_each(handlers, self.name))
        self._hosts_sock = loop.socket(zmq.ROUTER)
        self._hosts_sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        loop.bind(self._hosts_sock, s.hosts_endpoint)
        loop.add_reader(self._hosts_sock, self._on_host_frames)
        notify = loop.socket(zmq.SUB)
        notify.setsockopt(zmq.SUBSCRIBE, b"")
        loop.connect(notify, s.store_notify_endpoint)
        Inbox(loop, notify, self._on_notifications)
        if s.readings_endpoint:
            readings = loop.socket(zmq.SUB)
            readings.setsockopt(zmq.SUBSCRIBE, b"")
            loop.connect(readings, s.readings_endpoint)
            Inbox(loop, readings, self._on_notifications)
        self._events = loop.socket(zmq.PUSH, hwm=s.event_queue)
        loop.connect(self._events, s.events_endpoint)
        self.store = Peer(loop, s.store_endpoint, timeout=s.store_timeout)
        self.limiter: Peer | None = None
        if s.limiter_endpoint:
            self.limiter = Peer(loop, s.limiter_endpoint, timeout=s.store_timeout)
        if s.limiter_notify_endpoint:
            changes = loop.socket(zmq.SUB)
            changes.setsockopt(zmq.SUBSCRIBE, b"")
            loop.connect(changes, s.limiter_notify_endpoint)
            Inbox(loop, changes, self._on_notifications)
        loop.call_every(s.poll_interval, self.wake)
        loop.call_every(s.heartbeat_s, self._check_hosts)
        loop.call_every(s.orphan_grace_s, self._reconcile)
        if s.monitoring:
            loop.call_later(0, self._learn)
            loop.call_every(s.learn_interval_s, self._learn)
        loop.call_later(0, self.wake)

    def stats(self) -> dict[str, Any]:
        return {**self.counters, **self.core.stats()}

    # -- the cycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        self._flush_releases()
        if not self.core.may_dispatch():
            return
        if self._cycle.busy:
            self._cycle.again = True
            return
        self._cycle.busy = True
        self._cycle.again = False
        self.counters["cycles"] += 1
        if self.core.maybe_paused:
            generation = self.core.urgent_generation
            self.store.request(
                ResumePaused(self.settings.preempt_priority),
                lambda reply: self._on_resumed(reply, generation),
            )
        else:
            self._peek()

    def _end_cycle(self) -> None:
        self._cycle.busy = False
        self.core.doomed.clear()  # its claims are in: nothing named is still on its way
        if self._cycle.again:
            self.wake()

    def _flush_releases(self) -> None:
        if not self.core.releases:
            return
        ids, self.core.releases = self.core.releases, []
        if self.limiter is not None:
            self.limiter.request(ReleaseGroups(ids), self._on_released_groups)

    def _on_released_groups(self, reply: Message | TaskmillError) -> None:
        if isinstance(reply, TaskmillError):
            log.warning("group limiter did not take a release: %s", reply)

    def _on_resumed(self, reply: Message | TaskmillError, generation: int) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("resume", reply)
            self._end_cycle()
            return
        assert isinstance(reply, TasksReply)
        self.core.resumed(reply.tasks, generation)
        self._peek()

    def _peek(self) -> None:
        free = self.core.free_slots()
        if free <= 0 or not self.core.may_dispatch() or not self.core.hosts.has_room():
            self._end_cycle()
            return
        max_priority = self.core.open_gate_max_priority()
        if self._fast and max_priority is not None:
            # The gate is open but for the throttle: peek and claim in one Store request.
            if max_priority < 0:
                self._end_cycle()
                return
            limit = min(free, self.core.hosts.room())
            self.store.request(
                ClaimNext(limit, max_priority, sorted(self.core.saturated), self.core.now_ms()),
                lambda reply: self._on_claim_next(reply, limit),
            )
            return
        limit = free + self._cycle.lookahead
        self.store.request(
            Peek(limit, sorted(self.core.saturated)),
            lambda reply: self._on_peek(reply, limit),
        )

    def _on_claim_next(self, reply: Message | TaskmillError, limit: int) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("claim next", reply)
            self._end_cycle()
            return
        assert isinstance(reply, ClaimNextReply)
        if not self.core.may_dispatch():  # paused or stopping while the claim was on its way
            self._give_back([row.id for row in reply.tasks])
            self._end_cycle()
            return
        if reply.held_by_group:
            self._fast = False  # grouped work is queued: the GroupLimiter must see it
        self._dispatch_claimed(*self.core.claimed_next(reply.tasks))
        if reply.held_by_group or (len(reply.tasks) == limit and self.core.free_slots() > 0):
            self._peek()
        else:
            self._end_cycle()

    def _on_peek(self, reply: Message | TaskmillError, limit: int) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("peek", reply)
            self._end_cycle()
            return
        assert isinstance(reply, TasksReply)
        self._fast = not any(t.group_key is not None for t in reply.tasks)
        ids = self.core.admit(reply.tasks)
        more = len(reply.tasks) >= limit
        grouped = self.core.grouped_candidates(ids)
        if grouped and self.limiter is not None:
            candidates = [GroupCandidate(i, g) for i, g in grouped]
            self.limiter.request(
                Admit(candidates), lambda r: self._on_admitted(r, ids, grouped, more)
            )
        else:
            self._claim(ids, more)

    def _on_admitted(
        self,
        reply: Message | TaskmillError,
        ids: list[int],
        grouped: list[tuple[int, str]],
        more: bool,
    ) -> None:
        """The group step of the gate: drop the candidates whose group is full."""
        if isinstance(reply, TaskmillError):
            log.warning("group limiter unavailable, grouped tasks held: %s", reply)
            admitted: set[int] = set()
            saturated = self.core.saturated
        else:
            assert isinstance(reply, AdmitReply)
            admitted = set(reply.admitted)
            saturated = set(reply.saturated)
        refused = [i for i, _ in grouped if i not in admitted]
        self.core.drop_tentative(refused)
        changed = saturated != self.core.saturated
        self.core.saturated = saturated
        final = [i for i in ids if i not in refused]
        if final:
            self._claim(final, more or bool(refused))
        elif refused and changed:
            self._peek()  # skip the groups found full and look further down the queue
        else:
            self._end_cycle()

    def _claim(self, ids: list[int], more: bool) -> None:
        if not ids:
            self._end_cycle()
            return
        self.store.request(
            Claim(ids, self.core.now_ms()), lambda r: self._on_claim(r, len(ids), more)
        )

    def _on_claim(self, reply: Message | TaskmillError, asked: int, more: bool) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("claim", reply)
            self.core.forget_tentative()
            self._end_cycle()
            return
        assert isinstance(reply, TasksReply)
        if not self.core.may_dispatch():  # paused or stopping while the claim was on its way
            self.core.forget_tentative()
            self._give_back([row.id for row in reply.tasks])
            self._end_cycle()
            return
        self._dispatch_claimed(*self.core.claimed(reply.tasks))
        if self.core.free_slots() > 0 and (more or len(reply.tasks) < asked):
            self._peek()
        else:
            self._end_cycle()

    def _dispatch_claimed(
        self,
        runs: dict[bytes, list[tuple[TaskRow, int]]],
        unserved: list[TaskResult],
        events: list[Event],
    ) -> None:
        self._flush_releases()
        for identity, placed in runs.items():
            self._send_host(identity, RunTasks([r for r, _ in placed], [i for _, i in placed]))
        self.counters["dispatched"] += sum(len(r) for r in runs.values())
        self._emit(events)
        late = self.core.claimed_victims(runs)
        if late:  # claimed in the batch of a preempting submission that named them
            self._preempt(late, self.wake)
        if unserved:
            self._finish(unserved)
        if self.core.returned:
            self._give_back(self.core.returned)

    def _give_back(self, ids: list[int]) -> None:
        """Claimed rows that will not run now go back to pending, no attempt counted."""
        self._flush_releases()
        if ids:
            self.store.request(
                Release(ids, "claimed but not dispatched", count_retry=False), self._on_released
            )
