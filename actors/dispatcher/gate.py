"""The dispatch gate: a pipeline of checks each candidate task passes before it is claimed.

Order (semantics.md "Dispatch"): backpressure throttle → disk IO budget → network IO budget →
group concurrency. The first three are local checks here, pure functions of the candidate and a
``GateView`` of the Dispatcher's state; each answers ADMIT, HOLD (the head is held back: the cycle
ends, everything behind is less urgent) or SKIP (try the next candidate). New checks plug in
without reshaping the cycle. The last step, group concurrency, is the GroupLimiter actor's: the
Dispatcher asks it about the candidates that passed, and a full group is skipped, never blocking
the tasks behind it.

What the view is built from is kept here too, as plain objects any claim path can hold:
``HeldReadings`` (the monitor's readings, void once too old: docs/semantics.md "Pressure
readings") and ``Capacity`` (what each IO axis can carry: "IO budget").
"""

from __future__ import annotations

import enum
import math
from collections import deque
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


MIN_CAPACITY_BPS = 50_000_000.0
"""The least capacity an axis is assumed to have when none is configured: a machine that has
been quiet for an hour still moves this much."""
PEAK_WINDOW_S = 3600.0


def axis_rates(readings: Readings) -> tuple[float, float, float, float]:
    """The observed rates on the IO budget's axes, in the order of a task's expected bytes:
    disk read, disk write, network rx, network tx."""
    return (
        readings.disk_read_bps,
        readings.disk_write_bps,
        readings.net_rx_bps,
        readings.net_tx_bps,
    )


class Capacity:
    """What each IO axis can carry (bytes/s): the configured capacity, or else the highest
    smoothed rate observed in the last hour, never less than ``MIN_CAPACITY_BPS``.

    The peaks are kept as a monotone queue per axis (times rising, rates falling): a rate is
    dropped as soon as a higher one comes after it, since it can no longer be the peak of any
    window that is still to come.
    """

    def __init__(
        self,
        configured: Sequence[float | None] = (None, None, None, None),
        window_s: float = PEAK_WINDOW_S,
    ) -> None:
        self.configured = tuple(configured)
        self.window_s = window_s
        self._peaks: list[deque[tuple[float, float]]] = [deque() for _ in self.configured]

    def observe(self, rates: Sequence[float], now: float) -> None:
        for peaks, rate in zip(self._peaks, rates, strict=True):
            while peaks and peaks[-1][1] <= rate:
                peaks.pop()
            peaks.append((now, rate))

    def current(self, now: float) -> tuple[float, float, float, float]:
        out: list[float] = []
        for configured, peaks in zip(self.configured, self._peaks, strict=True):
            while peaks and now - peaks[0][0] > self.window_s:
                peaks.popleft()
            if configured is not None:
                out.append(configured)
            else:
                out.append(max(peaks[0][1] if peaks else 0.0, MIN_CAPACITY_BPS))
        read, write, rx, tx = out
        return read, write, rx, tx


@dataclass(slots=True)
class GateView:
    """What the checks may look at: running tasks, readings, the capacity of each IO axis, the
    learned IO per type."""

    running: Sequence[TaskRow] = ()
    readings: Readings = field(default_factory=Readings)
    capacity: tuple[float, float, float, float] = (MIN_CAPACITY_BPS,) * 4
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


BUDGET_WINDOW_S = 2.0
"""The IO budget of an axis: the bytes its spare capacity moves in this long."""


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


def within_headroom(mine: int, running: int, capacity: float, observed: float) -> bool:
    """One axis of the IO budget: a task expecting no bytes on it passes, and so does any task
    while no running task expects bytes on it (a budget never starves work); otherwise the
    running tasks' bytes and the task's must fit in ``BUDGET_WINDOW_S`` of the headroom left
    between the axis's capacity and the rate observed on it."""
    if mine == 0 or running == 0:
        return True
    return running + mine <= BUDGET_WINDOW_S * (capacity - observed)


def _budget(task: TaskRow, view: GateView, axes: Sequence[int]) -> Verdict:
    if not view.monitoring:
        return Verdict.ADMIT
    mine = expected_io(task, view.learned_io)
    if not any(mine[axis] for axis in axes):
        return Verdict.ADMIT
    running = [expected_io(t, view.learned_io) for t in view.running]
    observed = axis_rates(view.readings)
    for axis in axes:
        total = sum(expected[axis] for expected in running)
        if not within_headroom(mine[axis], total, view.capacity[axis], observed[axis]):
            return Verdict.HOLD
    return Verdict.ADMIT


def disk_check(task: TaskRow, view: GateView) -> Verdict:
    return _budget(task, view, (0, 1))


def network_check(task: TaskRow, view: GateView) -> Verdict:
    return _budget(task, view, (2, 3))


DEFAULT_CHECKS: tuple[Check, ...] = (throttle_check, disk_check, network_check)


def evaluate(task: TaskRow, view: GateView, checks: Sequence[Check] = DEFAULT_CHECKS) -> Verdict:
    for check in checks:
        verdict = check(task, view)
        if verdict is not Verdict.ADMIT:
            return verdict
    return Verdict.ADMIT
