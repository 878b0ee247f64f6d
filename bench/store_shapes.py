"""Store-level shapes: peek and claim latency with a queue of a given depth.

A real ``StoreActor`` in its thread over inproc (``bench_store.store``), the queue inserted
straight through ``StoreDB`` (``bench_store.fill``; untimed). Each round times one ``peek(1)``
(the reference crate's ``peek_next``), then one ``peek(4)`` + ``claim`` (what one dispatch at
concurrency 4 costs); the claimed rows are released again, untimed, so the depth stays.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.bench_store import fill, store
from bench.common import Metrics, percentile
from bus.client import RequestClient
from bus.kinds import Claim, FinishReply, Peek, Release, TasksReply


def peek_claim(work: Path, pending: int, rounds: int, per_round: int = 4) -> Metrics:
    db_file = work / "queue.db"
    filled_s = fill(db_file, pending)
    peeks: list[float] = []
    dispatches: list[float] = []
    with store(db_file) as (context, endpoint):
        client = RequestClient(context, endpoint, timeout=30)
        try:
            for _ in range(rounds):
                start = time.perf_counter()
                rows = client.call(Peek(1), TasksReply).tasks
                peeks.append(time.perf_counter() - start)
                assert len(rows) == 1
                start = time.perf_counter()
                rows = client.call(Peek(per_round), TasksReply).tasks
                claimed = client.call(Claim([r.id for r in rows]), TasksReply).tasks
                dispatches.append(time.perf_counter() - start)
                assert len(claimed) == per_round
                client.call(Release([r.id for r in claimed], "bench"), FinishReply)
        finally:
            client.close()
    return {
        "peek1_p50_us": percentile(peeks, 0.5) * 1e6,
        "peek1_p99_us": percentile(peeks, 0.99) * 1e6,
        "peek4_claim_p50_us": percentile(dispatches, 0.5) * 1e6,
        "peek4_claim_p99_us": percentile(dispatches, 0.99) * 1e6,
        "fill_s": filled_s,
    }
