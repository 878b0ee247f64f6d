"""What each actor of the Procfile deployment does per task: its own counters over a drain.

    python bench/counters.py [--n N]

Runs the suite's drain shape (one producer awaiting each ``submit``, concurrency 4, no-op tasks)
against the Procfile deployment over ipc, and reads every actor's ``Stats`` before and after it.
Prints each counter that moved, per task: how many requests the Store served and in how many
transactions, how many dispatch cycles the Dispatcher ran (tasks per claim = 1 / cycles), how
many notifications it was sent. The figures behind "the Store serves N requests per task" in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import shapes
from bench.targets import ACTORS, Procfile, control, procfile
from bus.client import RequestClient
from bus.kinds import Stats, StatsReply


def counters(context: zmq.Context[Any], target: Procfile) -> dict[str, dict[str, Any]]:
    """Every actor's counters, by actor."""
    out = {}
    for name in ACTORS:
        client = RequestClient(context, control(target.topology, name), timeout=5.0)
        try:
            out[name] = client.call(Stats(), StatsReply).counters
        finally:
            client.close()
    return out


def moved(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
    """Each numeric counter that changed, per task."""
    out = {}
    for key, value in after.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key.startswith("max_") or value == before.get(key, 0):
            continue
        out[key] = (value - before.get(key, 0)) / n
    return out


async def main(n: int) -> None:
    context: zmq.Context[Any] = zmq.Context()
    try:
        with tempfile.TemporaryDirectory() as work:
            async with procfile(Path(work), 4, deferred=True) as target:
                before = counters(context, target)
                metrics = await shapes.drain(target, n)
                after = counters(context, target)
        print(f"Procfile drain of {n:,} no-op tasks: {metrics['drain_per_s']:,.0f} tasks/s")
        for name in ACTORS:
            per_task = moved(before[name], after[name], n)
            shown = ", ".join(f"{k} {v:.3g}" for k, v in sorted(per_task.items()))
            print(f"  {name:10} per task: {shown or '-'}")
    finally:
        context.destroy(linger=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="tasks in the drain (default 5,000)")
    asyncio.run(main(parser.parse_args().n))
