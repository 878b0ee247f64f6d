"""The Dispatcher actor: turns the queue into work on executor hosts.

Owns: the set of running tasks (which host runs each, its latest progress), the hosts table,
max_concurrency, the paused flag, the resource readings the gate uses, and the dispatch cycle.
Its decisions are pure parts beside it: ``state`` (running tasks, placement, events), ``gate``
(the IO budget), ``hosts`` and ``recovery``; this module only moves messages in and out.

Sockets:
* ROUTER ``control_endpoint`` (bound) — client controls: ``dispatcher.*`` kinds.
* ROUTER ``hosts_endpoint`` (bound) — executor hosts: ``host.hello``/``host.heartbeat``/
  ``host.results``/``host.progress`` in; ``host.welcome``/``host.run``/``host.cancel`` out.
* DEALER to the Store (``Peer``) — claim, finish (with the next claim), preempt, cancel,
  release; and, on the same ordered pipe, the Store's one-way ``store.changed``: a change notice
  can never overtake the reply of a claim made before it, or fall behind one made after it.
* SUB to the ResourceMonitor's readings.
* PUSH to the EventPublisher — every task lifecycle event, sent only after the Store committed.

The cycle: one claim in flight at a time. The Store applies priority order, group limits, the
throttle floor and the preemption rule in the claim's own transaction, so a claim is one
request (two, peek then claim, when an IO budget must look at each candidate). Results go back
with the next claim in one ``store.finish``. The Dispatcher asks only when something may have
changed (``_dirty``): a notice, a finish, a control, a host, lower pressure; a claim that comes
back ``exhausted`` clears it. Idle, it sends nothing but a safety claim once a second, which also
tells a restarted Store where to send its notices.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from actors.dispatcher.recovery import adopt, orphans
from actors.dispatcher.state import DispatcherCore, Settings
from actors.dispatcher.trouble import StoreTrouble
from bus.client import Peer
from bus.errors import ErrorCode, ProtocolError, TaskmillError
from bus.events import EventBatch, Paused, Resumed, SchedulerEvent
from bus.kinds import (
    Cancel,
    CancelReply,
    CancelWhere,
    Claim,
    ClaimNext,
    ClaimNextReply,
    ClaimSpec,
    Expire,
    Finish,
    FinishReply,
    LearnedIO,
    LearnedReply,
    ListTasks,
    Ok,
    Peek,
    Preempt,
    Release,
    StoreChanged,
    TaskResult,
    TaskRow,
    TasksReply,
    Transition,
)
from bus.kinds_run import (
    AckResults,
    CancelRuns,
    CancelTask,
    CancelTasks,
    GetHosts,
    GetState,
    HostHeartbeat,
    HostHello,
    HostWelcome,
    PauseAll,
    Readings,
    ResumeAll,
    RunProgress,
    RunResults,
    RunTasks,
    SetMaxConcurrency,
    Shutdown,
    Start,
)
from bus.protocol import MAX_FRAME_BYTES, Message, decode, encode, send_frames
from bus.runtime import Actor, ActorLoop, Timer
from bus.server import (
    DEFER,
    Deferred,
    Inbox,
    MalformedLog,
    Request,
    RequestServer,
    current_request,
    dispatch_each,
)

log = logging.getLogger("taskmill.dispatcher")

__all__ = ["Dispatcher", "Settings"]

SAFETY_TICK_S = 1.0
"""Idle, the Dispatcher claims once this often even with nothing announced: a notice lost with a
restarted Store is found, and the Store learns where to send the next ones."""
LOOKAHEAD = 4
"""Candidates a peek asks for beyond the free slots, for the IO budget to choose among."""
ORPHAN_SCAN_LIMIT = 100_000
LEARN_MIN_RUNS = 5
LEARN_WINDOW = 20
"""A type's learned IO is the mean of its last 20 runs once it has 5."""

_REQUEUING = frozenset({"retry", "requeued", "finalize", "unblocked", "recurring"})
"""Transitions that put a task (back) in the queue (``recurring``: a next instance, maybe due
at once)."""

Results = tuple[dict[bytes, list[tuple[TaskRow, int]]], list[TaskResult], list[SchedulerEvent]]


class Dispatcher(Actor):
    """The Dispatcher actor (see the module docstring)."""

    name = "dispatcher"
    loop: ActorLoop
    store: Peer
    _hosts_sock: zmq.Socket[Any]
    _events: zmq.Socket[Any]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = DispatcherCore(settings)
        self._busy = False
        """A claim (alone, or riding on a finish) is in flight."""
        self._again = False
        """Something changed while it was: look again when it is back."""
        self._dirty = True
        """Something claimable may be there: the last claim was not exhausted, or a change came
        after it."""
        self._store_heard = 0.0
        self._armed = 0
        """Slots the Store's standing claim may still fill (the rest of the last claim, when it
        found nothing more): it claims arriving work at once and sends it with the notice."""
        self._pushes_seen = 0
        """The ``push`` of the latest ``store.changed`` with rows handled (``ClaimSpec``)."""
        self._armed_floor = 255
        self._alarm_at: int | None = None
        self._alarm_timer: Timer | None = None
        self._results: list[TaskResult] = []
        """Results read from hosts in the batch of frames being handled."""
        self._shutdown_waiters: list[Request] = []
        self._drain_timer: Timer | None = None
        self._pending_results: list[TaskResult] = []
        self._result_hosts: dict[int, bytes] = {}
        """Run id → the host that reported it, until its result is committed and acknowledged."""
        self._finish_in_flight = False
        self._store_trouble = StoreTrouble()
        self._retry_after = 0.0
        """How long to wait before resending what the last failed Store request carried."""
        self._host_malformed = MalformedLog("dispatcher hosts")
        self.counters = {
            "cycles": 0,
            "claims": 0,
            "dispatched": 0,
            "results": 0,
            "events": 0,
            "events_dropped": 0,
            "store_errors": 0,
            "preempted": 0,
            "stale_results": 0,
            "notices": 0,
            "pushed": 0,
            "alarms": 0,
        }

    # -- setup -------------------------------------------------------------------------------

    def setup(self, loop: ActorLoop) -> None:
        s = self.settings
        self.loop = loop
        self.core.clock = loop.clock
        control = loop.socket(zmq.ROUTER)
        loop.bind(control, s.control_endpoint)
        controls: dict[type[Message], Callable[[Any], Message | Deferred]] = {
            Start: self._start,
            PauseAll: self._pause_all,
            ResumeAll: self._resume_all,
            SetMaxConcurrency: self._set_max_concurrency,
            CancelTask: self._cancel,
            CancelTasks: self._cancel_where,
            GetState: lambda m: self.core.state(),
            GetHosts: lambda m: self.core.host_list(self.loop.clock.monotonic()),
            Shutdown: self._shutdown,
        }
        RequestServer(loop, control, self, dispatch_each(controls, self.name))
        self._hosts_sock = loop.socket(zmq.ROUTER)
        self._hosts_sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        loop.bind(self._hosts_sock, s.hosts_endpoint)
        loop.add_reader(self._hosts_sock, self._on_host_frames)
        self._from_hosts: dict[type[Message], Callable[[bytes, Any], None]] = {
            HostHello: self._on_hello,
            HostHeartbeat: self._on_heartbeat,
            RunResults: self._on_results,
            RunProgress: lambda identity, m: self._emit(self.core.progress(m.items)),
        }
        if s.readings_endpoint:
            readings = loop.socket(zmq.SUB)
            readings.setsockopt(zmq.SUBSCRIBE, b"")
            loop.connect(readings, s.readings_endpoint)
            Inbox(loop, readings, self._on_readings)
        self._events = loop.socket(zmq.PUSH, hwm=s.event_queue)
        loop.connect(self._events, s.events_endpoint)
        self.store = Peer(loop, s.store_endpoint, timeout=s.store_timeout, on_notice=self._notice)
        loop.call_every(s.poll_interval, self._tick)
        loop.call_every(s.heartbeat_s, self._check_hosts)
        loop.call_every(s.orphan_grace_s, self._reconcile)
        if s.expiry_sweep_s is not None:
            loop.call_every(s.expiry_sweep_s, self._sweep)
        if s.monitoring:
            loop.call_later(0, self._learn)
            loop.call_every(s.learn_interval_s, self._learn)
        loop.call_later(0, self.wake)

    def stats(self) -> dict[str, Any]:
        return {**self.counters, **self.core.stats()}

    # -- the cycle ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Something may have become claimable: look (now, or when the claim in flight is back)."""
        self._dirty = True
        self._run()

    def _run(self) -> None:
        if self._busy:
            self._again = True
            return
        spec = self._claim_spec()
        if spec is None:
            return
        self._busy = True
        self._again = False
        self.counters["cycles"] += 1
        self.counters["claims"] += 1
        if self.core.needs_gate():
            peek = ClaimSpec(spec.limit + LOOKAHEAD, spec.max_priority, spec.preempt_priority)
            self.store.request(Peek(peek), lambda reply: self._on_peek(reply, spec.limit))
        else:
            self.store.request(ClaimNext(spec), lambda reply: self._on_claim(reply, spec))

    def _claim_spec(self, force: bool = False) -> ClaimSpec | None:
        """What to claim now, or None when a claim could take nothing or nothing changed."""
        if not (self._dirty or force) or not self.core.may_dispatch():
            return None
        limit = min(self.core.free_slots(), self.core.hosts.room())
        max_priority = self.core.throttle_floor()
        if limit <= 0 or max_priority < 0:
            return None
        # No time of its own (now_ms 0): a claim's rows start when the Store runs the claim, which
        # may be later than now when the Store is busy, and history's start times say so.
        return ClaimSpec(
            limit, max_priority, self.settings.preempt_priority, pushes_seen=self._pushes_seen
        )

    def _claimed(self, spec: ClaimSpec, taken: int, exhausted: bool) -> None:
        """What the Store keeps standing after a claim (``store.claim_next``'s rule)."""
        self._armed = spec.limit - taken if exhausted and taken < spec.limit else 0
        self._armed_floor = spec.max_priority

    def _disarm_if_stale(self) -> None:
        """The standing claim may take what must not start now (paused, fewer slots, higher
        pressure): replace it with the claim that fits now (or none)."""
        if self._armed <= 0 or self._busy:
            return
        spec = self._claim_spec(force=True)
        if (
            spec is not None
            and spec.limit >= self._armed
            and spec.max_priority >= self._armed_floor
        ):
            return
        self._busy = True
        self._again = False
        spec = spec or ClaimSpec(0)
        self.store.request(ClaimNext(spec), lambda reply: self._on_claim(reply, spec))

    def _end_cycle(self, exhausted: bool) -> None:
        self._busy = False
        if self._armed and not self.core.may_dispatch():
            self._disarm_if_stale()  # paused or stopping while the claim was on its way
            return
        if exhausted and not self._again:
            self._dirty = False
        self._run()

    def _heard(self, reply: Message | TaskmillError, what: str = "request") -> bool:
        """Note a reply from the Store; False (told once per episode) when it is an error."""
        if isinstance(reply, TaskmillError):
            self.counters["store_errors"] += 1
            self._retry_after = self._store_trouble.failed(what, reply, self.loop.clock.monotonic())
            return False
        self._store_heard = self.loop.clock.monotonic()
        if what == "finish":  # what needs to commit succeeds again (a read may work all along)
            self._store_trouble.succeeded()
        return True

    def _on_claim(self, reply: Message | TaskmillError, spec: ClaimSpec) -> None:
        if not self._heard(reply):
            self._armed = 0  # not known: the safety claim sets it again
            self._end_cycle(False)
            return
        assert isinstance(reply, ClaimNextReply)
        self._claimed(spec, len(reply.tasks), reply.exhausted)
        self._alarm(reply.next_due_ms)
        if reply.transitions:
            self._apply_transitions(reply.transitions)  # tasks the claim found expired
        self._place(
            self.core.claimed_next(reply.tasks) if self.core.may_dispatch() else None, reply.tasks
        )
        self._end_cycle(reply.exhausted or len(reply.tasks) < spec.limit)

    def _on_peek(self, reply: Message | TaskmillError, free: int) -> None:
        if not self._heard(reply):
            self._end_cycle(False)
            return
        assert isinstance(reply, TasksReply)
        self._alarm(reply.next_due_ms)
        ids = self.core.admit(reply.tasks)
        if not ids:
            # Held by the IO budget (or nothing there): a finish or new readings look again.
            self._end_cycle(True)
            return
        exhausted = len(reply.tasks) < free + LOOKAHEAD

        def on_claimed(claimed: Message | TaskmillError) -> None:
            if not self._heard(claimed):
                self.core.forget_tentative()
                self._end_cycle(False)
                return
            assert isinstance(claimed, TasksReply)
            placed = self.core.claimed(claimed.tasks) if self.core.may_dispatch() else None
            self._place(placed, claimed.tasks)
            self._end_cycle(exhausted and len(ids) == len(reply.tasks))

        self.store.request(Claim(ids), on_claimed)

    def _place(self, placed: Results | None, rows: list[TaskRow]) -> None:
        """Send claimed rows to their hosts; give back what will not run now (paused or
        stopping while the claim was on its way, or a host gone full)."""
        if placed is None:
            self.core.forget_tentative()
            self._give_back([row.id for row in rows])
            return
        runs, unserved, events = placed
        for identity, pairs in runs.items():
            self._send_host(identity, RunTasks([r for r, _ in pairs], [i for _, i in pairs]))
        self.counters["dispatched"] += sum(len(r) for r in runs.values())
        self._emit(events)
        if unserved:
            self._finish(unserved)
        if self.core.returned:
            self._give_back(self.core.returned)

    def _give_back(self, ids: list[int]) -> None:
        """Claimed rows that will not run now go back to pending, no attempt counted."""
        if ids:
            self.store.request(
                Release(ids, "claimed but not dispatched", count_retry=False), self._on_released
            )

    def _tick(self) -> None:
        if not self._dirty and self.loop.clock.monotonic() - self._store_heard >= SAFETY_TICK_S:
            self._dirty = True
        self._run()

    # -- what the Store and the monitor tell -------------------------------------------------

    def _notice(self, message: Message) -> None:
        """A one-way message on the Store pipe: ``store.changed`` (it follows every reply to a
        claim the Store ran before the change, so the running set here is current)."""
        if not isinstance(message, StoreChanged):
            self.core.malformed += 1
            return
        self.counters["notices"] += 1
        if message.transitions:
            # Tasks the standing claim found expired; tasks a submission superseded.
            self._apply_transitions(message.transitions)
        if message.claimed:  # the standing claim took them as the change committed
            # Cut short (not exhausted), nothing stands any more: this wakes a claim.
            self._armed = max(0, self._armed - len(message.claimed)) if message.exhausted else 0
            self._pushes_seen = max(self._pushes_seen, message.push)
            self.counters["pushed"] += len(message.claimed)
            placed = self.core.claimed_next(message.claimed) if self.core.may_dispatch() else None
            self._place(placed, message.claimed)
        self._alarm(message.next_due_ms)
        victims = self.core.victims_for(message.min_priority)
        if victims:
            self._preempt(victims, self.wake)
        if not message.standing or not message.exhausted:
            self.wake()

    def _alarm(self, due_ms: int | None) -> None:
        """Wake when the earliest task scheduled for later is due (sleeping until then, never
        polling for it)."""
        if due_ms is None or (self._alarm_at is not None and self._alarm_at <= due_ms):
            return
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
        self._alarm_at = due_ms
        # From the clock's own reading, not whole milliseconds: a reading rounded down would
        # ring up to a millisecond late.
        delay = max(0.0, due_ms / 1000 - self.core.clock.time())
        self._alarm_timer = self.loop.call_later(delay, self._ring)

    def _ring(self) -> None:
        self._alarm_at = self._alarm_timer = None
        self.counters["alarms"] += 1
        self.wake()

    def _on_readings(self, messages: list[Message]) -> None:
        for message in messages:
            if not isinstance(message, Readings):
                self.core.malformed += 1
                continue
            before = self.core.throttle_floor()
            self.core.set_readings(message)
            if self.core.throttle_floor() > before or self.core.needs_gate():
                self.wake()  # less is held back now
            elif self.core.throttle_floor() < before:
                self._disarm_if_stale()

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self, results: list[TaskResult]) -> None:
        self._pending_results.extend(results)
        if not self._finish_in_flight:
            self._flush_results()

    def _flush_results(self) -> None:
        """Send the results waiting; when no claim is in flight and the gate needs no look at
        each candidate, with the next claim, which then sees the slots they free."""
        if not self._pending_results:
            return
        batch, self._pending_results = self._pending_results, []
        self._finish_in_flight = True
        spec: ClaimSpec | None = None
        if not self._busy and not self.core.needs_gate():
            self._dirty = True  # the results free slots and may put tasks back in the queue
            spec = self._claim_spec()
        if spec is not None:
            self._busy = True
            self._again = False
            self.counters["cycles"] += 1
        finish = Finish(batch, self.settings.max_retries, spec)
        self.store.request(finish, lambda r: self._on_finished(r, batch, spec))
        if self.settings.monitoring:
            now = self.loop.clock.monotonic()
            refresh = self.core.learned_io.sent([r.run_id for r in batch], now)
            if refresh is not None:
                self._ask_learned(*refresh)  # answered after the finish, before later claims

    def _on_finished(
        self, reply: Message | TaskmillError, batch: list[TaskResult], spec: ClaimSpec | None
    ) -> None:
        self._finish_in_flight = False
        if not self._heard(reply, "finish"):
            self._pending_results[:0] = batch  # keep them: resent on the next flush
            if spec is not None:
                self._busy = False
            self.loop.call_later(self._retry_after, self._flush_results)
            return
        assert isinstance(reply, FinishReply)
        self._alarm(reply.next_due_ms)
        self._ack(batch)
        self._apply_transitions(reply.transitions)
        if spec is not None:
            self._claimed(spec, len(reply.claimed), reply.exhausted)
            placed = self.core.claimed_next(reply.claimed) if self.core.may_dispatch() else None
            self._place(placed, reply.claimed)
            self._flush_results()
            self._end_cycle(reply.exhausted or len(reply.claimed) < spec.limit)
        else:
            self._flush_results()
            if any(t.result in _REQUEUING or t.group_key is not None for t in reply.transitions):
                self.wake()  # work back in the queue, or room in a group the last claim found full
            else:
                # Only slots were freed: the claim in flight, or the standing claim it leaves,
                # takes what comes; a standing claim that runs out of room says so
                # (``exhausted`` False) and the Dispatcher claims again then.
                self._run()

    def _ack(self, results: list[TaskResult]) -> None:
        by_host: dict[bytes, list[int]] = {}
        for result in results:
            identity = self._result_hosts.pop(result.run_id, None)
            if identity is not None:
                by_host.setdefault(identity, []).append(result.run_id)
        for identity, run_ids in by_host.items():
            self._send_host(identity, AckResults(run_ids))

    def _apply_transitions(self, transitions: list[Transition]) -> None:
        cancels, events, hooked = self.core.transitions(transitions)
        for identity, ids in cancels.items():
            self._send_host(identity, CancelRuns(ids))
        for identity, ids in hooked.items():
            self._send_host(identity, CancelRuns(ids, hook=True))
        self._emit(events)
        self._check_drained()

    def _on_released(self, reply: Message | TaskmillError) -> None:
        if not self._heard(reply):
            return
        assert isinstance(reply, FinishReply)
        self._apply_transitions(reply.transitions)
        self.wake()

    # -- hosts -------------------------------------------------------------------------------

    def _on_host_frames(self, batch: list[list[bytes]]) -> None:
        for frames in batch:
            identity = frames[0]
            try:
                message, _ = decode(frames[1:])
            except ProtocolError as exc:
                self.core.malformed += 1
                self._host_malformed.note(exc, self.loop.clock.monotonic())
                continue
            handler = self._from_hosts.get(type(message))
            if handler is None:
                self.core.malformed += 1
                self._host_malformed.note(f"a {message.KIND} message", self.loop.clock.monotonic())
                continue
            handler(identity, message)
        results, self._results = self._results, []
        if not results:
            return
        self.counters["results"] += len(results)
        self._note_completions(results)
        apply = self.core.finished(results)
        for result in results:
            if result not in apply:  # stale: never applied, but its host may forget it
                host = self._result_hosts.pop(result.run_id, None)
                if host is not None:
                    self._send_host(host, AckResults([result.run_id]))
        self.counters["stale_results"] += len(results) - len(apply)
        if apply:
            self._finish(apply)
        else:
            self.wake()

    def _on_hello(self, identity: bytes, message: HostHello) -> None:
        self._forget_vanished_runs(identity, message.running)
        now = self.loop.clock.monotonic()
        self.core.hosts.hello(identity, message.host_id, message.task_types, message.capacity, now)
        self._send_host(identity, HostWelcome(self.settings.dispatcher_id))
        self._adopt(identity, message.running, message.run_ids)
        self.wake()

    def _on_heartbeat(self, identity: bytes, message: HostHeartbeat) -> None:
        known = self.core.hosts.seen(identity, self.loop.clock.monotonic())
        self._send_host(identity, HostWelcome(self.settings.dispatcher_id, known))
        reported = self.core.host_reported(identity, message)
        self._emit(reported)
        if reported and self.core.needs_gate():
            self.wake()  # new readings of its machine: work its IO budget held may go now

    def _on_results(self, identity: bytes, message: RunResults) -> None:
        self.core.hosts.seen(identity, self.loop.clock.monotonic())
        for result in message.results:
            if result.id in self.core.interrupted:
                continue  # stays running for recovery; never acknowledged
            self._results.append(result)
            self._result_hosts[result.run_id] = identity

    def _check_hosts(self) -> None:
        for host in self.core.hosts.lost(self.loop.clock.monotonic()):
            ids = self.core.lose_host(host)
            log.warning("executor host %s lost with %d running task(s)", host.host_id, len(ids))
            if ids:
                release = Release(ids, max_retries=self.settings.max_retries)
                self.store.request(release, self._on_released)

    def _send_host(self, identity: bytes, message: Message) -> None:
        try:
            send_frames(self._hosts_sock, [identity, *encode(message)])
        except zmq.ZMQError as exc:
            log.warning("message to host %r dropped: %s", identity, exc)

    # -- recovery: runs the Dispatcher does not know (it restarted, or a claim reply was lost) --

    def _forget_vanished_runs(self, identity: bytes, running: list[int]) -> None:
        """A host says hello without tasks this Dispatcher gave it: it restarted (same identity)
        and they died with it. Release them as a lost host's, so their slots come back."""
        vanished = sorted(self.core.hosts.tasks_of(identity) - set(running))
        if vanished:
            log.warning("host %r restarted; %d task(s) it ran are lost", identity, len(vanished))
            self.core.detach(vanished)
            release = Release(vanished, max_retries=self.settings.max_retries)
            self.store.request(release, self._on_released)

    def _adopt(self, identity: bytes, running: list[int], run_ids: list[int]) -> None:
        """A host says it runs these: take the ones the Store has running as this Dispatcher's
        own; cancel the others on the host (finished, cancelled or given to another host)."""
        pairs = {t: r for t, r in zip(running, run_ids, strict=False) if t not in self.core.running}
        if not pairs:
            return

        def on_rows(rows: list[TaskRow]) -> None:
            stale = adopt(self.core, identity, pairs, {row.id: row for row in rows})
            if stale:
                self._send_host(identity, CancelRuns(stale))

        self._running_rows(on_rows)

    def _running_rows(self, then: Callable[[list[TaskRow]], None]) -> None:
        """The Store's running rows, page after page (a reply holds what fits in a frame), to
        ``then``; nothing when the Store cannot answer (the next scan asks again)."""
        rows: list[TaskRow] = []

        def on_reply(reply: Message | TaskmillError) -> None:
            if not self._heard(reply):
                return
            assert isinstance(reply, TasksReply)
            rows.extend(reply.tasks)
            if reply.next_offset is None or not reply.tasks or len(rows) >= ORPHAN_SCAN_LIMIT:
                then(rows)
            else:
                ask(reply.next_offset)

        def ask(offset: int) -> None:
            limit = ORPHAN_SCAN_LIMIT - len(rows)
            self.store.request(ListTasks("running", limit, offset), on_reply)

        ask(0)

    def _reconcile(self) -> None:
        """Release ``running`` rows that no host has reported for a while: their claim reply was
        lost, or a previous Dispatcher claimed them and no live host runs them."""
        if self.core.stopping:
            return  # tasks interrupted by the shutdown stay running, for recovery at restart

        def on_rows(rows: list[TaskRow]) -> None:
            pending = [r.id for r in self._pending_results]
            lost = orphans(self.core, rows, self.settings.orphan_grace_s, pending)
            if lost:
                log.warning("releasing %d running task(s) no host reports", len(lost))
                self.store.request(
                    Release(lost, "orphaned run: no executor host reported it", count_retry=False),
                    self._on_released,
                )

        self._running_rows(on_rows)

    def _note_completions(self, results: list[TaskResult]) -> None:
        """Runs that completed, by type, before ``finished`` forgets them: the learned IO of
        their type may change with them (``IOLearning``)."""
        if not self.settings.monitoring:
            return
        for result in results:
            entry = self.core.running.get(result.id)
            if result.outcome == "ok" and entry is not None and entry.run_id == result.run_id:
                self.core.learned_io.completed(result.run_id, entry.task.task_type)

    def _sweep(self) -> None:
        """Expire the tasks past their TTL that no claim came across (the queue is held, or
        they wait behind more urgent work)."""
        if self.core.may_dispatch() or self.core.paused:
            self.store.request(Expire(), self._on_released)

    def _learn(self) -> None:
        """The periodic refresh of the learned IO per task type (mean actual bytes of recent
        runs): everything at start, then the types with new completed runs."""
        types = self.core.learned_io.due(self.loop.clock.monotonic())
        if types is not None:
            self._ask_learned(types, Counter())

    def _ask_learned(self, types: list[str], runs: Counter[str]) -> None:
        def on_reply(reply: Message | TaskmillError) -> None:
            if not self._heard(reply):
                self.core.learned_io.failed(types, runs)
            else:
                assert isinstance(reply, LearnedReply)
                self.core.learned_io.answered(reply.by_type, runs)
            if runs:
                self.wake()  # tasks held for this answer

        self.store.request(LearnedIO(types, LEARN_MIN_RUNS, LEARN_WINDOW), on_reply)

    # -- preemption and the controls ---------------------------------------------------------

    def _preempt(self, ids: list[int], then: Callable[[], None]) -> None:
        for identity, host_ids in self.core.detach(ids).items():
            self._send_host(identity, CancelRuns(host_ids))
        self.counters["preempted"] += len(ids)

        def on_reply(reply: Message | TaskmillError) -> None:
            if self._heard(reply):
                assert isinstance(reply, TasksReply)
                self._emit(self.core.preempted(reply.tasks))
            self._check_drained()
            then()

        self.store.request(Preempt(ids), on_reply)

    def _pause_all(self, message: PauseAll) -> Message | Deferred:
        request = current_request()
        self.core.paused = True
        self._disarm_if_stale()
        victims = list(self.core.running)

        def done() -> None:
            self._emit([self.core.scheduler_event(Paused)])
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
        self._emit([self.core.scheduler_event(Resumed)])
        self.wake()
        return Ok()

    def _set_max_concurrency(self, message: SetMaxConcurrency) -> Message:
        if message.n < 0:
            raise TaskmillError("max_concurrency must be >= 0", ErrorCode.INVALID)
        self.core.max_concurrency = message.n
        self._disarm_if_stale()
        self.wake()
        return Ok()

    def _cancel(self, message: CancelTask) -> Message | Deferred:
        return self._cancel_in_store(
            Cancel(message.id, message.recurring), lambda changes: bool(changes)
        )

    def _cancel_where(self, message: CancelTasks) -> Message | Deferred:
        """Bulk cancel: one Store transaction, then the running ones stopped on their hosts."""
        return self._cancel_in_store(
            CancelWhere(message.group, message.task_type, message.tag),
            lambda changes: [t.id for t in changes if t.result == "cancelled"],
        )

    def _cancel_in_store(
        self, request: Cancel | CancelWhere, answer: Callable[[list[Transition]], Any]
    ) -> Deferred:
        """Have the Store cancel, then stop what ran and publish the events; the client's reply
        is ``Ok(answer(transitions))``, or the Store's error."""
        client = current_request()

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                client.fail(reply.code, reply.message)
                return
            assert isinstance(reply, CancelReply)
            self._apply_transitions(reply.transitions)
            client.reply(Ok(answer(reply.transitions)))
            self.wake()

        self.store.request(request, on_reply)
        return DEFER

    def _shutdown(self, message: Shutdown) -> Message | Deferred:
        self.core.stopping = True
        self._disarm_if_stale()
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
        """Answer Shutdown once nothing runs and every result is in the Store."""
        in_flight = self._pending_results or self._finish_in_flight
        if (
            self.core.stopping
            and not self.core.running
            and not in_flight
            and self._shutdown_waiters
        ):
            if self._drain_timer is not None:
                self._drain_timer.cancel()
                self._drain_timer = None
            waiters, self._shutdown_waiters = self._shutdown_waiters, []
            for request in waiters:
                request.reply(Ok())

    # -- events ------------------------------------------------------------------------------

    def _emit(self, events: list[SchedulerEvent]) -> None:
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
