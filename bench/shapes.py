"""The shapes: each is one coroutine run against a ``Target`` and returning its metrics.

Every shape times only what it says: building and stopping the deployment are outside the
timings. Completion is observed as a user would, from a subscription opened BEFORE the first
submit, counting ``completed`` events (``EventPump``); if the publisher dropped events for the
subscriber (``missed``), the shape falls back to polling the Store's counts until nothing is
active, and says so in ``events_missed``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.app import read_stamps
from bench.common import EventPump, Metrics, latency_metrics
from bench.targets import Target
from taskmill import Priority, SchedulerEvent, TaskSubmission

WAIT_S = 600.0
"""The longest any shape waits for its tasks to complete."""
STEP_WAIT_S = 15.0
"""The longest a latency shape waits for one task (or one preemption round)."""
TIERS = (Priority.IDLE, Priority.BACKGROUND, Priority.NORMAL, Priority.HIGH, Priority.REALTIME)


def _completed(k: int) -> Callable[[EventPump], bool]:
    return lambda p: p.counts["completed"] >= k


async def _active(target: Target) -> int:
    c = await target.counts()
    return c.pending + c.running + c.paused + c.waiting


async def wait_completed(target: Target, pump: EventPump, n: int, timeout: float = WAIT_S) -> None:
    """Until ``n`` tasks completed (events), or — events having been dropped — none is active."""
    deadline = time.monotonic() + timeout
    await pump.wait(lambda p: p.counts["completed"] >= n or p.missed > 0, timeout)
    if pump.counts["completed"] >= n:
        return
    while await _active(target) > 0:  # events were dropped: ask the Store instead
        if time.monotonic() > deadline:
            raise TimeoutError(f"tasks still active after {timeout}s")
        await asyncio.sleep(0.005)


async def submit_seq(target: Target, n: int) -> Metrics:
    """``n`` sequential awaited submits of distinct tasks (nothing dispatches meanwhile)."""
    subs = [TaskSubmission("noop", key=f"s-{i}") for i in range(n)]
    start = time.perf_counter()
    for sub in subs:
        await target.submit(sub)
    return {"submit_per_s": n / (time.perf_counter() - start)}


async def submit_dup(target: Target, n: int) -> Metrics:
    """One submit, then ``n`` duplicates of it (same key): the dedup path."""
    await target.submit(TaskSubmission("noop", key="same-key"))
    start = time.perf_counter()
    for _ in range(n):
        outcome = await target.submit(TaskSubmission("noop", key="same-key"))
    elapsed = time.perf_counter() - start
    assert outcome.is_duplicate(), outcome
    return {"dup_submit_per_s": n / elapsed}


async def submit_batch(target: Target, size: int, batches: int) -> Metrics:
    """``batches`` calls of ``submit_batch`` with ``size`` distinct tasks each; the median."""
    rates = []
    for b in range(batches):
        subs = [TaskSubmission("noop", key=f"b-{b}-{i}") for i in range(size)]
        start = time.perf_counter()
        outcomes = await target.submit_batch(subs)
        rates.append(size / (time.perf_counter() - start))
        assert len(outcomes) == size
    rates.sort()
    return {"batch_tasks_per_s": rates[len(rates) // 2], "batch_first_tasks_per_s": rates[0]}


async def end_to_end(target: Target, n: int, priorities: Sequence[int] = (128,)) -> Metrics:
    """The reference crate's shape: subscribe, submit ``n`` tasks one by one, then run; timed
    from before the first submit to the last completion."""
    pump = EventPump(await target.subscribe())
    try:
        subs = [
            TaskSubmission("noop", key=f"e-{i}", priority=priorities[i % len(priorities)])
            for i in range(n)
        ]
        start = time.perf_counter()
        for sub in subs:
            await target.submit(sub)
        submitted = time.perf_counter()
        await target.start()
        await wait_completed(target, pump, n)
        end = time.perf_counter()
        return {
            "tasks_per_s": n / (end - start),
            "submit_phase_per_s": n / (submitted - start),
            "run_phase_per_s": n / (end - submitted),
            "events_missed": float(pump.missed),
        }
    finally:
        await pump.close()


async def drain(target: Target, n: int) -> Metrics:
    """The peers' shape: the scheduler runs; one producer submits ``n`` no-op tasks one by one
    (awaited); from the first submit to the last completion. Also the producer's own submit rate
    and the peak RSS of the processes."""
    await target.start()
    pump = EventPump(await target.subscribe())
    try:
        subs = [TaskSubmission("noop", key=f"d-{i}") for i in range(n)]
        start = time.perf_counter()
        for sub in subs:
            await target.submit(sub)
        submitted = time.perf_counter()
        await wait_completed(target, pump, n)
        end = time.perf_counter()
        rss = target.rss_mb()
        metrics = {
            "drain_per_s": n / (end - start),
            "producer_submit_per_s": n / (submitted - start),
            "events_missed": float(pump.missed),
        }
        if "process" in rss:
            metrics["rss_mb"] = rss["process"]
        else:
            actors = {k: v for k, v in rss.items() if k != "producer"}
            metrics["rss_actors_total_mb"] = sum(actors.values())
            metrics["rss_max_actor_mb"] = max(actors.values())
            metrics["rss_producer_mb"] = rss["producer"]
        return metrics
    finally:
        await pump.close()


FULL_GROUP = "full"
"""The group ``bench.app`` limits to one task at a time."""


async def behind_full_group(target: Target, backlog: int, n: int) -> Metrics:
    """Ungrouped work behind a full group: ``backlog`` no-op tasks of ``FULL_GROUP`` (limit 1),
    all HIGH, are queued; the scheduler runs; one producer submits ``n`` ungrouped NORMAL no-op
    tasks one by one, as in ``drain``, timed from the first of those submits to the last of them
    completed. While the group is at its limit the Dispatcher's peeks pass over its backlog."""
    for first in range(0, backlog, 1_000):
        await target.submit_batch(
            [
                TaskSubmission("noop", key=f"f-{i}", priority=Priority.HIGH, group=FULL_GROUP)
                for i in range(first, min(backlog, first + 1_000))
            ]
        )
    await target.start()
    pump = EventPump(await target.subscribe())
    done = 0

    def count(event: SchedulerEvent) -> None:
        nonlocal done
        if event.type == "completed" and getattr(event, "label", "").startswith("u-"):
            done += 1

    pump.listeners.append(count)
    try:
        subs = [TaskSubmission("noop", key=f"u-{i}", label=f"u-{i}") for i in range(n)]
        start = time.perf_counter()
        for sub in subs:
            await target.submit(sub)
        submitted = time.perf_counter()
        await pump.wait(lambda p: done >= n or p.missed > 0, WAIT_S)
        if done < n:
            raise RuntimeError(f"the publisher dropped {pump.missed} events: no figure")
        end = time.perf_counter()
        return {
            "tasks_per_s": n / (end - start),
            "producer_submit_per_s": n / (submitted - start),
        }
    finally:
        await pump.close()


async def idle_latency(target: Target, n: int, stamps: Path, seed: int) -> Metrics:
    """Submit → task start on an idle scheduler: ``n`` tasks spaced 20-100 ms apart (random),
    each stamped by the executor first thing; the next one goes once this one completed."""
    await target.start()
    rng = random.Random(seed)
    pump = EventPump(await target.subscribe())
    submitted: dict[str, float] = {}
    acked: list[float] = []
    try:
        for i in range(n):
            await asyncio.sleep(rng.uniform(0.020, 0.100))
            label = f"l{i}"
            sub = TaskSubmission("stamp", key=label, label=label)
            before = time.perf_counter()
            await target.submit(sub)
            acked.append(time.perf_counter() - before)
            submitted[label] = before
            await pump.wait(_completed(i + 1), STEP_WAIT_S)
    finally:
        await pump.close()
    started = {label: at for kind, label, at in read_stamps(stamps) if kind == "start"}
    latencies = [started[label] - at for label, at in submitted.items()]
    return {**latency_metrics("start", latencies), **latency_metrics("submit_ack", acked)}


class _Holds:
    """Which ``hold`` tasks are holding, from the executors' own stamps (a run's ``hold`` stamp
    after its ``on_cancel`` is registered; a ``cancel`` stamp when its token fires). Events carry
    no run id, so a late event of a preempted run could not tell runs apart: stamps can."""

    def __init__(self, stamps: Path, victims: int) -> None:
        self.stamps = stamps
        self.victims = victims
        self.urgent_done = 0

    def on_event(self, event: SchedulerEvent) -> None:
        if getattr(event, "task_type", None) == "noop" and event.type == "completed":
            self.urgent_done += 1

    def holding(self) -> list[str]:
        balance: dict[str, int] = {}
        for kind, label, _ in read_stamps(self.stamps):
            if kind in ("hold", "cancel"):
                balance[label] = balance.get(label, 0) + (1 if kind == "hold" else -1)
        return sorted(label for label, n in balance.items() if n > 0)

    def urgent_at_least(self, k: int) -> Callable[[EventPump], bool]:
        return lambda _: self.urgent_done >= k

    def all_holding(self, _: EventPump) -> bool:
        return len(self.holding()) == self.victims


async def preemption(target: Target, n: int, victims: int, stamps: Path) -> Metrics:
    """``victims`` BACKGROUND tasks hold every slot; a REALTIME submit preempts them. From just
    before ``submit`` to the first (and the last) victim's token firing; ``n`` rounds, each
    starting once the victims are holding again."""
    await target.start()
    pump = EventPump(await target.subscribe())
    holds = _Holds(stamps, victims)
    pump.listeners.append(holds.on_event)
    submitted: list[float] = []
    try:
        for h in range(victims):
            await target.submit(
                TaskSubmission("hold", key=f"h{h}", label=f"h{h}", priority=Priority.BACKGROUND)
            )
        for i in range(n):
            try:
                await pump.wait(holds.all_holding, STEP_WAIT_S)
            except TimeoutError:
                raise RuntimeError(
                    f"round {i}: only {holds.holding()} holding; events {dict(pump.counts)}"
                ) from None
            before = time.perf_counter()
            await target.submit(TaskSubmission("noop", key=f"u-{i}", priority=Priority.REALTIME))
            submitted.append(before)
            await pump.wait(holds.urgent_at_least(i + 1), STEP_WAIT_S)
    finally:
        await pump.close()
    cancels = sorted(at for kind, _, at in read_stamps(stamps) if kind == "cancel")
    first: list[float] = []
    last: list[float] = []
    bounds = [*submitted[1:], float("inf")]
    for at, until in zip(submitted, bounds, strict=True):
        window = [c - at for c in cancels if at <= c < until]
        if window:
            first.append(window[0])
            last.append(window[-1])
    if len(first) < n:
        raise RuntimeError(f"only {len(first)} of {n} preemptions fired a victim's token")
    return {**latency_metrics("first_victim", first), **latency_metrics("last_victim", last)}


async def _drain_phase(target: Target, pump: EventPump, prefix: str, n: int) -> tuple[float, float]:
    """Submit ``n`` no-op tasks one by one (awaited) and wait for them: tasks per second, and
    this process's CPU µs per task (embedded: every actor's; Procfile: the producer's)."""
    subs = [TaskSubmission("noop", key=f"{prefix}-{i}") for i in range(n)]
    before = pump.counts["completed"]
    start, cpu = time.perf_counter(), time.process_time()
    for sub in subs:
        await target.submit(sub)
    await wait_completed(target, pump, before + n)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


async def scheduled_later(
    target: Target, n: int, scheduled: int, probes: int, stamps: Path, seed: int
) -> Metrics:
    """Tasks due later cost the due ones nothing: a drain of ``n`` no-op tasks with nothing
    scheduled, then ``scheduled`` tasks due over the next hour (5 to 65 minutes from now, so none
    becomes due meanwhile) submitted in batches (untimed), then the same drain twice — the
    first after a warm-up of ``n // 5`` still pays for writing the batches' pages into the
    database (a WAL checkpoint), so the second is the figure (``drain_per_s_100k_later``).
    Then, idle, ``probes`` tasks due 50-150 ms after their submit (random), one at a time: due
    time -> the executor's first stamp."""
    await target.start()
    pump = EventPump(await target.subscribe())
    rng = random.Random(seed)
    try:
        await _drain_phase(target, pump, "warm-a", n // 5)
        none, none_cpu = await _drain_phase(target, pump, "none", n)
        now = time.time()
        for first in range(0, scheduled, 10_000):
            batch = [
                TaskSubmission("noop", key=f"scheduled-{i}").run_at(
                    now + 300.0 + i * 3600.0 / scheduled
                )
                for i in range(first, min(scheduled, first + 10_000))
            ]
            await target.submit_batch(batch)
        assert (await target.counts()).scheduled >= scheduled
        await _drain_phase(target, pump, "warm-b", n // 5)
        later_first, _ = await _drain_phase(target, pump, "later", n)
        later, later_cpu = await _drain_phase(target, pump, "again", n)
        due: dict[str, float] = {}
        for i in range(probes):
            label = f"due{i}"
            delay = rng.uniform(0.050, 0.150)
            wall, mono = time.time(), time.perf_counter()
            sub = TaskSubmission("stamp", key=label, label=label).run_at(wall + delay)
            # The Store keeps due times in whole milliseconds, rounded down.
            due_ms = sub.due_at_ms()
            assert due_ms is not None
            due[label] = mono + (due_ms / 1000 - wall)
            done = pump.counts["completed"]
            await target.submit(sub)
            await pump.wait(_completed(done + 1), STEP_WAIT_S)
    finally:
        await pump.close()
    started = {label: at for kind, label, at in read_stamps(stamps) if kind == "start"}
    lateness = [started[label] - at for label, at in due.items()]
    return {
        "drain_per_s_none": none,
        "drain_per_s_100k_later_first": later_first,
        "drain_per_s_100k_later": later,
        "drain_ratio_100k_later_to_none": later / none,
        "cpu_us_per_task_none": none_cpu,
        "cpu_us_per_task_100k_later": later_cpu,
        "cpu_ratio_100k_later_to_none": later_cpu / none_cpu,
        "due_start_early_ms": max(0.0, -min(lateness)) * 1e3,
        **latency_metrics("due_start", [max(0.0, x) for x in lateness]),
    }
