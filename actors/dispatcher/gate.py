"""The dispatch gate: a pipeline of checks each candidate task passes before it is claimed.

Order (semantics.md "Dispatch"): backpressure throttle → disk IO budget → network IO budget →
group concurrency. The first three are local checks here, pure functions of the candidate and a
``GateView`` of the Dispatcher's state; each answers ADMIT, HOLD (the head is held back: the cycle
ends, everything behind is less urgent) or SKIP (try the next candidate). New checks plug in
without reshaping the cycle. The last step, group concurrency, is the GroupLimiter actor's: the
Dispatcher asks it about the candidates that passed, and a full group is skipped, never blocking
the tasks behind it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from bus.kinds import TaskRow


class Verdict(enum.Enum):
    ADMIT = "admit"
    HOLD = "hold"
    SKIP = "skip"


@dataclass(slots=True)
class Readings:
    """Smoothed resource rates (bytes/s) and the current pressure."""

    cpu: float = 0.0
    disk_read_bps: float = 0.0
    disk_write_bps: float = 0.0
    net_rx_bps: float = 0.0
    net_tx_bps: float = 0.0
    pressure: float = 0.0


@dataclass(slots=True)
class HeldReadings:
    """The monitor's last readings, and when they arrived (monotonic seconds).

    The monitor publishes every sampling interval; readings that stopped coming (the monitor
    crashed or was stopped) must not hold work for good. So a reading is only good for
    ``lifetime_s`` after it arrived: past that it reads as no reading at all, pressure 0 and
    every rate 0 (unknown). Its age is counted on the receiver's own clock whenever the gate
    looks, not when a next message comes, so the clock alone lets held work go.
    """

    lifetime_s: float
    last: Readings = field(default_factory=Readings)
    arrived_at: float = -math.inf

    def update(self, readings: Readings, now: float) -> None:
        self.last = readings
        self.arrived_at = now

    def fresh(self, now: float) -> bool:
        return now - self.arrived_at <= self.lifetime_s

    def current(self, now: float) -> Readings:
        return self.last if self.fresh(now) else Readings()


@dataclass(slots=True)
class GateView:
    """What the checks may look at: running tasks, readings, the learned IO per type."""

    running: Sequence[TaskRow] = ()
    readings: Readings = field(default_factory=Readings)
    monitoring: bool = False
    throttle: Sequence[tuple[int, float]] = ((192, 0.50), (128, 0.75))
    learned_io: Mapping[str, Sequence[float]] = field(default_factory=dict)


Check = Callable[[TaskRow, GateView], Verdict]


def throttle_check(task: TaskRow, view: GateView) -> Verdict:
    """Held when, for some (floor, limit), priority number ≥ floor and pressure > limit."""
    pressure = view.readings.pressure
    for floor, limit in view.throttle:
        if task.priority >= floor and pressure > limit:
            return Verdict.HOLD
    return Verdict.ADMIT


BUDGET_FRACTION = 0.8
BUDGET_WINDOW_S = 2.0


def expected_io(task: TaskRow, learned: Mapping[str, Sequence[float]]) -> tuple[int, ...]:
    """Declared (read, write, rx, tx), raised to the learned means once a type has history."""
    declared = (
        task.expected_read_bytes,
        task.expected_write_bytes,
        task.expected_net_rx_bytes,
        task.expected_net_tx_bytes,
    )
    means = learned.get(task.task_type)
    if not means:
        return declared
    return tuple(max(d, int(m)) for d, m in zip(declared, means, strict=False))


def _within(expected_total: int, observed_bps: float) -> bool:
    return observed_bps == 0 or expected_total <= BUDGET_FRACTION * BUDGET_WINDOW_S * observed_bps


def disk_check(task: TaskRow, view: GateView) -> Verdict:
    if not view.monitoring:
        return Verdict.ADMIT
    r = view.readings
    if r.disk_read_bps == 0 and r.disk_write_bps == 0:
        return Verdict.ADMIT
    mine = expected_io(task, view.learned_io)
    running = [expected_io(t, view.learned_io) for t in view.running]
    read = sum(x[0] for x in running) + mine[0]
    write = sum(x[1] for x in running) + mine[1]
    ok = _within(read, r.disk_read_bps) and _within(write, r.disk_write_bps)
    return Verdict.ADMIT if ok else Verdict.HOLD


def network_check(task: TaskRow, view: GateView) -> Verdict:
    if not view.monitoring:
        return Verdict.ADMIT
    mine = expected_io(task, view.learned_io)
    if mine[2] == 0 and mine[3] == 0:
        return Verdict.ADMIT
    r = view.readings
    running = [expected_io(t, view.learned_io) for t in view.running]
    rx = sum(x[2] for x in running) + mine[2]
    tx = sum(x[3] for x in running) + mine[3]
    ok = _within(rx, r.net_rx_bps) and _within(tx, r.net_tx_bps)
    return Verdict.ADMIT if ok else Verdict.HOLD


DEFAULT_CHECKS: tuple[Check, ...] = (throttle_check, disk_check, network_check)


def evaluate(task: TaskRow, view: GateView, checks: Sequence[Check] = DEFAULT_CHECKS) -> Verdict:
    for check in checks:
        verdict = check(task, view)
        if verdict is not Verdict.ADMIT:
            return verdict
    return Verdict.ADMIT
