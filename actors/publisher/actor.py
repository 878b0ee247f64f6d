"""The EventPublisher actor (``events``): numbers scheduler events and publishes them.

Owns the event sequence number, the event counters and, optionally, the Prometheus endpoint.

Sockets:

* PULL bound at ``in_endpoint``: actors PUSH events one-way, each its own kind
  (``event.completed``: a ``bus.events`` class), or several in order as ``events``
  (``EventBatch``). An event kind this version does not know arrives as an ``UnknownEvent`` and
  is published as it came. Malformed frames, and messages of any other kind, are dropped and
  counted (``malformed``), never answered.
* XPUB bound at ``pub_endpoint``: sends each event, numbered, as ``[topic, *event.<type>]``, or a
  run of consecutive events of one topic as ``[topic, *events]``: one message instead of many
  when events come in bursts, unless a subscriber that reads one event per message (its welcome
  token lacks the ``b.`` mark) is connected.
  Topics go general → specific so SUB prefix filters work: ``task.<type>`` for task events
  (``task.`` gets them all), ``scheduler.<type>`` for scheduler-wide ones (paused, resumed,
  anything without a task id). With ``XPUB_VERBOSE`` every subscription frame reaches the actor,
  repeated ones too; a subscription to ``welcome.<token>`` is answered with ``event.welcome``
  (``Welcome(seq)``, seq of the last event published) on that topic, which tells the subscriber
  it is live (``bus.subscribe``). The XPUB is a ``bus.publishing.PublishingSocket``: past
  ``max_subscriptions`` distinct topics (or ``MAX_SUBSCRIPTION_TOPIC_BYTES`` of them) it is
  closed and bound again, which frees what libzmq kept of them; subscribers connect again and
  are welcomed again.
* the control ROUTER every actor has (ping, stats, stop), bound by the runtime.

Back-pressure: ``SNDHWM = queue_limit`` messages per subscriber (a batch, at most ``MAX_BATCH``
events, is one). A subscriber
that stops reading never blocks the publisher: past its queue the XPUB drops that subscriber's
events (it sees a gap in ``seq``) while the others keep receiving. libzmq drops silently, so
``dropped`` counts only the sends that fail outright (``zmq.Again``).

Timers: with metrics served and a deployment to ``watch``, every ``metrics_interval_s`` the
``Watch`` asks the Store for ``store.metrics``, the Dispatcher for ``dispatcher.hosts`` and pings
the other actors (DEALERs of its own; see ``actors.publisher.watch``). The Prometheus endpoint
(``metrics_port``) is served by its own HTTP thread from a private registry without ``_created``
series, and shut down in ``on_stop``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, TypeGuard
from wsgiref.simple_server import WSGIServer

import zmq
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from actors.publisher.labels import LabelCap
from actors.publisher.operations import OperationsCollector
from actors.publisher.registry import PlainRegistry
from actors.publisher.watch import WATCHED, Watch
from bus.clock import Clock, SystemClock, now_ms
from bus.events import (
    EVENT_TYPES,
    Completed,
    Dispatched,
    EventBatch,
    Failed,
    HostResources,
    Resources,
    SchedulerEvent,
    TaskEvent,
    UnknownEvent,
    stamp,
    topic_for,
)
from bus.kinds_run import Welcome
from bus.limits import MAX_SUBSCRIPTIONS
from bus.protocol import MAX_FRAME_BYTES, Message, encode
from bus.publishing import PublishingSocket
from bus.runtime import Actor, ActorLoop
from bus.server import Inbox
from bus.tiers import tier_of
from bus.topology import Topology

log = logging.getLogger("taskmill.events")

TASK_EVENTS = frozenset(t for t, cls in EVENT_TYPES.items() if issubclass(cls, TaskEvent))
SCHEDULER_EVENTS = frozenset(EVENT_TYPES) - TASK_EVENTS
__all__ = ["SCHEDULER_EVENTS", "TASK_EVENTS", "EventMetrics", "EventPublisher", "topic_for"]
WELCOME_PREFIX = b"welcome."
BATCH_WELCOME_PREFIX = b"welcome.b."
"""The welcome topic of a subscriber that reads batches (``events``) as well as single events."""
_SUBSCRIBE, _UNSUBSCRIBE = 1, 0

MAX_BATCH = 16
"""Most events in one published message (a run of one topic). SNDHWM counts messages, so a
subscriber that stops reading holds at most ``queue_limit`` times this many events."""

MAX_BATCH_BYTES = MAX_FRAME_BYTES // 4
"""Largest batch body; a run whose batch would be larger goes one event per message."""

RESOURCE_SERIES = (
    ("cpu", "cpu_usage_ratio", "Smoothed CPU usage, 0..1"),
    ("disk_read_bps", "disk_read_bytes_per_second", "Smoothed disk read rate"),
    ("disk_write_bps", "disk_write_bytes_per_second", "Smoothed disk write rate"),
    ("net_rx_bps", "network_receive_bytes_per_second", "Smoothed network rx rate"),
    ("net_tx_bps", "network_transmit_bytes_per_second", "Smoothed network tx rate"),
)
"""The readings as gauges: (field of the event, metric name after ``taskmill_``, help)."""


def _published(topic: bytes, run: list[SchedulerEvent]) -> list[list[bytes]]:
    """The messages for a run of one topic: one batch, or each event alone when the run is of
    one event or its batch would be too large for a frame (events with very large fields)."""
    if len(run) > 1:
        frames = encode(EventBatch(run))
        if len(frames[3]) <= MAX_BATCH_BYTES:
            return [[topic, *frames]]
    return [[topic, *encode(event)] for event in run]


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class EventMetrics:
    """The publisher's Prometheus series, on a registry of their own (no global state)."""

    def __init__(self) -> None:
        self.registry = PlainRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter("taskmill_events", "Events published, by type.", ["type"], registry=r)
        self.completed = Counter(
            "taskmill_tasks_completed", "Tasks completed, by task type.", ["task_type"], registry=r
        )
        self.failed = Counter(
            "taskmill_tasks_failed", "Task runs failed, by task type.", ["task_type"], registry=r
        )
        self.duration = Histogram(
            "taskmill_task_duration_seconds",
            "Run time of finished tasks whose event carries duration_ms.",
            ["task_type"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.dropped = Counter(
            "taskmill_events_dropped", "Event sends the XPUB refused.", registry=r
        )
        self.subscriptions = Counter(
            "taskmill_subscriptions",
            "Subscription frames seen (welcome topics included).",
            registry=r,
        )
        self.retried = Counter(
            "taskmill_tasks_retried",
            "Failed runs that will retry, by task type.",
            ["task_type"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "taskmill_tasks_dead_lettered",
            "Tasks out of retries, kept in the dead letter, by task type.",
            ["task_type"],
            registry=r,
        )
        self.expired = Counter(
            "taskmill_tasks_expired",
            "Tasks past their TTL that never started, by task type.",
            ["task_type"],
            registry=r,
        )
        self.recurring = Counter(
            "taskmill_recurring_completed",
            "Runs of recurring tasks completed, by task type.",
            ["task_type"],
            registry=r,
        )
        self.preempted = Counter(
            "taskmill_tasks_preempted",
            "Running tasks preempted, by task type.",
            ["task_type"],
            registry=r,
        )
        self.dispatched = Counter(
            "taskmill_tasks_dispatched",
            "Runs sent to an executor host, by task type.",
            ["task_type"],
            registry=r,
        )
        self.cancelled = Counter(
            "taskmill_tasks_cancelled", "Tasks cancelled, by task type.", ["task_type"], registry=r
        )
        self.wait = Histogram(
            "taskmill_task_wait_seconds",
            "Submission to first start, by priority tier (from dispatched events).",
            ["tier"],
            registry=r,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.pressure = Gauge("taskmill_pressure", "Combined backpressure, 0..1.", registry=r)
        self.source_pressure = Gauge(
            "taskmill_pressure_source", "Backpressure per source, 0..1.", ["source"], registry=r
        )
        self.resource = {
            key: Gauge(f"taskmill_{name}", f"{text}.", registry=r)
            for key, name, text in RESOURCE_SERIES
        }
        self.host_resource = {
            key: Gauge(
                f"taskmill_host_{name}",
                f"{text} of the machine of an executor host that samples its own, by host.",
                ["host"],
                registry=r,
            )
            for key, name, text in RESOURCE_SERIES
        }
        self._by_type = {
            "dead_lettered": self.dead_lettered,
            "expired": self.expired,
            "recurring_completed": self.recurring,
            "cancelled": self.cancelled,
            "preempted": self.preempted,
        }
        """The counters by task type of the events counted once each, by event type."""
        self.sources = LabelCap()
        self.hosts = LabelCap()
        """Host labels: hosts come and go with their ids, so the series stay bounded."""
        self._children: dict[tuple[int, str], Any] = {}

    def observe(self, type_label: str, task_type: str, event: SchedulerEvent) -> None:
        """Count one event under its (bounded) type and task type labels, reading its fields."""
        self._child(self.events, type_label).inc()
        if isinstance(event, Completed):
            self._child(self.completed, task_type).inc()
            if event.duration_ms is not None:
                self._child(self.duration, task_type).observe(max(0.0, event.duration_ms / 1000))
        elif isinstance(event, Dispatched):
            self._dispatched(task_type, event)
        elif isinstance(event, Failed):
            counter = self.retried if event.will_retry else self.failed
            self._child(counter, task_type).inc()
        elif isinstance(event, Resources):
            self._resources(event)
        elif isinstance(event, HostResources):
            self._host_resources(event)
        elif type_label in self._by_type:
            self._child(self._by_type[type_label], task_type).inc()

    def _dispatched(self, task_type: str, event: Dispatched) -> None:
        self._child(self.dispatched, task_type).inc()
        if event.wait_ms is not None and event.base_priority is not None:
            tier = tier_of(event.base_priority)
            self._child(self.wait, tier).observe(max(0.0, event.wait_ms / 1000))

    def _child(self, metric: Any, label: str) -> Any:
        """``metric.labels(label)``, kept: labels() validates and locks on every call. Labels
        are bounded (``LabelCap``), so the cache is too."""
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(label)
        return child

    def _resources(self, event: Resources) -> None:
        for name, gauge in self.resource.items():
            gauge.set(getattr(event, name))
        self.pressure.set(event.pressure)
        for item in event.breakdown:
            if len(item) == 2 and isinstance(item[0], str) and _number(item[1]):
                source, value = item
                self.source_pressure.labels(source=self.sources(source)).set(value)

    def _host_resources(self, event: HostResources) -> None:
        """One host's readings of its machine; hosts past ``MAX_LABEL_VALUES`` share ``other``."""
        label = self.hosts(event.host)
        for name, gauge in self.host_resource.items():
            self._child(gauge, label).set(getattr(event, name))


class EventPublisher(Actor):
    """Republishes pushed events on an XPUB, numbered, and welcomes subscribers."""

    name = "events"

    def __init__(
        self,
        in_endpoint: str,
        pub_endpoint: str,
        *,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        queue_limit: int = 10_000,
        watch: Topology | None = None,
        metrics_interval_s: float = 5.0,
        max_subscriptions: int = MAX_SUBSCRIPTIONS,
    ) -> None:
        """``watch``: the deployment whose state the metrics show besides the events (the
        Store's queue, the Dispatcher's hosts, the actors' heartbeats), asked every
        ``metrics_interval_s`` while the metrics are served."""
        if queue_limit < 1:
            raise ValueError("queue_limit must be at least 1")
        if max_subscriptions < 1:
            raise ValueError("max_subscriptions must be at least 1")
        self.in_endpoint = in_endpoint
        self.pub_endpoint = pub_endpoint
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        """The port asked for; after ``setup``, the port bound (0 picks a free one)."""
        self.queue_limit = queue_limit
        self.watch = None if watch is None else Watch(watch, metrics_interval_s)
        self.max_subscriptions = max_subscriptions
        self.clock: Clock = SystemClock()
        self.metrics = EventMetrics()
        self.seq = 0
        self.published = 0
        self.by_type: dict[str, int] = {}
        self.dropped = 0
        self.unexpected = 0
        self.subscriptions = 0
        self.unsubscriptions = 0
        self.welcomes = 0
        self._single_only: set[bytes] = set()
        """Welcome topics of connected subscribers that read one event per message only."""
        self._type_label = LabelCap()
        self._task_type_label = LabelCap()
        self._inbox: Inbox | None = None
        self._xpub: PublishingSocket | None = None
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    # -- handlers (no sockets: they return the frames to send) ---------------------------------

    def on_events(self, messages: Sequence[Message]) -> list[list[bytes]]:
        """Number each event (an event, or the events of an ``EventBatch``), time it if it came
        untimed, and return the messages to publish: a run of consecutive events of one topic
        goes as one ``EventBatch`` (at most ``MAX_BATCH``), a lone event as itself. Other kinds
        are counted and dropped."""
        out: list[list[bytes]] = []
        run: list[SchedulerEvent] = []
        run_topic = b""
        limit = MAX_BATCH if self.batching else 1
        clock_ms = 0
        for event in self._events_in(messages):
            self.seq += 1
            if not event.at_ms and not clock_ms:
                clock_ms = now_ms(self.clock)
            stamp(event, self.seq, clock_ms)  # decoded here: the publisher's own copy
            topic = event.TOPIC
            if run and (topic != run_topic or len(run) >= limit):
                out += _published(run_topic, run)
                run = []
            run_topic = topic
            run.append(event)
            self._count(event)
        if run:
            out += _published(run_topic, run)
        return out

    def _events_in(self, messages: Sequence[Message]) -> Iterator[SchedulerEvent]:
        for message in messages:
            if isinstance(message, SchedulerEvent):
                yield message
            elif isinstance(message, EventBatch):
                yield from message.events
            else:
                self.unexpected += 1
                log.debug("events: dropped a %s pushed to the event inbox", message.KIND)

    def _count(self, event: SchedulerEvent) -> None:
        self.published += 1
        type_label = self._type_label(event.type)
        self.by_type[type_label] = self.by_type.get(type_label, 0) + 1
        if isinstance(event, TaskEvent):
            task_type: object = event.task_type
        elif type(event) is UnknownEvent:
            task_type = event.raw.get("task_type", "unknown")
        else:
            task_type = "unknown"
        self.metrics.observe(type_label, self._task_type_label(task_type), event)

    def on_subscription(self, frame: bytes) -> list[bytes] | None:
        """Account for one XPUB frame; the welcome to send when it subscribes to ``welcome.*``."""
        if not frame:
            return None
        topic = bytes(frame[1:])
        welcome = topic.startswith(WELCOME_PREFIX) and topic != WELCOME_PREFIX
        if frame[0] == _UNSUBSCRIBE:
            self.unsubscriptions += 1
            self._single_only.discard(topic)  # that subscriber left (its token is its own)
            return None
        if frame[0] != _SUBSCRIBE:
            return None  # not a subscription (XPUB passes user messages through): ignore
        self.subscriptions += 1
        self.metrics.subscriptions.inc()
        if not welcome:
            return None
        if not topic.startswith(BATCH_WELCOME_PREFIX):
            self._single_only.add(topic)  # reads no batches: single events only for it
        self.welcomes += 1
        return [topic, *encode(Welcome(self.seq))]

    @property
    def batching(self) -> bool:
        """Whether runs of events go as ``events`` batches: unless a subscriber that does not
        know that kind (its welcome token lacks the ``b.`` mark of protocol 1.1) is connected."""
        return not self._single_only

    def stats(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "published": self.published,
            "by_type": dict(self.by_type),
            "dropped": self.dropped,
            "malformed": (self._inbox.dropped if self._inbox else 0) + self.unexpected,
            "subscriptions": self.subscriptions,
            "unsubscriptions": self.unsubscriptions,
            "welcomes": self.welcomes,
            "batching": self.batching,
            "queue_limit": self.queue_limit,
            **(self._xpub.stats() if self._xpub else {}),
            "metrics_port": self.metrics_port if self._http else None,
        }

    # -- the loop ------------------------------------------------------------------------------

    def setup(self, loop: ActorLoop) -> None:
        self.clock = loop.clock
        self._xpub = PublishingSocket(
            loop,
            self.pub_endpoint,
            name=self.name,
            hwm=self.queue_limit,  # what waits for each subscriber
            verbose=True,
            on_frame=self._on_xpub,
            on_rebind=self._single_only.clear,  # every subscriber is gone, until it resubscribes
            max_topics=self.max_subscriptions,
        )
        pull = loop.socket(zmq.PULL)
        loop.bind(pull, self.in_endpoint)
        self._inbox = Inbox(loop, pull, self._on_inbox)
        if self.metrics_port is not None and self.watch is not None:
            collector = OperationsCollector(loop.clock, self._task_type_label, WATCHED)
            self.metrics.registry.register(collector)
            self.watch.start(loop, collector)
        # Last: a failure above leaves no HTTP thread behind (on_stop is not called then).
        if self.metrics_port is not None:
            server, thread = start_http_server(
                self.metrics_port, self.metrics_host, registry=self.metrics.registry
            )
            self._http = (server, thread)
            self.metrics_port = int(server.server_port)

    def _on_inbox(self, messages: list[Message]) -> None:
        for frames in self.on_events(messages):
            self._send(frames)

    def _on_xpub(self, frame: bytes) -> None:
        welcome = self.on_subscription(frame)
        if welcome is not None:
            self._send(welcome)

    def _send(self, frames: list[bytes]) -> None:
        assert self._xpub is not None
        try:
            self._xpub.send(frames)
        except zmq.Again:
            self.dropped += 1
            self.metrics.dropped.inc()

    def on_stop(self) -> None:
        if self._http is not None:
            server, thread = self._http
            self._http = None
            server.shutdown()
            server.server_close()
            thread.join(5.0)
