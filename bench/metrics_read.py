"""What the metrics endpoint's read of the queue costs the Store, by queue depth.

A real ``StoreActor`` in its thread over inproc (``bench_store.store``), ``depth`` pending tasks
of every priority inserted straight through ``StoreDB`` (``bench_store.fill``; untimed). Each
round times one ``store.metrics`` request: the aggregate read the EventPublisher makes once per
metrics interval, during which the Store serves nothing else.

    python3 -m bench.metrics_read --depth 10000 --depth 100000 --rounds 20
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.bench_store import fill, store
from bench.common import percentile
from bus.client import RequestClient
from bus.kinds import GetStoreMetrics, StoreMetrics


def read_cost(work: Path, depth: int, rounds: int) -> tuple[float, float]:
    """Median and p99 seconds of one ``store.metrics`` with ``depth`` tasks pending."""
    db_file = work / f"queue-{depth}.db"
    fill(db_file, depth)
    times: list[float] = []
    with store(db_file) as (context, endpoint):
        client = RequestClient(context, endpoint, timeout=60)
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                reply = client.call(GetStoreMetrics(), StoreMetrics)
                times.append(time.perf_counter() - start)
                assert sum(c.count for c in reply.counts) == depth
        finally:
            client.close()
    return percentile(times, 0.5), percentile(times, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, action="append", help="pending tasks (repeatable)")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for depth in args.depth or [10_000, 100_000]:
            median, p99 = read_cost(Path(work), depth, args.rounds)
            ms = f"median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
            print(f"depth {depth:>9,}: store.metrics {ms}")


if __name__ == "__main__":
    main()
