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
from dataclasses import dataclass, field
from typing import Any

import zmq

from actors.dispatcher_state import DispatcherCore, Settings
from bus.client import Peer
from bus.errors import ErrorCode, ProtocolError, TaskmillError
from bus.kinds import (
    Cancel,
    CancelReply,
    Claim,
    ClaimNext,
    ClaimNextReply,
    Finish,
    FinishReply,
    LearnedIO,
    LearnedReply,
    ListTasks,
    Ok,
    Peek,
    Preempt,
    Release,
    ResumePaused,
    StoreChanged,
    TaskResult,
    TaskRow,
    TasksReply,
)
from bus.kinds_run import (
    AckResults,
    Admit,
    AdmitReply,
    CancelRuns,
    CancelTask,
    Event,
    GetState,
    GroupCandidate,
    HostHeartbeat,
    HostHello,
    HostWelcome,
    LimitsChanged,
    PauseAll,
    Readings,
    ReleaseGroups,
    ResumeAll,
    RunProgress,
    RunResults,
    RunTasks,
    SetMaxConcurrency,
    Shutdown,
    Start,
)
from bus.protocol import Message, decode, encode
from bus.runtime import Actor, ActorLoop, Timer
from bus.server import (
    DEFER,
    Deferred,
    Inbox,
    Request,
    RequestServer,
    current_request,
    dispatch_each,
)

log = logging.getLogger("taskmill.dispatcher")

ORPHAN_SCAN_LIMIT = 100_000
LEARN_MIN_RUNS = 5
LEARN_WINDOW = 20
"""semantics.md: a type's learned IO is the mean of its last 20 runs once it has 5."""

__all__ = ["Dispatcher", "Settings"]


@dataclass(slots=True)
class _Cycle:
    busy: bool = False
    again: bool = False
    lookahead: int = 4
    extra: dict[str, Any] = field(default_factory=dict)


class Dispatcher(Actor):
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

    # -- events ------------------------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            try:
                self._events.send_multipart(encode(event), zmq.NOBLOCK)
                self.counters["events"] += 1
            except zmq.Again:
                self.counters["events_dropped"] += 1

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

    def _store_failed(self, what: str, error: TaskmillError) -> None:
        self.counters["store_errors"] += 1
        log.warning("store %s failed: %s", what, error)

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
            limit = min(free, self.core.hosts_room())
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
        if unserved:
            self._finish(unserved)

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self, results: list[TaskResult]) -> None:
        self._pending_results.extend(results)
        if not self._finish_in_flight:
            self._flush_results()

    def _flush_results(self) -> None:
        if not self._pending_results:
            return
        batch, self._pending_results = self._pending_results, []
        self._finish_in_flight = True
        self.store.request(
            Finish(batch, self.settings.max_retries), lambda r: self._on_finished(r, batch)
        )

    def _on_finished(self, reply: Message | TaskmillError, batch: list[TaskResult]) -> None:
        self._finish_in_flight = False
        if isinstance(reply, TaskmillError):
            self._store_failed("finish", reply)
            self._pending_results[:0] = batch  # keep them: resent on the next flush
            self.loop.call_later(0.5, self._flush_results)
            return
        assert isinstance(reply, FinishReply)
        self._ack(batch)
        self._apply_transitions(reply.transitions)
        self._flush_results()
        self.wake()

    def _ack(self, results: list[TaskResult]) -> None:
        by_host: dict[bytes, list[int]] = {}
        for result in results:
            identity = self._result_hosts.pop(result.run_id, None)
            if identity is not None:
                by_host.setdefault(identity, []).append(result.run_id)
        for identity, run_ids in by_host.items():
            self._send_host(identity, AckResults(run_ids))

    def _apply_transitions(self, transitions: list[Any]) -> None:
        cancels, events = self.core.transitions(transitions)
        for identity, ids in cancels.items():
            self._send_host(identity, CancelRuns(ids))
        self._emit(events)
        self._check_drained()

    # -- hosts -------------------------------------------------------------------------------

    def _send_host(self, identity: bytes, message: Message) -> None:
        try:
            self._hosts_sock.send_multipart([identity, *encode(message)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("message to host %r dropped: %s", identity, exc)

    def _on_host_frames(self, batch: list[list[bytes]]) -> None:
        results: list[TaskResult] = []
        for frames in batch:
            identity = frames[0]
            try:
                message, _ = decode(frames[1:])
            except ProtocolError as exc:
                self.core.malformed += 1
                log.debug("malformed host message dropped: %s", exc)
                continue
            now = self.loop.clock.monotonic()
            if isinstance(message, HostHello):
                self.core.hosts.hello(
                    identity, message.host_id, message.task_types, message.capacity, now
                )
                self._send_host(identity, HostWelcome(self.settings.dispatcher_id))
                self._adopt(identity, message.running, message.run_ids)
                self.wake()
            elif isinstance(message, HostHeartbeat):
                known = self.core.hosts.seen(identity, now)
                self._send_host(identity, HostWelcome(self.settings.dispatcher_id, known))
            elif isinstance(message, RunResults):
                self.core.hosts.seen(identity, now)
                for r in message.results:
                    if r.id not in self.core.interrupted:
                        results.append(r)
                        self._result_hosts[r.run_id] = identity
            elif isinstance(message, RunProgress):
                self._emit(self.core.progress(message.items))
            else:
                self.core.malformed += 1
        if results:
            self.counters["results"] += len(results)
            apply = self.core.finished(results)
            for result in results:
                if result not in apply:  # stale: never applied, but the host may forget it
                    self._send_host(identity, AckResults([result.run_id]))
            self.counters["stale_results"] += len(results) - len(apply)
            if apply:
                self._finish(apply)
            self.wake()

    # -- recovery: runs the Dispatcher does not know (it restarted, or a claim reply was lost) --

    def _adopt(self, identity: bytes, running: list[int], run_ids: list[int]) -> None:
        """A host says it runs these: take the ones the Store has running as this Dispatcher's
        own; cancel the others on the host (finished, cancelled or given to another host)."""
        pairs = {t: r for t, r in zip(running, run_ids, strict=False) if t not in self.core.running}
        if not pairs:
            return

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self._store_failed("adopt", reply)
                return
            assert isinstance(reply, TasksReply)
            rows = {row.id: row for row in reply.tasks}
            stale = self.core.adopt(identity, pairs, rows)
            if stale:
                self._send_host(identity, CancelRuns(stale))

        self.store.request(ListTasks("running", ORPHAN_SCAN_LIMIT), on_reply)

    def _reconcile(self) -> None:
        """Release ``running`` rows that no host has reported for a while: their claim reply was
        lost, or a previous Dispatcher claimed them and no live host runs them."""
        if self.core.stopping:
            return  # tasks interrupted by the shutdown stay running, for recovery at restart

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self._store_failed("reconcile", reply)
                return
            assert isinstance(reply, TasksReply)
            orphans = self.core.orphans(reply.tasks, self.settings.orphan_grace_s)
            if orphans:
                log.warning("releasing %d running task(s) no host reports", len(orphans))
                self.store.request(
                    Release(
                        orphans, "orphaned run: no executor host reported it", count_retry=False
                    ),
                    self._on_released,
                )

        self.store.request(ListTasks("running", ORPHAN_SCAN_LIMIT), on_reply)

    def _learn(self) -> None:
        """Refresh the learned IO per task type (mean actual bytes of recent runs)."""

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self._store_failed("learned io", reply)
                return
            assert isinstance(reply, LearnedReply)
            self.core.learned_io = {t: list(v) for t, v in reply.by_type.items()}

        self.store.request(LearnedIO([], LEARN_MIN_RUNS, LEARN_WINDOW), on_reply)

    def _check_hosts(self) -> None:
        lost = self.core.hosts.lost(self.loop.clock.monotonic())
        for host in lost:
            ids = self.core.lose_host(host)
            log.warning("executor host %s lost with %d running task(s)", host.host_id, len(ids))
            if ids:
                self.store.request(Release(ids), lambda r: self._on_released(r))

    def _on_released(self, reply: Message | TaskmillError) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("release", reply)
            return
        assert isinstance(reply, FinishReply)
        self._apply_transitions(reply.transitions)
        self.wake()

    # -- preemption --------------------------------------------------------------------------

    def _on_notifications(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, StoreChanged):
                victims = self.core.victims_for(message.min_priority)
                if victims:
                    self._preempt(victims, self.wake)
            elif isinstance(message, Readings):
                self.core.set_readings(message)
            elif isinstance(message, LimitsChanged):
                self.core.saturated = set(message.saturated)
        self.wake()

    def _preempt(self, ids: list[int], then: Callable[[], None]) -> None:
        for identity, host_ids in self.core.detach(ids).items():
            self._send_host(identity, CancelRuns(host_ids))
        self.counters["preempted"] += len(ids)

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self._store_failed("preempt", reply)
            else:
                assert isinstance(reply, TasksReply)
                self._emit(self.core.preempted(reply.tasks))
            self._check_drained()
            then()

        self.store.request(Preempt(ids), on_reply)

    # -- controls ----------------------------------------------------------------------------

    def _pause_all(self, message: PauseAll) -> Message | Deferred:
        request = current_request()
        self.core.paused = True
        victims = list(self.core.running)

        def done() -> None:
            self._emit([self.core.scheduler_event("paused")])
            request.reply(Ok())

        if victims:
            self._preempt(victims, done)
        else:
            done()
        return DEFER

    def _start(self, message: Start) -> Message:
        self.core.started = True
        self.wake()
        return Ok()

    def _resume_all(self, message: ResumeAll) -> Message:
        self.core.paused = False
        self.core.maybe_paused = True
        self._emit([self.core.scheduler_event("resumed")])
        self.wake()
        return Ok()

    def _set_max_concurrency(self, message: SetMaxConcurrency) -> Message:
        if message.n < 0:
            raise TaskmillError("max_concurrency must be >= 0", ErrorCode.INVALID)
        self.core.max_concurrency = message.n
        self.wake()
        return Ok()

    def _cancel(self, message: CancelTask) -> Message | Deferred:
        request = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                request.fail(reply.code, reply.message)
                return
            assert isinstance(reply, CancelReply)
            self._apply_transitions(reply.transitions)
            request.reply(Ok(bool(reply.transitions)))
            self.wake()

        self.store.request(Cancel(message.id), on_reply)
        return DEFER

    def _shutdown(self, message: Shutdown) -> Message | Deferred:
        self.core.stopping = True
        self._shutdown_waiters.append(current_request())
        if message.drain_s > 0 and self.core.running:
            if self._drain_timer is None:
                self._drain_timer = self.loop.call_later(message.drain_s, self._cancel_all)
        else:
            self._cancel_all()
        return DEFER

    def _cancel_all(self) -> None:
        # Tasks interrupted by shutdown stay `running` in the database and are recovered on the
        # next start, so whatever their executors report from now on is not applied.
        interrupted = list(self.core.running)
        self.core.interrupted.update(interrupted)
        for identity, ids in self.core.detach(interrupted).items():
            self._send_host(identity, CancelRuns(ids))
        self._check_drained()

    def _check_drained(self) -> None:
        if self.core.stopping and not self.core.running and self._shutdown_waiters:
            if self._drain_timer is not None:
                self._drain_timer.cancel()
                self._drain_timer = None
            waiters, self._shutdown_waiters = self._shutdown_waiters, []
            for request in waiters:
                request.reply(Ok())
