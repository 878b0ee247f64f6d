"""The peers' shapes on Huey, run by ``bench/peers.py`` with the interpreter of its virtual
environment (Huey and redis-py installed there, never in taskmill's). Standard library and Huey
only: this file must not import taskmill.

It is also the application the Huey consumer imports (``huey_bench.huey``), configured by the
environment: ``HUEY_BENCH_STORAGE`` (``sqlite`` or ``redis``), ``HUEY_BENCH_DB`` (the SQLite
file), ``HUEY_BENCH_PORT`` (redis-server on 127.0.0.1), ``HUEY_BENCH_STAMPS`` (the stamp file)
and ``HUEY_BENCH_EXPECT`` (after that many completions the consumer writes the ``perf_counter``
of the last one to ``HUEY_BENCH_DONE``). ``time.perf_counter`` is ``CLOCK_MONOTONIC``: stamps
taken in the consumer compare with the producer's.

    python bench/huey_bench.py drain|latency --storage sqlite|redis [--n N] [--seed S]

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

CONSUMER_FLAGS = ["-w", "4", "-k", "thread", "-d", "0.001", "-m", "0.01"]
"""4 thread workers; idle polling from 1 ms backing off to 10 ms (SqliteHuey polls; RedisHuey
blocks on BRPOP and is not affected). Huey's default (0.1 s rising to 10 s) would put its idle
latency in the hundreds of milliseconds."""
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
_completed = 0


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
    global _completed
    at = time.perf_counter()
    with _lock:
        _completed += 1
        done = _completed == int(os.environ.get("HUEY_BENCH_EXPECT", "0"))
    if done:  # written whole, then renamed: the producer never reads half a file
        target = Path(os.environ["HUEY_BENCH_DONE"])
        partial = target.with_suffix(".partial")
        partial.write_text(repr(at))
        partial.rename(target)


# -- the producer side -------------------------------------------------------------------------


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


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
    """``huey_consumer huey_bench.huey`` in its own process, stopped (SIGINT, then SIGKILL)."""

    def __init__(self, work: Path, expect: int) -> None:
        self.stamps = work / "stamps.txt"
        self.done = work / "done.txt"
        env = dict(os.environ)
        env.update(
            HUEY_BENCH_STAMPS=str(self.stamps),
            HUEY_BENCH_DONE=str(self.done),
            HUEY_BENCH_EXPECT=str(expect),
            PYTHONPATH=str(Path(__file__).resolve().parent),
        )
        argv = [sys.executable, "-m", "huey.bin.huey_consumer", "huey_bench.huey"]
        self.log = work / "consumer.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*argv, *CONSUMER_FLAGS], env=env, stdout=out, stderr=subprocess.STDOUT
            )

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


def drain(app: Any, n: int, work: Path) -> dict[str, float]:
    """One producer enqueues ``n`` no-op tasks one by one while 4 workers consume them."""
    consumer = Consumer(work, expect=n + 1)  # the warm-up task completes too
    try:
        consumer.warm_up(app)
        noop_task = app.noop
        start = time.perf_counter()
        for _ in range(n):
            noop_task()
        submitted = time.perf_counter()
        _wait(consumer.done.exists, WAIT_S, "tasks still running", poll=0.002)
        end = float(consumer.done.read_text())
        return {
            "drain_per_s": n / (end - start),
            "producer_submit_per_s": n / (submitted - start),
            "rss_mb": _vm_hwm_mb(consumer.popen.pid),
        }
    finally:
        consumer.stop()


def latency(app: Any, n: int, work: Path, seed: int) -> dict[str, float]:
    """Enqueue → task start, ``n`` tasks spaced 20-100 ms apart (random)."""
    rng = random.Random(seed)
    consumer = Consumer(work, expect=0)
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
            metrics = drain(app, args.n, Path(tmp))
        else:
            metrics = latency(app, args.n, Path(tmp), args.seed)
        app.huey.flush()
    print("RESULT " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
