"""The benchmark application: no-op, stamping and holding executors, one ``SchedulerBuilder``.

The embedded shapes build from ``builder()``; the Procfile shapes start ``python -m taskmill
<actor>`` with ``TASKMILL_APP=bench.app:app``, so both run exactly the same executors.

Executors that measure write *stamps* — ``kind label perf_counter`` lines — to the file named by
``TASKMILL_BENCH_STAMPS`` (appended and flushed line by line, so the worker process of a Procfile
deployment and the embedded host thread write them the same way). ``time.perf_counter`` is
``CLOCK_MONOTONIC`` on Linux: one clock for every process of the machine, so a stamp taken in a
worker process compares with one taken in the producer.

* ``noop``  — does nothing: measures the machinery, not the work.
* ``stamp`` — stamps ``start <label>`` first thing (idle latency: submit → task start).
* ``hold``  — a BACKGROUND victim: registers ``on_cancel`` (stamps ``cancel <label>`` in the
  cancelling thread), stamps ``hold <label>`` and reports progress (an event, so the benchmark
  looks again: a victim holds while it has more ``hold`` stamps than ``cancel`` ones), then waits
  for its token, at most ``HOLD_MAX_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TextIO

from taskmill import Scheduler, SchedulerBuilder, TaskContext, TaskError

STAMPS_ENV = "TASKMILL_BENCH_STAMPS"
CONCURRENCY_ENV = "TASKMILL_BENCH_CONCURRENCY"
HOLD_MAX_S = 60.0
"""A holding task gives up after this long, so a broken run still ends."""


class StampSink:
    """Appends ``kind label seconds`` lines to one file; thread-safe, opened on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        self._path: str | None = None

    def write(self, kind: str, label: str, at: float) -> None:
        path = os.environ.get(STAMPS_ENV)
        if not path:
            return
        with self._lock:
            if self._file is None or self._path != path:
                if self._file is not None:
                    self._file.close()
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
                self._path = path
            self._file.write(f"{kind} {label} {at!r}\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


SINK = StampSink()


def read_stamps(path: Path) -> list[tuple[str, str, float]]:
    """Every stamp written to ``path`` so far, in file order."""
    if not path.exists():
        return []
    stamps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, label, at = line.split(" ")
        stamps.append((kind, label, float(at)))
    return stamps


async def noop(ctx: TaskContext) -> None:
    """Does nothing."""


async def stamp(ctx: TaskContext) -> None:
    """Stamps its start (before anything else), then returns."""
    started = time.perf_counter()
    SINK.write("start", ctx.record.label, started)


async def hold(ctx: TaskContext) -> None:
    """Waits for its token (a preemption) with a cancel stamp taken in the cancelling thread."""
    label = ctx.record.label

    def on_cancel() -> None:
        SINK.write("cancel", label, time.perf_counter())

    ctx.token.on_cancel(on_cancel)
    SINK.write("hold", label, time.perf_counter())
    ctx.progress.report(0.0, "holding")  # an event: the benchmark re-reads the stamps
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.token.wait(), HOLD_MAX_S)
    if ctx.token.is_cancelled():
        raise TaskError("preempted")


def builder(concurrency: int = 4) -> SchedulerBuilder:
    """The application; the caller sets the store path (the Procfile: ``TASKMILL_DATABASE``)."""
    return (
        Scheduler.builder()
        .executor("noop", noop)
        .executor("stamp", stamp)
        .executor("hold", hold)
        .max_concurrency(concurrency)
        .group_concurrency("full", 1)  # bench.shapes.FULL_GROUP
    )


def app() -> SchedulerBuilder:
    """``bench.app:app`` for the actor processes (concurrency from the environment, else 4)."""
    return builder(int(os.environ.get(CONCURRENCY_ENV, "4")))
