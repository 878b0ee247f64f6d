"""The peers' shapes on Huey, run by ``bench/peers.py`` with the interpreter of its virtual
environment (Huey and redis-py installed there, never in taskmill's). Standard library and Huey
only: this file must not import taskmill.

It is also the application the Huey consumer imports (``huey_bench.huey``), configured by the
environment: ``HUEY_BENCH_STORAGE`` (``sqlite`` or ``redis``), ``HUEY_BENCH_DB`` (the SQLite
file), ``HUEY_BENCH_PORT`` (redis-server on 127.0.0.1), ``HUEY_BENCH_STAMPS`` (the stamp file)
and ``HUEY_BENCH_DONE`` (every completion appends its ``perf_counter`` there as one fixed-width
record, from whichever worker ran it: with ``-k process`` the workers are separate processes, so
the producer counts records instead of a counter in memory). ``time.perf_counter`` is
``CLOCK_MONOTONIC``: stamps taken in the consumer compare with the producer's.

    python bench/huey_bench.py drain|latency --storage sqlite|redis [--workers process|thread]
                               [--n N] [--seed S]

``--workers`` picks the consumer's execution model, 4 workers either way: ``process`` is how
Huey's users run it for throughput (the default here), ``thread`` is kept as a comparison.

prints ``RESULT {json}`` last, like ``bench.child``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.signals import SIGNAL_COMPLETE

WORKER_TYPES = ("process", "thread")
POLL_FLAGS = ["-d", "0.001", "-m", "0.01"]
"""Idle polling from 1 ms backing off to 10 ms (SqliteHuey polls; RedisHuey blocks on BRPOP and
is not affected). Huey's default (0.1 s rising to 10 s) would put its idle latency in the
hundreds of milliseconds."""
DONE_RECORD = 25
"""Bytes of one completion record: ``perf_counter`` right-aligned in 24 characters, newline."""
WAIT_S = 600.0
STEP_WAIT_S = 15.0


def make_huey() -> Huey:
    storage = os.environ.get("HUEY_BENCH_STORAGE", "sqlite")
    if storage == "redis":
        port = int(os.environ["HUEY_BENCH_PORT"])
        return RedisHuey("bench", host="127.0.0.1", port=port)
    return SqliteHuey("bench", filename=os.environ.get("HUEY_BENCH_DB", "huey-bench.db"))


huey = make_huey()
_lock = threading.Lock()
_done_fd: int | None = None


def _stamp(kind: str, label: str, at: float) -> None:
    path = os.environ.get("HUEY_BENCH_STAMPS")
    if path:
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(f"{kind} {label} {at!r}\n")


@huey.task()
def noop() -> None:
    """Does nothing."""


@huey.task()
def stamp(label: str) -> None:
    _stamp("start", label, time.perf_counter())


@huey.signal(SIGNAL_COMPLETE)
def _on_complete(signal_name: str, task: Any, *args: Any) -> None:
    """Appends this completion's record. One ``write`` on an ``O_APPEND`` descriptor: records
    from several worker processes or threads never interleave."""
    global _done_fd
    at = time.perf_counter()
    if _done_fd is None:
        with _lock:
            if _done_fd is None:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
                _done_fd = os.open(os.environ["HUEY_BENCH_DONE"], flags, 0o644)
    os.write(_done_fd, f"{at:>24.9f}\n".encode())


# -- the producer side -------------------------------------------------------------------------


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _vm_hwm_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (the consumer's worker processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _tree_hwm_mb(pid: int) -> float:
    """Peak RSS of the consumer and its worker processes, summed (like taskmill's actors)."""
    return sum(_vm_hwm_mb(p) for p in (pid, *_children(pid)))


def _stamps(path: Path) -> list[tuple[str, str, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        kind, label, at = line.split(" ")
        out.append((kind, label, float(at)))
    return out


def _wait(predicate: Any, timeout: float, what: str, poll: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(poll)


class Consumer:
    """``huey_consumer huey_bench.huey -w 4 -k <workers>`` in its own process, stopped (SIGINT,
    then SIGKILL)."""

    def __init__(self, work: Path, workers: str) -> None:
        self.stamps = work / "stamps.txt"
        self.done = work / "done.txt"
        env = dict(os.environ)
        env.update(
            HUEY_BENCH_STAMPS=str(self.stamps),
            HUEY_BENCH_DONE=str(self.done),
            PYTHONPATH=str(Path(__file__).resolve().parent),
        )
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_bench.huey"]
        argv += ["-w", "4", "-k", workers, *POLL_FLAGS]
        self.log = work / "consumer.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def completed(self) -> int:
        """How many tasks completed so far (records appended to the done file)."""
        try:
            return self.done.stat().st_size // DONE_RECORD
        except FileNotFoundError:
            return 0

    def last_completion(self) -> float:
        """The ``perf_counter`` of the latest completion recorded."""
        return max(float(line) for line in self.done.read_text().split())

    def warm_up(self, app: Any) -> None:
        """One task through the consumer before anything is timed."""
        app.stamp("warmup")
        _wait(lambda: any(lbl == "warmup" for _, lbl, _ in _stamps(self.stamps)), 30, "warm-up")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def drain(app: Any, n: int, work: Path, workers: str) -> dict[str, float]:
    """One producer enqueues ``n`` no-op tasks one by one while 4 workers consume them."""
    consumer = Consumer(work, workers)
    try:
        consumer.warm_up(app)
        _wait(lambda: consumer.completed() >= 1, 30, "warm-up never completed")
        noop_task = app.noop
        start = time.perf_counter()
        for _ in range(n):
            noop_task()
        submitted = time.perf_counter()
        # n + 1: the warm-up task completes too
        _wait(lambda: consumer.completed() >= n + 1, WAIT_S, "tasks still running", poll=0.002)
        end = consumer.last_completion()
        return {
            "drain_per_s": n / (end - start),
            "producer_submit_per_s": n / (submitted - start),
            "rss_mb": _tree_hwm_mb(consumer.popen.pid),
        }
    finally:
        consumer.stop()


def latency(app: Any, n: int, work: Path, seed: int, workers: str) -> dict[str, float]:
    """Enqueue → task start, ``n`` tasks spaced 20-100 ms apart (random)."""
    rng = random.Random(seed)
    consumer = Consumer(work, workers)
    submitted: dict[str, float] = {}
    try:
        consumer.warm_up(app)
        for i in range(n):
            time.sleep(rng.uniform(0.020, 0.100))
            label = f"l{i}"
            before = time.perf_counter()
            app.stamp(label)
            submitted[label] = before
            # until this one's stamp is there (after the warm-up's and the earlier ones)
            _wait(lambda k=i + 2: len(_stamps(consumer.stamps)) >= k, STEP_WAIT_S, "no start")
    finally:
        consumer.stop()
    started = {lbl: at for kind, lbl, at in _stamps(consumer.stamps) if kind == "start"}
    seconds = [started[lbl] - at for lbl, at in submitted.items()]
    return {
        "start_p50_ms": _percentile(seconds, 0.5) * 1e3,
        "start_p99_ms": _percentile(seconds, 0.99) * 1e3,
        "start_max_ms": max(seconds) * 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Huey shapes (run by bench/peers.py)")
    parser.add_argument("shape", choices=("drain", "latency"))
    parser.add_argument("--storage", choices=("sqlite", "redis"), required=True)
    parser.add_argument("--workers", choices=WORKER_TYPES, default="process")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.storage != os.environ.get("HUEY_BENCH_STORAGE", "sqlite"):
        raise SystemExit("HUEY_BENCH_STORAGE must match --storage (the module reads it)")
    # The tasks are named after the module that defines them: enqueue them from ``huey_bench``
    # (what the consumer imports), not from this ``__main__``.
    app = importlib.import_module("huey_bench")
    with tempfile.TemporaryDirectory(prefix="huey-bench-") as tmp:
        app.huey.flush()
        if args.shape == "drain":
            metrics = drain(app, args.n, Path(tmp), args.workers)
        else:
            metrics = latency(app, args.n, Path(tmp), args.seed, args.workers)
        app.huey.flush()
    print("RESULT " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
