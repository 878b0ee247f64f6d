"""``PlainRegistry``: the publisher's metrics registry, without ``_created`` series.

prometheus_client adds a ``<name>_created`` sample (the Unix time the series began) to every
counter and histogram. Prometheus stores it as one more series per child, which dashboards never
read. Turning it off process-wide (``disable_created_metrics``) would change the metrics of an
application embedding the scheduler too, so the publisher's own registry drops the samples as
they are collected instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric


def _plain(metrics: Iterable[Metric]) -> Iterator[Metric]:
    for metric in metrics:
        metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
        yield metric


class _PlainView:
    """A restricted view (``?name[]=...`` scrapes) of a ``PlainRegistry``, plain too."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        return _plain(self._inner.collect())


class PlainRegistry(CollectorRegistry):
    def collect(self) -> Iterator[Metric]:
        return _plain(super().collect())

    def restricted_registry(self, names: Iterable[str]) -> Any:
        return _PlainView(super().restricted_registry(names))
