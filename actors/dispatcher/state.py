"""The Dispatcher's state and decisions, without sockets (unit-tested directly).

``DispatcherCore`` answers: which candidates to admit (the gate), where each claimed task runs,
which running tasks are victims of a preemption, what events a Store transition stands for.
The actor (``actors.dispatcher.actor``) only moves messages in and out.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from actors.dispatcher.gate import (
    Capacity,
    GateView,
    HeldReadings,
    IOLearning,
    MachineReadings,
    Readings,
    Verdict,
    axis_rates,
    evaluate,
    readings_from,
    resources_of,
)
from actors.dispatcher.hosts import Host, HostTable
from actors.dispatcher.settings import Settings as Settings
from bus.clock import Clock, SystemClock, now_ms
from bus.events import (
    Cancelled,
    Completed,
    DeadLettered,
    DependencyFailed,
    Dispatched,
    Expired,
    Failed,
    HostResources,
    Preempted,
    Progress,
    RecurringCompleted,
    SchedulerEvent,
    Superseded,
    TaskEvent,
    Unblocked,
    Waiting,
)
from bus.kinds import TaskResult, TaskRow, Transition
from bus.kinds_run import (
    DispatcherState,
    HostHeartbeat,
    HostInfo,
    HostsReply,
    ProgressRow,
    RunningTask,
)
from bus.kinds_run import Readings as ReadingsMsg
from bus.protocol import MAX_ROWS_BYTES

NO_EXECUTOR = "no executor registered for type '{}'"


@dataclass(slots=True)
class Running:
    task: TaskRow
    started_at_ms: int
    run_id: int
    progress: ProgressRow | None = None


E = TypeVar("E", bound=TaskEvent)


def task_event(cls: type[E], task: TaskRow | Transition, at_ms: int, **fields: Any) -> E:
    """The event ``cls`` about ``task`` (a claimed row, or a transition the Store committed)."""
    tags = task.tags or {}
    return cls(task.id, task.task_type, task.key, task.label, tags=tags, at_ms=at_ms, **fields)


_HOOKED = frozenset({"cancelled", "superseded"})
"""Transitions whose running executor is told why it stops (its ``on_cancel`` is called)."""


def dispatched(row: TaskRow, now_ms: int) -> Dispatched:
    """A ``dispatched`` event: with the task's own priority, the ``effective_priority`` the claim
    ordered it by (aging), and ``wait_ms`` (submission to start) on a task's first run, which
    the metrics endpoint's wait histogram observes."""
    effective = row.priority if row.effective_priority is None else row.effective_priority
    wait_ms = None
    if row.phase == "execute" and row.retry_count == 0:
        wait_ms = max(0, (row.started_at_ms or now_ms) - row.created_at_ms)
    return Dispatched(
        row.id,
        row.task_type,
        row.key,
        row.label,
        row.priority,
        effective,
        row.phase,
        wait_ms,
        tags=row.tags or {},
        at_ms=now_ms,
    )


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
        self.host_readings: dict[bytes, MachineReadings] = {}
        """Readings hosts report of their own machines, by host (docs/semantics.md "IO budget")."""
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
    ) -> tuple[dict[bytes, list[tuple[TaskRow, int]]], list[TaskResult], list[SchedulerEvent]]:
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
        host_free = {h: self.hosts_free(h) for h in self.hosts.identities()}
        now = self.clock.monotonic()
        base = GateView(
            readings=self._readings.current(now),
            capacity=self.capacity.current(now),
            monitoring=self.settings.monitoring,
            throttle=self.settings.throttle,
            learned_io=self.learned_io.means,
            learning=self.learned_io.waiting,
        )
        machines = _MachineViews(base, self.host_readings, now)
        for task_id, entry in self.running.items():
            machines.running(self.hosts.host_of(task_id)).append(entry.task)
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
            verdict, identity = self._judge(task, host_free, machines)
            if verdict is Verdict.HOLD:
                break
            if verdict is Verdict.SKIP:
                continue
            if identity is None:
                continue  # every host of this type is full: others may still have room
            host_free[identity] -= 1
            self._tentative[task.id] = identity
            self._candidates[task.id] = task
            machines.running(identity).append(task)
            ids.append(task.id)
        return ids

    def _judge(
        self, task: TaskRow, host_free: dict[bytes, int], machines: _MachineViews
    ) -> tuple[Verdict, bytes | None]:
        """The gate's verdict on ``task`` and the host it goes to: the hosts of its type with
        room, most free first, each judged by its machine's view; the first one that admits it
        takes it. With no host free the verdict is the monitor's machine's (a hold still holds)."""
        first: Verdict | None = None
        judged: set[str | None] = set()
        hosts = [i for i, n in host_free.items() if n > 0 and task.task_type in self._types(i)]
        for identity in sorted(hosts, key=lambda i: -host_free[i]):
            machine = machines.machine_of(identity)
            if machine in judged:
                continue
            judged.add(machine)
            verdict = evaluate(task, machines.view(machine))
            if verdict is Verdict.ADMIT:
                return verdict, identity
            first = first or verdict
        return first or evaluate(task, machines.view(None)), None

    def _types(self, identity: bytes) -> frozenset[str]:
        return self.hosts._hosts[identity].task_types

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
    ) -> tuple[dict[bytes, list[tuple[TaskRow, int]]], list[TaskResult], list[SchedulerEvent]]:
        """Place claimed rows on their hosts. Rows no host serves fail (``unserved``); rows whose
        host is full or gone since admission go back (``returned``), untouched."""
        runs: dict[bytes, list[tuple[TaskRow, int]]] = {}
        unserved: list[TaskResult] = []
        events: list[SchedulerEvent] = []
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
            events.append(dispatched(row, now))
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
        self.host_readings.pop(host.identity, None)
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
    ) -> tuple[dict[bytes, list[int]], list[SchedulerEvent], dict[bytes, list[int]]]:
        """The runs to stop by host, the events, and the runs to stop whose executors' cancel
        hooks run (cancelled or superseded), by host."""
        now = self.now_ms()
        events: list[SchedulerEvent] = []
        to_cancel: list[int] = []
        hooked: list[int] = []
        for t in transitions:
            if t.was_running and t.id in self.running:
                (hooked if t.result in _HOOKED else to_cancel).append(t.id)
            if t.result in ("completed", "requeued"):
                tags = t.tags or {}  # the commonest event, built without task_event's keywords
                events.append(
                    Completed(
                        t.id, t.task_type, t.key, t.label, t.duration_ms, tags=tags, at_ms=now
                    )
                )
            elif t.result in ("retry", "failed", "dead_letter"):
                # A dead-lettered task is first a final failure, as subscribers of the first
                # version know it, then a dead letter.
                will_retry = t.result == "retry"
                error = t.error or ""
                events.append(
                    task_event(
                        Failed, t, now, error=error, will_retry=will_retry,
                        retry_after=t.retry_after_s,
                    )
                )  # fmt: skip
                if t.result == "dead_letter":
                    events.append(
                        task_event(DeadLettered, t, now, error=error, retry_count=t.retry_count)
                    )
            elif t.result == "waiting":
                events.append(task_event(Waiting, t, now, children_count=t.children_count))
            elif t.result == "cancelled":
                events.append(task_event(Cancelled, t, now))
            elif t.result == "expired":
                events.append(task_event(Expired, t, now, age=t.age_s or 0.0))
            elif t.result == "superseded":
                if t.was_running:  # its executor is cancelled: say so as a cancel does
                    events.append(task_event(Cancelled, t, now))
                events.append(task_event(Superseded, t, now, new_task_id=t.new_task_id))
            elif t.result == "unblocked":
                events.append(task_event(Unblocked, t, now))
            elif t.result == "dependency_failed":
                events.append(
                    task_event(
                        DependencyFailed, t, now, failed_dependency=t.failed_dependency or 0,
                        error=t.error or "",
                    )
                )  # fmt: skip
            elif t.result == "recurring":
                events.append(
                    task_event(
                        RecurringCompleted, t, now, execution_count=t.execution_count,
                        next_run_ms=t.next_run_ms,
                    )
                )  # fmt: skip
        return self.detach(to_cancel), events, self.detach(hooked)

    def preempted(self, rows: list[TaskRow]) -> list[SchedulerEvent]:
        now = self.now_ms()
        return [task_event(Preempted, r, now) for r in rows]

    def progress(self, items: list[ProgressRow]) -> list[SchedulerEvent]:
        events: list[SchedulerEvent] = []
        for item in items:
            entry = self.running.get(item.task_id)
            if entry is None or entry.run_id != item.run_id:
                continue
            entry.progress = item
            events.append(
                task_event(
                    Progress, entry.task, item.reported_at_ms, percent=item.percent,
                    message=item.message, bytes_done=item.bytes_done,
                    bytes_total=item.bytes_total, throughput_bps=item.throughput_bps,
                    eta_s=item.eta_s,
                )
            )  # fmt: skip
        return events

    def scheduler_event(self, cls: type[SchedulerEvent]) -> SchedulerEvent:
        """An event about the whole scheduler (``Paused``, ``Resumed``), now."""
        return cls(at_ms=self.now_ms())

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

    def host_reported(self, identity: bytes, message: HostHeartbeat) -> list[SchedulerEvent]:
        """A host's heartbeat with its own readings of its machine: kept (per host) for the IO
        budget of the tasks placed on that machine, and shown to dashboards (the event)."""
        host = self.hosts._hosts.get(identity)
        if not message.readings or host is None:
            return []
        readings = readings_from(message.readings)
        if readings is None:
            self.malformed += 1
            return []
        machine = message.machine or host.host_id
        entry = self.host_readings.get(identity)
        if entry is None or entry.machine != machine:
            lifetime = self.hosts.liveness * self.hosts.heartbeat_s
            capacity = Capacity(self.capacity.configured)
            entry = self.host_readings[identity] = MachineReadings(
                machine, HeldReadings(lifetime), capacity
            )
        entry.update(readings, self.clock.monotonic())
        r = readings
        event = HostResources(
            host=host.host_id, machine=machine, cpu=r.cpu, disk_read_bps=r.disk_read_bps,
            disk_write_bps=r.disk_write_bps, net_rx_bps=r.net_rx_bps, net_tx_bps=r.net_tx_bps,
            at_ms=self.now_ms(),
        )  # fmt: skip
        return [event]

    def host_resources(self) -> dict[str, dict[str, float]]:
        """Host id → its fresh readings of its own machine."""
        now = self.clock.monotonic()
        return {
            self.hosts._hosts[identity].host_id: resources_of(entry.held.last)
            for identity, entry in self.host_readings.items()
            if entry.held.fresh(now) and identity in self.hosts._hosts
        }

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
            running=self._running_tasks(),
            max_concurrency=self.max_concurrency,
            is_paused=self.paused,
            pressure=self.readings.pressure,
            pressure_breakdown=self.breakdown,
            hosts=len(self.hosts),
            resources=resources_of(self.readings) if self.settings.monitoring else {},
            host_resources=self.host_resources(),
            host_list=self.hosts.describe(),
        )

    def host_list(self, now: float) -> HostsReply:
        hosts = [
            HostInfo(h.host_id, sorted(h.task_types), h.capacity, len(h.running), now - h.last_seen)
            for h in self.hosts.hosts()
        ]
        return HostsReply(sorted(hosts, key=lambda h: h.host_id), self.paused)

    def _running_tasks(self) -> list[RunningTask]:
        """The running tasks for ``state``, their payloads while they fit one reply
        (``MAX_ROWS_BYTES`` with their texts): eight 1 MiB payloads would not fit one frame.
        Past that, a task goes without its payload (the Store's list of running tasks has it)."""
        out: list[RunningTask] = []
        total = 0
        for r in self.running.values():
            task = r.task
            texts = len(task.label) + len(task.task_type) + len(task.last_error or "")
            total += texts * 4 + len(task.payload or b"")  # a character: 4 bytes at most
            if task.payload is not None and total > MAX_ROWS_BYTES:
                total -= len(task.payload)
                task = dataclasses.replace(task, payload=None)
            out.append(RunningTask(task, r.started_at_ms, r.progress))
        return out

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


class _MachineViews:
    """The gate's view per machine for one admission cycle. A host with fresh readings of its
    own machine is judged by them (the freshest report of any host on that machine), every other
    host by the monitor's (machine None); each view counts the tasks running on its machine's
    hosts only, the ones admitted in the cycle included."""

    def __init__(
        self, base: GateView, reports: Mapping[bytes, MachineReadings], now: float
    ) -> None:
        self.base = base
        self.now = now
        self.of_host: dict[bytes, str] = {}
        self.latest: dict[str, MachineReadings] = {}
        for identity, entry in reports.items():
            if not entry.held.fresh(now):
                continue
            self.of_host[identity] = entry.machine
            known = self.latest.get(entry.machine)
            if known is None or entry.held.arrived_at > known.held.arrived_at:
                self.latest[entry.machine] = entry
        self._running: dict[str | None, list[TaskRow]] = {}
        self._views: dict[str | None, GateView] = {}

    def machine_of(self, identity: bytes | None) -> str | None:
        return self.of_host.get(identity) if identity is not None else None

    def running(self, identity: bytes | None) -> list[TaskRow]:
        """The tasks running on the machine of host ``identity``: the list its view holds, so
        appending an admitted task updates the view."""
        return self._running.setdefault(self.machine_of(identity), [])

    def view(self, machine: str | None) -> GateView:
        view = self._views.get(machine)
        if view is not None:
            return view
        running = self._running.setdefault(machine, [])
        if machine is None:
            view = dataclasses.replace(self.base, running=running)
        else:
            entry = self.latest[machine]
            # Pressure is the whole deployment's (the monitor's): only the rates are local.
            local = dataclasses.replace(entry.held.last, pressure=self.base.readings.pressure)
            capacity = entry.capacity.current(self.now)
            view = dataclasses.replace(
                self.base, running=running, readings=local, capacity=capacity
            )
        self._views[machine] = view
        return view
