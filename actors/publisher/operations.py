"""``OperationsCollector``: the state of the deployment as Prometheus series, read at scrape time.

The event counters say what happened; these say how things are: the queue by status, tier and
type, how long the oldest ready task of each tier has waited, running tasks per group, the
executor hosts and their free slots, whether dispatching is paused, how long since each actor
last answered, and the Store's transaction latencies. The ``Watch`` feeds the latest answers of
the Store and the Dispatcher here once per interval; a scrape reads them without asking anyone,
so a scrape never adds a message, and a task never does.

Labels stay bounded: task types share the publisher's ``LabelCap`` with the event counters,
groups and hosts have caps of their own, and values past a cap add up in ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from actors.publisher.labels import LabelCap
from bus.clock import Clock
from bus.kinds import QUEUE_STATUSES, LatencyHistogram, StoreMetrics
from bus.kinds_run import HostsReply
from bus.tiers import TIERS

WAITING_REASONS = ("scheduled", "blocked")
"""Why a task that is not running waits, as ``taskmill_tasks_waiting{reason}``: ``scheduled``
(due later). Another reason (a task blocked on others, say) is one more name here and one more
count in ``_waiting``."""


@dataclass(frozen=True, slots=True)
class _Queue:
    """The Store's answer with its labels capped (on the publisher's loop, the caps' one
    thread), and when it came (the collector's clock, seconds)."""

    at: float
    counts: dict[tuple[str, str], int]
    """(status, tier) → tasks."""
    by_type: dict[tuple[str, str], int]
    """(status, capped task type) → tasks; pending ones only while the Store split them."""
    oldest_ms: dict[str, int]
    waiting: dict[str, int]
    by_group: dict[str, int]
    submitted: int
    transactions: LatencyHistogram | None


@dataclass(frozen=True, slots=True)
class _Hosts:
    at: float
    rows: dict[str, tuple[int, int, float]]
    """Capped host label → (free slots, capacity, heartbeat age at ``at``)."""
    count: int
    paused: bool


class OperationsCollector:
    def __init__(self, clock: Clock, task_types: LabelCap, actors: tuple[str, ...]) -> None:
        self.clock = clock
        self.task_types = task_types
        self.groups = LabelCap()
        self.hosts = LabelCap()
        self._lock = threading.Lock()
        self._store: _Queue | None = None
        self._dispatcher: _Hosts | None = None
        started = clock.monotonic()
        self._heard: dict[str, float] = dict.fromkeys(actors, started)
        """When each watched actor last answered (until then: when the publisher started)."""

    # -- fed by the publisher's loop ---------------------------------------------------------

    def store_answered(self, reply: StoreMetrics | None) -> None:
        """The Store's metrics; None when it did not answer (its series disappear)."""
        queue = None if reply is None else self._capped_queue(reply)
        with self._lock:
            self._store = queue

    def dispatcher_answered(self, reply: HostsReply | None) -> None:
        """The Dispatcher's hosts; None when it did not answer (their series disappear)."""
        hosts = None if reply is None else self._capped_hosts(reply)
        with self._lock:
            self._dispatcher = hosts

    def _capped_queue(self, reply: StoreMetrics) -> _Queue:
        # Every status and tier, none left out: an empty queue reads 0, not "no data".
        counts = {(status, tier): 0 for status in QUEUE_STATUSES for tier, _ in TIERS}
        by_type: dict[tuple[str, str], int] = {}
        oldest: dict[str, int] = {}
        waiting = dict.fromkeys(WAITING_REASONS, 0)
        for row in reply.counts:
            key = (row.status, row.tier)
            counts[key] = counts.get(key, 0) + row.count
            if row.task_type is not None:
                typed = (row.status, self.task_types(row.task_type))
                by_type[typed] = by_type.get(typed, 0) + row.count
            if row.ready_since_ms is not None:
                oldest[row.tier] = min(oldest.get(row.tier, row.ready_since_ms), row.ready_since_ms)
            if row.status in waiting:
                waiting[row.status] += row.count
        by_group: dict[str, int] = {}
        for group, count in reply.running_by_group.items():
            label = self.groups(group)
            by_group[label] = by_group.get(label, 0) + count
        return _Queue(
            self.clock.monotonic(),
            counts,
            by_type,
            oldest,
            waiting,
            by_group,
            reply.submitted,
            reply.transactions,
        )

    def _capped_hosts(self, reply: HostsReply) -> _Hosts:
        rows: dict[str, tuple[int, int, float]] = {}
        for host in reply.hosts:
            free, slots, silence = rows.get(self.hosts(host.host_id), (0, 0, 0.0))
            rows[self.hosts(host.host_id)] = (
                free + max(0, host.capacity - host.running),
                slots + host.capacity,
                max(silence, host.heartbeat_age_s),
            )
        return _Hosts(self.clock.monotonic(), rows, len(reply.hosts), reply.paused)

    def heard(self, actor: str) -> None:
        with self._lock:
            self._heard[actor] = self.clock.monotonic()

    # -- read by the HTTP thread -------------------------------------------------------------

    def describe(self) -> list[Metric]:
        return []  # families vary with what the actors answered: no fixed description

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queue, hosts, heard = self._store, self._dispatcher, dict(self._heard)
        now = self.clock.monotonic()
        yield self._liveness(heard, now)
        if queue is not None:
            yield from self._queue(queue, now)
        if hosts is not None:
            yield from self._hosts(hosts, now)

    def _liveness(self, heard: dict[str, float], now: float) -> Metric:
        family = GaugeMetricFamily(
            "taskmill_actor_heartbeat_age_seconds",
            "Seconds since the actor last answered the publisher's ping.",
            labels=["actor"],
        )
        for actor, at in sorted(heard.items()):
            family.add_metric([actor], max(0.0, now - at))
        return family

    def _queue(self, queue: _Queue, now: float) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "taskmill_tasks", "Active tasks by status and priority tier.", labels=["status", "tier"]
        )
        for key, count in sorted(queue.counts.items()):
            tasks.add_metric(list(key), count)
        yield tasks
        typed = GaugeMetricFamily(
            "taskmill_tasks_by_type",
            "Active tasks by status and task type (pending ones while at most 5,000 wait).",
            labels=["status", "task_type"],
        )
        for key, count in sorted(queue.by_type.items()):
            typed.add_metric(list(key), count)
        yield typed
        # The Store's wall clock stamped the tasks; the ages read against this process's (a
        # deployment's processes share a machine, or synchronised clocks).
        wall_ms = self.clock.time() * 1000
        age = GaugeMetricFamily(
            "taskmill_oldest_ready_age_seconds",
            "Seconds the longest-waiting ready (pending) task of each priority tier has waited "
            "(0: none waits).",
            labels=["tier"],
        )
        for tier, _ in TIERS:
            since = queue.oldest_ms.get(tier)
            age.add_metric([tier], 0.0 if since is None else max(0.0, (wall_ms - since) / 1000))
        yield age
        waiting = GaugeMetricFamily(
            "taskmill_tasks_waiting",
            "Tasks neither running nor ready, by why they wait.",
            labels=["reason"],
        )
        for reason, count in queue.waiting.items():
            waiting.add_metric([reason], count)
        yield waiting
        groups = GaugeMetricFamily(
            "taskmill_group_running_tasks", "Running tasks per concurrency group.", labels=["group"]
        )
        for group, count in sorted(queue.by_group.items()):
            groups.add_metric([group], count)
        yield groups
        yield CounterMetricFamily(
            "taskmill_tasks_submitted",
            "Tasks inserted since the Store started (duplicates not counted).",
            value=queue.submitted,
        )
        if queue.transactions is not None:
            yield _histogram(
                "taskmill_store_transaction_seconds",
                "How long the Store's transactions took, commit included.",
                queue.transactions,
            )

    def _hosts(self, hosts: _Hosts, now: float) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "taskmill_hosts", "Executor hosts connected to the Dispatcher.", value=hosts.count
        )
        yield GaugeMetricFamily(
            "taskmill_scheduler_paused",
            "1 while dispatching is paused (pause_all), else 0.",
            value=1 if hosts.paused else 0,
        )
        free = GaugeMetricFamily(
            "taskmill_host_free_slots", "Tasks an executor host could start now.", labels=["host"]
        )
        capacity = GaugeMetricFamily(
            "taskmill_host_capacity", "Tasks an executor host runs at once.", labels=["host"]
        )
        silent = GaugeMetricFamily(
            "taskmill_host_heartbeat_age_seconds",
            "Seconds since the Dispatcher last heard from an executor host.",
            labels=["host"],
        )
        for host_id, (free_slots, slots, silence) in sorted(hosts.rows.items()):
            free.add_metric([host_id], free_slots)
            capacity.add_metric([host_id], slots)
            silent.add_metric([host_id], silence + now - hosts.at)
        yield from (free, capacity, silent)


def _histogram(name: str, documentation: str, wire: LatencyHistogram) -> Metric:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*wire.bounds, float("inf")], wire.counts, strict=False):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=wire.sum_s)
