"""Every shape of the suite by name, and how one run of one shape is carried out.

Names are ``<mode>.<shape>``: ``embedded.*`` and ``procfile.*`` (the same shape against both
deployments) and ``store.*`` (the Store actor alone). ``python -m bench.child NAME`` runs one
shape once in a fresh process; ``bench/run.py`` runs each shape that many times and summarises.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import shapes
from bench.app import SINK, STAMPS_ENV
from bench.common import Metrics
from bench.dependency_shapes import dependency_graph, unblock
from bench.store_shapes import batch_growth, floor, peek_claim, saturated_group, scheduled_100k
from bench.targets import target

MODES = ("embedded", "procfile")


@dataclass(frozen=True)
class Options:
    quick: bool = False
    big: bool = False
    seed: int = 1


@dataclass(frozen=True)
class Shape:
    name: str
    what: str
    headline: str
    """The metric the summary table leads with."""
    run: Callable[[Path, Options], Metrics]


def _deployed(
    mode: str,
    concurrency: int,
    body: Callable[[Any, Path, Options], Awaitable[Metrics]],
    *,
    deferred: bool = True,
) -> Callable[[Path, Options], Metrics]:
    """A shape that needs a deployment of ``mode``: built before, stopped after, untimed."""

    def run(work: Path, options: Options) -> Metrics:
        stamps = work / "stamps.txt"
        os.environ[STAMPS_ENV] = str(stamps)  # read by the executors (the worker inherits it)

        async def main() -> Metrics:
            async with target(mode, work, concurrency, deferred=deferred) as t:
                return await body(t, stamps, options)

        try:
            return asyncio.run(main())
        finally:
            SINK.close()

    return run


def _size(options: Options, full: int, quick: int) -> int:
    return quick if options.quick else full


def _deployment_shapes(mode: str) -> list[Shape]:
    def seq(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.submit_seq(t, _size(o, 1_000, 200))

    def dup(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.submit_dup(t, _size(o, 999, 199))

    def batch(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.submit_batch(t, 1_000, _size(o, 5, 1))

    def e2e(n_full: int, n_quick: int, tiers: bool = False) -> Any:
        def body(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
            priorities = shapes.TIERS if tiers else (128,)
            return shapes.end_to_end(t, _size(o, n_full, n_quick), priorities)

        return body

    def drain(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.drain(t, _size(o, 20_000, 2_000))

    def behind(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.behind_full_group(t, _size(o, 20_000, 2_000), _size(o, 2_000, 200))

    def latency(t: Any, stamps: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.idle_latency(t, _size(o, 200, 30), stamps, o.seed)

    def preempt(t: Any, stamps: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.preemption(t, _size(o, 50, 10), 4, stamps)

    def dep_graph(t: Any, _: Path, o: Options) -> Awaitable[Metrics]:
        return dependency_graph(t, _size(o, 100, 20), 100)

    def later(t: Any, stamps: Path, o: Options) -> Awaitable[Metrics]:
        return shapes.scheduled_later(
            t, _size(o, 5_000, 1_000), _size(o, 100_000, 10_000), _size(o, 200, 30), stamps, o.seed
        )

    m = mode
    table: list[tuple[str, str, str, int, Any, bool]] = [
        ("submit_seq_1000", "1,000 sequential submits", "submit_per_s", 4, seq, True),
        ("submit_dup_999", "999 duplicate submits (one key)", "dup_submit_per_s", 4, dup, True),
        ("submit_batch_1000", "submit_batch of 1,000 (median of 5)", "batch_tasks_per_s", 4,
         batch, True),
        ("e2e_1000_c8", "1,000 end to end, max_concurrency 8", "tasks_per_s", 8,
         e2e(1_000, 200), True),
    ]  # fmt: skip
    for c in (1, 2, 4, 8):
        table.append(
            (f"conc_500_c{c}", f"500 end to end, max_concurrency {c}", "tasks_per_s", c,
             e2e(500, 100), True)
        )  # fmt: skip
    table += [
        ("prio_500_c4", "500 cycling the 5 tiers, concurrency 4", "tasks_per_s", 4,
         e2e(500, 100, tiers=True), True),
        ("drain_20k_c4", "20k no-op drain, 1 producer, concurrency 4", "drain_per_s", 4,
         drain, False),
        ("behind_full_group", "2,000 ungrouped tasks behind a full group of 20,000", "tasks_per_s",
         4, behind, False),
        ("idle_latency", "idle submit -> task start, 200 tasks", "start_p50_ms", 4,
         latency, False),
        ("preempt", "REALTIME submit -> victim's token, 50 rounds", "first_victim_p99_ms", 4,
         preempt, False),
        ("dep_graph_10k", "10,000 tasks in one batch: a chain of 100, fan-out 100",
         "graph_tasks_per_s", 4, dep_graph, False),
        ("scheduled_100k", "drain with 100,000 tasks due later vs none; due -> start, idle",
         "due_start_p99_ms", 4, later, False),
    ]  # fmt: skip
    out = [
        Shape(f"{m}.{name}", what, headline, _deployed(m, c, body, deferred=deferred))
        for name, what, headline, c, body, deferred in table
    ]
    return out


def _store_shapes(options: Options) -> list[Shape]:
    depths = [100, 1_000, 5_000, 1_000_000 if options.big else 100_000]
    out = []
    for depth in depths:

        def run(work: Path, o: Options, depth: int = depth) -> Metrics:
            return peek_claim(work, depth, rounds=_size(o, 1_000, 200))

        label = f"{depth // 1_000_000}m" if depth >= 1_000_000 else f"{depth}"
        out.append(
            Shape(
                f"store.peek_claim_{label}",
                f"peek(1); peek(4)+claim, {depth:,} pending",
                "peek1_p50_us",
                run,
            )
        )
    out.append(
        Shape(
            "store.floor",
            "the drain's and a batch's database work alone: StoreDB called directly",
            "drain_sql_per_s",
            lambda work, o: floor(work, _size(o, 20_000, 2_000)),
        )
    )
    out.append(
        Shape(
            "store.batch_growth",
            "a batch's database work as the queue grows to 100,000 pending",
            "batch_sql_per_s_at_100k",
            lambda work, o: batch_growth(work),
        )
    )
    out.append(
        Shape(
            "store.scheduled_100k",
            "the drain's database work with 100,000 tasks due over the next hour, and with none",
            "drain_ratio_100k_later_to_none",
            lambda work, o: scheduled_100k(work, _size(o, 10_000, 2_000)),
        )
    )
    out.append(
        Shape(
            "store.saturated_group",
            "peek(4) passing over a full group of up to 100,000 more urgent tasks",
            "peek4_skip_us_at_100k",
            lambda work, o: saturated_group(work),
        )
    )
    out.append(
        Shape(
            "store.unblock",
            "one dependency completing: per dependent unblocked, 1,000 vs 100,000 other tasks",
            "unblock_vm_steps_with_100k",
            lambda work, o: unblock(work),
        )
    )
    return out


def catalog(options: Options) -> dict[str, Shape]:
    """Every shape, in the order the suite runs them."""
    every = [*_deployment_shapes("embedded"), *_store_shapes(options)]
    every += _deployment_shapes("procfile")
    return {shape.name: shape for shape in every}


def run_once(name: str, options: Options) -> Metrics:
    """One run of one shape in a temporary directory (removed after)."""
    shape = catalog(options)[name]
    with tempfile.TemporaryDirectory(prefix="taskmill-bench-") as tmp:
        return shape.run(Path(tmp), options)
