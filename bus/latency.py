"""``Latencies``: a latency histogram an actor keeps and another actor exposes.

The Store times its transactions; the EventPublisher, which serves the metrics, asks for them
once per scrape interval. The counts are cumulative since the actor started, so a restart reads
as a counter reset, which Prometheus's ``rate`` already handles.
"""

from __future__ import annotations

import bisect

from bus.kinds import LatencyHistogram

LATENCY_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Bucket bounds for work measured in milliseconds: a transaction, a round trip."""


class Latencies:
    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum_s = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum_s += seconds

    def to_wire(self) -> LatencyHistogram:
        return LatencyHistogram(list(self.bounds), list(self.counts), self.sum_s)
