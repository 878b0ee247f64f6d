"""The Dispatcher's state and decisions, without sockets (unit-tested directly).

``DispatcherCore`` answers: which candidates to admit (the gate), where each claimed task runs,
which running tasks are victims of a preemption, what events a Store transition stands for.
The actor (``actors.dispatcher.actor``) only moves messages in and out.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from actors.dispatcher.gate import (
    Capacity,
    GateView,
    HeldReadings,
    IOLearning,
    Readings,
    Verdict,
    axis_rates,
    evaluate,
)
from actors.dispatcher.hosts import Host, HostTable
from actors.dispatcher.settings import Settings as Settings
from bus.clock import Clock, SystemClock, now_ms
from bus.kinds import TaskResult, TaskRow, Transition
from bus.kinds_run import DispatcherState, Event, ProgressRow, RunningTask
from bus.kinds_run import Readings as ReadingsMsg

NO_EXECUTOR = "no executor registered for type '{}'"


@dataclass(slots=True)
class Running:
    task: TaskRow
    started_at_ms: int
    run_id: int
    progress: ProgressRow | None = None


def task_data(task: TaskRow | Transition, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "task_id": task.id,
        "task_type": task.task_type,
        "key": task.key,
        "label": task.label,
    }
    data.update(extra)
    return data


@dataclass
class DispatcherCore:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        s = self.settings
        self.hosts = HostTable(s.heartbeat_s)
        self.running: dict[int, Running] = {}
        self.max_concurrency = s.max_concurrency
        self.paused = False
        self.started = s.autostart
        self.stopping = False
        self._readings = HeldReadings(s.readings_expiry_s)
        read, write = s.disk_capacity_bps or (None, None)
        self.capacity = Capacity((read, write, s.net_capacity_bps, s.net_capacity_bps))
        self._breakdown: list[tuple[str, float]] = []
        self._tentative: dict[int, bytes | None] = {}
        self._candidates: dict[int, TaskRow] = {}
        self.learned_io = IOLearning(s.learn_interval_s)
        # Run ids are unique across restarts of the Dispatcher: hosts keep old runs going.
        self._run_ids = itertools.count((now_ms(self.clock) << 12) + 1)
        self.returned: list[int] = []
        """Rows the last ``claimed`` could not place: the Dispatcher gives them back."""
        self.interrupted: set[int] = set()
        """Tasks cancelled by shutdown: their results are not applied (recovered on restart)."""
        self.malformed = 0

    # -- basics ------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return now_ms(self.clock)

    def may_dispatch(self) -> bool:
        return self.started and not self.paused and not self.stopping

    def free_slots(self) -> int:
        return self.max_concurrency - len(self.running)

    # -- admission and claims ----------------------------------------------------------------

    def needs_gate(self) -> bool:
        """Whether each candidate must pass the IO budget here before it is claimed (a peek,
        then a claim); otherwise the Store's claim applies every rule by itself."""
        return self.settings.monitoring

    def throttle_floor(self) -> int:
        """The least urgent priority the throttle lets start now (-1: it holds everything)."""
        pressure = self.readings.pressure
        held = [floor for floor, limit in self.settings.throttle if pressure > limit]
        return min(held) - 1 if held else 255

    def claimed_next(
        self, rows: list[TaskRow]
    ) -> tuple[dict[bytes, list[tuple[TaskRow, int]]], list[TaskResult], list[Event]]:
        """Rows claimed without a peek: place them on hosts like admitted candidates."""
        self._tentative.clear()
        self._candidates.clear()
        host_free = {h: self.hosts_free(h) for h in self.hosts.identities()}
        for row in rows:
            identity = (
                self._pick(row.task_type, host_free) if self.hosts.serves(row.task_type) else None
            )
            if identity is not None:
                host_free[identity] -= 1
            self._tentative[row.id] = identity
            self._candidates[row.id] = row
        return self.claimed(rows)

    def admit(self, candidates: Iterable[TaskRow]) -> list[int]:
        """Run the gate over candidates in queue order; return the ids to claim."""
        self._tentative.clear()
        self._candidates.clear()
        free = self.free_slots()
        rows = [r.task for r in self.running.values()]
        host_free = {h: self.hosts_free(h) for h in self.hosts.identities()}
        now = self.clock.monotonic()
        view = GateView(
            running=rows,
            readings=self._readings.current(now),
            capacity=self.capacity.current(now),
            monitoring=self.settings.monitoring,
            throttle=self.settings.throttle,
            learned_io=self.learned_io.means,
            learning=self.learned_io.waiting,
        )
        ids: list[int] = []
        for task in candidates:
            if len(ids) >= free:
                break
            if not self.hosts.serves(task.task_type):
                if len(self.hosts):  # no host at all: wait for one rather than fail
                    self._tentative[task.id] = None
                    self._candidates[task.id] = task
                    ids.append(task.id)
                continue
            verdict = evaluate(task, view)
            if verdict is Verdict.HOLD:
                break
            if verdict is Verdict.SKIP:
                continue
            identity = self._pick(task.task_type, host_free)
            if identity is None:
                continue  # every host of this type is full: others may still have room
            host_free[identity] -= 1
            self._tentative[task.id] = identity
            self._candidates[task.id] = task
            rows.append(task)
            ids.append(task.id)
        return ids

    def hosts_free(self, identity: bytes) -> int:
        host = self.hosts._hosts.get(identity)
        return host.free if host is not None else 0

    def _pick(self, task_type: str, host_free: dict[bytes, int]) -> bytes | None:
        best: bytes | None = None
        for identity, free in host_free.items():
            host = self.hosts._hosts[identity]
            if (
                free > 0
                and task_type in host.task_types
                and (best is None or free > host_free[best])
            ):
                best = identity
        return best

    def forget_tentative(self) -> None:
        """Drop this cycle's candidates (a failed claim)."""
        self._tentative.clear()
        self._candidates.clear()

    def claimed(
        self, rows: list[TaskRow]
    ) -> tuple[dict[bytes, list[tuple[TaskRow, int]]], list[TaskResult], list[Event]]:
        """Place claimed rows on their hosts. Rows no host serves fail (``unserved``); rows whose
        host is full or gone since admission go back (``returned``), untouched."""
        runs: dict[bytes, list[tuple[TaskRow, int]]] = {}
        unserved: list[TaskResult] = []
        events: list[Event] = []
        now = self.now_ms()
        self.returned = []
        for row in rows:
            identity = self._tentative.pop(row.id, None)
            host = self.hosts._hosts.get(identity) if identity is not None else None
            self._candidates.pop(row.id, None)
            if host is None or host.free <= 0:
                if self.hosts.serves(row.task_type) or not len(self.hosts):
                    self.returned.append(row.id)  # a host for it is merely full, or gone
                    continue
                error = NO_EXECUTOR.format(row.task_type)
                unserved.append(
                    TaskResult(row.id, "error", error, phase=row.phase, finished_at_ms=now)
                )
                continue
            self.hosts.assign(host, row.id)
            run_id = next(self._run_ids)
            self.running[row.id] = Running(row, row.started_at_ms or now, run_id)
            runs.setdefault(host.identity, []).append((row, run_id))
            events.append(Event("dispatched", task_data(row, phase=row.phase), now))
        self._tentative.clear()
        self._candidates.clear()
        return runs, unserved, events

    # -- running tasks leaving ---------------------------------------------------------------

    def _drop(self, task_id: int) -> bytes | None:
        self.running.pop(task_id, None)
        return self.hosts.release(task_id)

    def finished(self, results: list[TaskResult]) -> list[TaskResult]:
        """Free the slots of finished runs; return the results the Store should apply.

        A result of a run that was taken off its host (preempted, cancelled) still goes to the
        Store, which decides; one of an older run of a task that is running again is stale.
        """
        apply: list[TaskResult] = []
        for result in results:
            entry = self.running.get(result.id)
            if entry is not None and entry.run_id != result.run_id:
                continue
            if entry is not None:
                self._drop(result.id)
            apply.append(result)
        return apply

    def detach(self, ids: list[int]) -> dict[bytes, list[int]]:
        """Take tasks off their hosts (preempt, cancel, shutdown): host → ids to cancel."""
        by_host: dict[bytes, list[int]] = {}
        for task_id in ids:
            identity = self._drop(task_id)
            if identity is not None:
                by_host.setdefault(identity, []).append(task_id)
        return by_host

    def lose_host(self, host: Host) -> list[int]:
        ids = [i for i in host.running if i in self.running]
        for task_id in ids:
            self._drop(task_id)
        return ids

    def victims_for(self, priority: int) -> list[int]:
        """The running tasks a submission at ``priority`` preempts: every one strictly less
        urgent, when ``priority`` is at or above the preemption threshold."""
        if priority > self.settings.preempt_priority:
            return []
        return sorted(i for i, r in self.running.items() if r.task.priority > priority)

    # -- translating Store replies into events -----------------------------------------------

    def transitions(
        self, transitions: list[Transition]
    ) -> tuple[dict[bytes, list[int]], list[Event]]:
        now = self.now_ms()
        events: list[Event] = []
        to_cancel: list[int] = []
        for t in transitions:
            if t.was_running and t.id in self.running:
                to_cancel.append(t.id)
            if t.result in ("completed", "requeued"):
                extra = {} if t.duration_ms is None else {"duration_ms": t.duration_ms}
                events.append(Event("completed", task_data(t, **extra), now))
            elif t.result in ("retry", "failed", "dead_letter"):
                # A dead-lettered task is first a final failure, as subscribers of the first
                # version know it, then a dead letter.
                will_retry = t.result == "retry"
                data = task_data(t, error=t.error or "", will_retry=will_retry)
                data["retry_after"] = t.retry_after_s
                events.append(Event("failed", data, now))
                if t.result == "dead_letter":
                    dead = task_data(t, error=t.error or "", retry_count=t.retry_count)
                    events.append(Event("dead_lettered", dead, now))
            elif t.result == "waiting":
                events.append(Event("waiting", task_data(t, children_count=t.children_count), now))
            elif t.result == "cancelled":
                events.append(Event("cancelled", task_data(t), now))
            elif t.result == "expired":
                events.append(Event("expired", task_data(t, age=t.age_s or 0.0), now))
        return self.detach(to_cancel), events

    def preempted(self, rows: list[TaskRow]) -> list[Event]:
        now = self.now_ms()
        return [Event("preempted", task_data(r), now) for r in rows]

    def progress(self, items: list[ProgressRow]) -> list[Event]:
        events: list[Event] = []
        for item in items:
            entry = self.running.get(item.task_id)
            if entry is None or entry.run_id != item.run_id:
                continue
            entry.progress = item
            data = task_data(entry.task, percent=item.percent, message=item.message)
            events.append(Event("progress", data, item.reported_at_ms))
        return events

    def scheduler_event(self, kind: str) -> Event:
        return Event(kind, {}, self.now_ms())

    def set_readings(self, message: ReadingsMsg) -> None:
        readings = Readings(
            message.cpu,
            message.disk_read_bps,
            message.disk_write_bps,
            message.net_rx_bps,
            message.net_tx_bps,
            message.pressure,
        )
        now = self.clock.monotonic()
        self._readings.update(readings, now)
        self.capacity.observe(axis_rates(readings), now)
        self._breakdown = list(message.breakdown)

    @property
    def readings(self) -> Readings:
        """The monitor's last readings while they are fresh; none (all 0) once they expired."""
        return self._readings.current(self.clock.monotonic())

    @property
    def breakdown(self) -> list[tuple[str, float]]:
        return self._breakdown if self._readings.fresh(self.clock.monotonic()) else []

    # -- explaining --------------------------------------------------------------------------

    def state(self) -> DispatcherState:
        return DispatcherState(
            running=[
                RunningTask(r.task, r.started_at_ms, r.progress) for r in self.running.values()
            ],
            max_concurrency=self.max_concurrency,
            is_paused=self.paused,
            pressure=self.readings.pressure,
            pressure_breakdown=self.breakdown,
            hosts=len(self.hosts),
            resources=self._resources() if self.settings.monitoring else {},
        )

    def _resources(self) -> dict[str, float]:
        readings = dataclasses.asdict(self.readings)
        del readings["pressure"]  # reported on its own
        return readings

    def stats(self) -> dict[str, Any]:
        counts = {"running": len(self.running), "hosts": len(self.hosts)}
        flags = {"paused": self.paused, "stopping": self.stopping}
        return {
            **counts,
            **flags,
            "max_concurrency": self.max_concurrency,
            "malformed": self.malformed,
            "pressure": self.readings.pressure,
        }
