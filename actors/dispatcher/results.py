"""The Dispatcher's handling of work coming back: results from executor hosts (committed in
batches, acknowledged to the hosts), the hosts' hellos and heartbeats, lost hosts, and recovery
of runs it does not know (after a restart of the Dispatcher, or a lost claim reply)."""

from __future__ import annotations

import logging
from typing import Any

from actors.dispatcher.base import DispatcherBase
from actors.dispatcher.recovery import adopt, orphans
from bus.errors import ProtocolError, TaskmillError
from bus.kinds import (
    Finish,
    FinishReply,
    LearnedIO,
    LearnedReply,
    ListTasks,
    Release,
    TaskResult,
    TasksReply,
)
from bus.kinds_run import (
    AckResults,
    CancelRuns,
    HostHeartbeat,
    HostHello,
    HostWelcome,
    RunProgress,
    RunResults,
)
from bus.protocol import Message, decode

log = logging.getLogger("taskmill.dispatcher")

ORPHAN_SCAN_LIMIT = 100_000
LEARN_MIN_RUNS = 5
LEARN_WINDOW = 20
"""semantics.md: a type's learned IO is the mean of its last 20 runs once it has 5."""


class ResultsMixin(DispatcherBase):
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
            delay = self._store_failed("finish", reply)
            self._pending_results[:0] = batch  # keep them: resent on the next flush
            self.loop.call_later(delay, self._flush_results)
            return
        assert isinstance(reply, FinishReply)
        self._store_trouble.succeeded()
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

    def _on_host_frames(self, batch: list[list[bytes]]) -> None:
        results: list[TaskResult] = []
        for frames in batch:
            identity = frames[0]
            try:
                message, _ = decode(frames[1:])
            except ProtocolError as exc:
                self.core.malformed += 1
                self._host_malformed.note(exc, self.loop.clock.monotonic())
                continue
            now = self.loop.clock.monotonic()
            if isinstance(message, HostHello):
                self._forget_vanished_runs(identity, message.running)
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
                    if r.id in self.core.interrupted:
                        continue  # stays running for recovery; never acknowledged
                    results.append(r)
                    self._result_hosts[r.run_id] = identity
            elif isinstance(message, RunProgress):
                self._emit(self.core.progress(message.items))
            else:
                self.core.malformed += 1
                self._host_malformed.note(f"a {message.KIND} message", self.loop.clock.monotonic())
        if results:
            self.counters["results"] += len(results)
            apply = self.core.finished(results)
            for result in results:
                if result not in apply:  # stale: never applied, but its host may forget it
                    host = self._result_hosts.pop(result.run_id, None)
                    if host is not None:
                        self._send_host(host, AckResults([result.run_id]))
            self.counters["stale_results"] += len(results) - len(apply)
            if apply:
                self._finish(apply)
            self.wake()

    # -- recovery: runs the Dispatcher does not know (it restarted, or a claim reply was lost) --

    def _forget_vanished_runs(self, identity: bytes, running: list[int]) -> None:
        """A host says hello without tasks this Dispatcher gave it: it restarted (same identity)
        and they died with it. Release them as a lost host's, so their slots come back."""
        known = self.core.hosts.tasks_of(identity)
        vanished = sorted(known - set(running))
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

        def on_reply(reply: Message | TaskmillError) -> None:
            if isinstance(reply, TaskmillError):
                self._store_failed("adopt", reply)
                return
            assert isinstance(reply, TasksReply)
            rows = {row.id: row for row in reply.tasks}
            stale = adopt(self.core, identity, pairs, rows)
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
            pending = [r.id for r in self._pending_results]
            lost = orphans(self.core, reply.tasks, self.settings.orphan_grace_s, pending)
            if lost:
                log.warning("releasing %d running task(s) no host reports", len(lost))
                self.store.request(
                    Release(lost, "orphaned run: no executor host reported it", count_retry=False),
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
                release = Release(ids, max_retries=self.settings.max_retries)
                self.store.request(release, self._on_released)

    def _on_released(self, reply: Message | TaskmillError) -> None:
        if isinstance(reply, TaskmillError):
            self._store_failed("release", reply)
            return
        assert isinstance(reply, FinishReply)
        self._apply_transitions(reply.transitions)
        self.wake()
