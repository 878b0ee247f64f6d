"""The Dispatcher's preemption and its client controls (pause, resume, cancel, limits,
shutdown)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from actors.dispatcher.base import DispatcherBase
from bus.errors import ErrorCode, TaskmillError
from bus.kinds import (
    Cancel,
    CancelReply,
    Ok,
    Preempt,
    StoreChanged,
    TasksReply,
)
from bus.kinds_run import (
    CancelRuns,
    CancelTask,
    LimitsChanged,
    PauseAll,
    Readings,
    ResumeAll,
    SetMaxConcurrency,
    Shutdown,
    Start,
)
from bus.protocol import Message
from bus.server import (
    DEFER,
    Deferred,
    current_request,
)

log = logging.getLogger("taskmill.dispatcher")


class ControlsMixin(DispatcherBase):
    # -- preemption --------------------------------------------------------------------------

    def _on_notifications(self, messages: list[Message]) -> None:
        for message in messages:
            if isinstance(message, StoreChanged):
                victims = self.core.victims_for(
                    message.min_priority, message.running_below, claiming=self._cycle.busy
                )
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
