"""Store throughput and dispatch latency, on a file-backed database in a temporary directory.

A real ``StoreActor`` in its thread, reached over inproc like the embedded scheduler reaches it:

* sequential submits — one ``await`` at a time through ``AsyncRequester``;
* concurrent submits — 1,000 requests in flight (this is where group commit pays);
* ``submit_batch`` of 1,000 tasks per request;
* peek + claim round trips (what one dispatch costs) with 100, 10,000 and 1,000,000 pending
  tasks, the queue inserted directly through ``StoreDB`` (the million takes about half a minute
  to insert; ``--quick`` leaves it out). The claimed rows are released again after each timed
  round, so the queue keeps its depth.

Run: ``PYTHONPATH=. python bench/bench_store.py [--quick] [--seconds S]``. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq

from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.client import AsyncRequester, RequestClient
from bus.clock import SystemClock
from bus.endpoints import inproc, new_namespace
from bus.hosting import ActorThread
from bus.kinds import (
    Claim,
    ClaimSpec,
    FinishReply,
    Peek,
    Release,
    Submission,
    Submit,
    SubmitReply,
    TasksReply,
)

PAYLOAD = b"x" * 64


def submission(n: int, priority: int = 128) -> Submission:
    return Submission(
        "bench", hashlib.sha256(b"%d" % n).hexdigest(), f"task {n}", priority, PAYLOAD
    )


@contextmanager
def store(db_file: Path) -> Iterator[tuple[zmq.Context[Any], str]]:
    context: zmq.Context[Any] = zmq.Context()
    namespace = new_namespace()
    endpoint = inproc(namespace, "store")
    actor = StoreActor(
        lambda: StoreDB(str(db_file), clock=SystemClock()),
        endpoint,
    )
    thread = ActorThread(actor, context, inproc(namespace, "store-control")).start()
    try:
        yield context, endpoint
    finally:
        thread.stop()
        context.term()


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


async def sequential(context: zmq.Context[Any], endpoint: str, seconds: float) -> float:
    client = AsyncRequester(context, endpoint, timeout=30)
    ids = Counter()
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await client.call(Submit([submission(ids.next())]), SubmitReply)
        done += 1
    elapsed = time.perf_counter() - start
    client.close()
    return done / elapsed


async def concurrent(
    context: zmq.Context[Any], endpoint: str, total: int, in_flight: int, base: int
) -> float:
    client = AsyncRequester(context, endpoint, timeout=60)
    queue = iter(range(base, base + total))

    async def worker() -> None:
        for n in queue:  # the workers share one iterator: ``in_flight`` requests at a time
            await client.call(Submit([submission(n)]), SubmitReply)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - start
    client.close()
    return total / elapsed


async def batches(
    context: zmq.Context[Any], endpoint: str, count: int, size: int, base: int
) -> float:
    client = AsyncRequester(context, endpoint, timeout=60)
    start = time.perf_counter()
    for b in range(count):
        first = base + b * size
        subs = [submission(n) for n in range(first, first + size)]
        await client.call(Submit(subs), SubmitReply)
    elapsed = time.perf_counter() - start
    client.close()
    return count * size / elapsed


def fill(db_file: Path, pending: int, chunk: int = 20_000) -> float:
    """Insert ``pending`` tasks straight into the database; seconds taken."""
    start = time.perf_counter()
    db = StoreDB(str(db_file), clock=SystemClock())
    for first in range(0, pending, chunk):
        db.submit([submission(n, n % 256) for n in range(first, min(pending, first + chunk))])
    db.close()
    return time.perf_counter() - start


def dispatch_latency(db_file: Path, rounds: int, per_round: int = 4) -> tuple[float, float]:
    """Median and p99 of one peek + claim round trip, microseconds (the release untimed)."""
    with store(db_file) as (context, endpoint):
        client = RequestClient(context, endpoint, timeout=30)
        samples: list[float] = []
        for _ in range(rounds):
            start = time.perf_counter()
            rows = client.call(Peek(ClaimSpec(per_round)), TasksReply).tasks
            claimed = client.call(Claim([r.id for r in rows]), TasksReply).tasks
            samples.append((time.perf_counter() - start) * 1e6)
            assert len(claimed) == per_round
            client.call(Release([r.id for r in claimed], "bench"), FinishReply)
        client.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out 1,000,000 pending")
    parser.add_argument("--seconds", type=float, default=3.0, help="sequential run length")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="taskmill-bench-") as tmp:
        work = Path(tmp)
        with store(work / "submit.db") as (context, endpoint):
            rate = asyncio.run(sequential(context, endpoint, args.seconds))
            rows.append(("sequential awaited submits", f"{rate:,.0f} /s"))
            rate = asyncio.run(concurrent(context, endpoint, 50_000, 1_000, 10_000_000))
            rows.append(("concurrent submits, 1,000 in flight", f"{rate:,.0f} /s"))
            rate = asyncio.run(batches(context, endpoint, 50, 1_000, 20_000_000))
            rows.append(("submit_batch of 1,000 (tasks)", f"{rate:,.0f} /s"))
        sizes = [100, 10_000] + ([] if args.quick else [1_000_000])
        for pending in sizes:
            db_file = work / f"queue-{pending}.db"
            took = fill(db_file, pending)
            median, p99 = dispatch_latency(db_file, rounds=1_000)
            rows.append(
                (
                    f"peek(4) + claim, {pending:,} pending",
                    f"median {median:,.0f} us, p99 {p99:,.0f} us (filled in {took:.1f}s)",
                )
            )
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 50}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
