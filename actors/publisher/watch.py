"""``Watch``: the publisher's look at the deployment, once per interval.

Every ``interval_s`` it asks the Store for ``store.metrics`` (one aggregate read of the queue),
the Dispatcher for ``dispatcher.hosts``, and pings the control endpoint of every other actor;
the answers go to the ``OperationsCollector``, which a scrape reads. A question still
unanswered at the next tick is not asked again (a slow Store gets one aggregate read at a time),
and an actor that does not answer simply is not heard: its heartbeat age grows.

The request edges this adds (EventPublisher → Store, → Dispatcher, → control endpoints) point
down the graph: nobody the publisher asks ever waits on it.
"""

from __future__ import annotations

import functools
import logging
from typing import TypeVar

from actors.publisher.operations import OperationsCollector
from bus.client import Peer
from bus.errors import TaskmillError
from bus.kinds import GetStoreMetrics, Ping, StoreMetrics
from bus.kinds_run import GetHosts, HostsReply
from bus.protocol import Message
from bus.runtime import ActorLoop
from bus.topology import Topology

log = logging.getLogger("taskmill.events")

M = TypeVar("M", bound=Message)

MIN_TIMEOUT_S = 2.0

WATCHED = ("store", "dispatcher", "limiter", "monitor")
"""The actors whose heartbeat age the metrics show (executor hosts: through the Dispatcher)."""


class Watch:
    def __init__(self, topology: Topology, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"the metrics interval must be > 0 seconds, got {interval_s!r}")
        self.topology = topology
        self.interval_s = interval_s
        self._store: Peer | None = None
        self._dispatcher: Peer | None = None
        self._controls: dict[str, Peer] = {}
        self._collector: OperationsCollector | None = None

    def start(self, loop: ActorLoop, collector: OperationsCollector) -> None:
        # A slow answer is still an answer: a question waits at least a little longer than
        # an interval (it is not asked again meanwhile) before its series are dropped.
        t, timeout = self.topology, max(2 * self.interval_s, MIN_TIMEOUT_S)
        self._collector = collector
        self._store = Peer(loop, t.store, timeout=timeout)
        self._dispatcher = Peer(loop, t.dispatcher, timeout=timeout)
        controls = {
            "store": t.store_control,
            "dispatcher": t.dispatcher_control,
            "limiter": t.limiter_control,
            "monitor": t.monitor_control,
        }
        self._controls = {name: Peer(loop, controls[name], timeout=timeout) for name in WATCHED}
        loop.call_later(0, self.tick)
        loop.call_every(self.interval_s, self.tick)

    def tick(self) -> None:
        collector = self._collector
        assert collector is not None and self._store is not None and self._dispatcher is not None
        if not self._store.in_flight:
            self._store.request(
                GetStoreMetrics(),
                lambda r: collector.store_answered(_reply(r, StoreMetrics, "store")),
            )
        if not self._dispatcher.in_flight:
            self._dispatcher.request(
                GetHosts(),
                lambda r: collector.dispatcher_answered(_reply(r, HostsReply, "dispatcher")),
            )
        for name, peer in self._controls.items():
            if not peer.in_flight:
                peer.request(Ping(), functools.partial(self._pong, name))

    def _pong(self, name: str, reply: Message | TaskmillError) -> None:
        if not isinstance(reply, TaskmillError) and self._collector is not None:
            self._collector.heard(name)


def _reply(reply: Message | TaskmillError, kind: type[M], actor: str) -> M | None:
    if isinstance(reply, kind):
        return reply
    log.debug("events: no metrics from the %s: %s", actor, reply)
    return None
