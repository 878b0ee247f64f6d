"""The dispatch gate: a pipeline of checks each candidate task passes before it is claimed.

Order (docs/semantics.md "IO budget"): backpressure throttle → disk IO budget → network IO budget →
group concurrency. The first three are local checks here, pure functions of the candidate and a
``GateView`` of the Dispatcher's state; each answers ADMIT, HOLD (the head is held back: the cycle
ends, everything behind is less urgent) or SKIP (try the next candidate). New checks plug in
without reshaping the cycle. The last step, group concurrency, is the GroupLimiter actor's: the
Dispatcher asks it about the candidates that passed, and a full group is skipped, never blocking
the tasks behind it.

What the view is built from is kept here too, as plain objects any claim path can hold:
``HeldReadings`` (the monitor's readings, void once too old: docs/semantics.md "Pressure
readings"), ``Capacity`` (what each IO axis can carry: "IO budget") and ``MachineReadings`` (both,
for a machine whose executor hosts report readings of their own).
"""

from __future__ import annotations

import enum
import math
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
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


READING_KEYS = ("cpu", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")
"""The names of the rates a host reports, in the order of ``Readings``' fields."""


def resources_of(readings: Readings) -> dict[str, float]:
    """The rates of ``readings`` by name (``READING_KEYS``), pressure left out."""
    return dict(zip(READING_KEYS, (getattr(readings, key) for key in READING_KEYS), strict=True))


def readings_from(values: Mapping[str, object]) -> Readings | None:
    """A host's reported rates as ``Readings`` (a missing one reads 0, CPU at most 1), or None
    when one is not a finite number >= 0."""
    out: list[float] = []
    for key in READING_KEYS:
        value = values.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not (math.isfinite(value) and value >= 0):
            return None
        out.append(float(value))
    cpu, read, write, rx, tx = out
    return Readings(min(cpu, 1.0), read, write, rx, tx)


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
class MachineReadings:
    """The readings an executor host reports of its own machine, good for ``held.lifetime_s``,
    and what that machine's IO axes carry (its own peaks, the configured capacities alike)."""

    machine: str
    held: HeldReadings
    capacity: Capacity

    def update(self, readings: Readings, now: float) -> None:
        self.held.update(readings, now)
        self.capacity.observe(axis_rates(readings), now)


class IOLearning:
    """The IO learned per task type, and when to ask the Store for it again.

    A type's learned IO can appear with any completed run (it needs five) and must count from
    the very next run. So when a run of a type not learned yet completes, tasks of that type
    wait (``waiting``) until a refresh asked *after* the run's result went to the Store has
    answered: requests on one connection are answered in order, so that answer already counts
    the run. Types already learned change slowly; they are refreshed at most every
    ``refresh_s``, and not at all while none of their runs completed.
    """

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self.means: dict[str, list[float]] = {}
        self._awaiting: Counter[str] = Counter()
        """Per type not learned yet: completed runs whose refresh has not answered."""
        self._runs: dict[int, str] = {}
        """Run id → type of the completed runs whose result is not sent to the Store yet."""
        self._stale: set[str] = set()
        """Types with runs completed since they were last asked about."""
        self._asked_at = -math.inf
        self._started = False

    @property
    def waiting(self) -> frozenset[str]:
        return frozenset(self._awaiting)

    def completed(self, run_id: int, task_type: str) -> None:
        """A run of ``task_type`` completed; its result is on its way to the Store."""
        self._runs[run_id] = task_type
        if task_type not in self.means:
            self._awaiting[task_type] += 1

    def sent(self, run_ids: Iterable[int], now: float) -> tuple[list[str], Counter[str]] | None:
        """Results of these runs were sent to the Store: what to ask now, as (types, the runs
        the answer accounts for), or None when no refresh is due."""
        batch = Counter(self._runs.pop(r) for r in run_ids if r in self._runs)
        if not batch:
            return None
        self._stale.update(batch)
        if not any(t in self._awaiting for t in batch) and now - self._asked_at < self.refresh_s:
            return None
        return self._ask(now), batch

    def due(self, now: float) -> list[str] | None:
        """The periodic refresh: every type the first time (history from earlier runs), then
        the types with runs completed since last asked; None when there is nothing to ask."""
        if now - self._asked_at < self.refresh_s or (self._started and not self._stale):
            return None
        self._started = True
        return self._ask(now)

    def _ask(self, now: float) -> list[str]:
        types, self._stale = sorted(self._stale), set()
        self._asked_at = now
        return types

    def answered(self, by_type: Mapping[str, Sequence[float]], runs: Counter[str]) -> None:
        """The Store's answer to a refresh that accounts for ``runs``."""
        self.means.update({t: list(v) for t, v in by_type.items()})
        self._settle(runs)

    def failed(self, types: list[str], runs: Counter[str]) -> None:
        """A refresh got no answer: ask about its types again later; the tasks held for it go
        on with what is known (a Store that does not answer holds nothing for good)."""
        if types:
            self._stale.update(types)
        else:
            self._started = False
        self._settle(runs)

    def _settle(self, runs: Counter[str]) -> None:
        self._awaiting.subtract(runs)
        for task_type in list(self._awaiting):
            if self._awaiting[task_type] <= 0 or task_type in self.means:
                del self._awaiting[task_type]


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
    learning: Collection[str] = frozenset()
    """Types whose learned IO may have just changed: their tasks wait for it (``IOLearning``)."""


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


def learning_check(task: TaskRow, view: GateView) -> Verdict:
    """Held while the learned IO of the task's type may have changed and is being asked for."""
    if view.monitoring and task.task_type in view.learning:
        return Verdict.HOLD
    return Verdict.ADMIT


def disk_check(task: TaskRow, view: GateView) -> Verdict:
    return _budget(task, view, (0, 1))


def network_check(task: TaskRow, view: GateView) -> Verdict:
    return _budget(task, view, (2, 3))


DEFAULT_CHECKS: tuple[Check, ...] = (throttle_check, learning_check, disk_check, network_check)


def evaluate(task: TaskRow, view: GateView, checks: Sequence[Check] = DEFAULT_CHECKS) -> Verdict:
    for check in checks:
        verdict = check(task, view)
        if verdict is not Verdict.ADMIT:
            return verdict
    return Verdict.ADMIT
