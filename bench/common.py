"""What every benchmark shares: the repository path, percentiles, the machine's facts, peak RSS,
and ``EventPump`` — waiting on scheduler events without sleeping.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sqlite3
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskmill import EventSubscription, SchedulerEvent

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

Metrics = dict[str, float]
"""One run of one shape: metric name → value (units in the name: ``_per_s``, ``_ms``, ``_mb``)."""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency_metrics(prefix: str, seconds: Sequence[float]) -> Metrics:
    """p50, p99 and max of latency samples given in seconds, as milliseconds."""
    return {
        f"{prefix}_p50_ms": percentile(seconds, 0.5) * 1e3,
        f"{prefix}_p99_ms": percentile(seconds, 0.99) * 1e3,
        f"{prefix}_max_ms": max(seconds) * 1e3,
    }


def summarize(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": float(len(values)),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mb(pid: int) -> float | None:
    """Another live process's peak RSS (``VmHWM``), or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def source_state() -> dict[str, Any]:
    """The commit measured, and the files outside ``bench/`` that differ from it (the figures
    belong to that code, not to whatever the commit message promises)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.rstrip("\n")  # not strip(): a porcelain line starts with a space

    snapshot = REPO / ".bench-source"  # a tree exported with `git archive` has no .git
    if snapshot.exists():
        return {"commit": snapshot.read_text().strip(), "changed_outside_bench": []}
    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if not line[3:].startswith("bench/")
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_outside_bench": changed}


def machine_facts() -> dict[str, Any]:
    import apsw
    import msgpack
    import zmq

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "apsw": apsw.apswversion(),
        "sqlite": apsw.sqlite_lib_version(),
        "sqlite_stdlib": sqlite3.sqlite_version,
        "msgpack": ".".join(str(p) for p in msgpack.version),
    }


Predicate = Callable[["EventPump"], bool]


class EventPump:
    """Reads a live subscription in the background, counting events by type; ``wait`` for a
    predicate over the counts. Events the publisher dropped for this subscriber (it read too
    slowly) show up in ``missed``: then counts are low and callers fall back to the Store."""

    def __init__(self, sub: EventSubscription) -> None:
        self.sub = sub
        self.counts: Counter[str] = Counter()
        self.last: dict[str, SchedulerEvent] = {}
        self.listeners: list[Callable[[SchedulerEvent], None]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self.sub:
            self.counts[event.type] += 1
            self.last[event.type] = event
            for listener in self.listeners:
                listener(event)
            self._changed.set()

    @property
    def missed(self) -> int:
        return self.sub.missed

    async def wait(self, predicate: Predicate, timeout: float) -> None:
        """Until ``predicate(self)``; ``TimeoutError`` after ``timeout`` seconds."""

        async def until() -> None:
            while not predicate(self):
                if self._task.done():
                    self._task.result()  # the subscription broke: raise why
                    raise RuntimeError("event subscription ended")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.sub.close()
