"""What a pause costs on this machine: the same work, warm and after the CPUs went idle.

    python bench/idle_penalty.py [--n N]

Two building blocks of the idle-latency shape, each timed after pauses of 0, 2 and 30 ms (the
idle-latency shape spaces its submits 20 to 100 ms apart):

1. an inproc round trip between two threads (blocking pyzmq REQ/REP, 1-byte messages);
2. the Store's own work for one task submitted to an idle scheduler: one transaction holding a
   submit and a claim of the task, on a file database in WAL mode (``StoreDB`` directly, no
   sockets), then a finish in a second transaction (not timed).

Prints p50 and p90 in microseconds. Nothing here is taskmill's scheduling: it measures what the
machine charges for work that starts from idle, which the idle-latency figures include.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.store.db import StoreDB
from bench.common import percentile
from bus.clock import SystemClock
from bus.structs import Submission, TaskResult

PAUSES = (0.0, 0.002, 0.030)


def timed_after_pauses(
    n: int, step: Callable[[int], None], after: Callable[[], None] = lambda: None
) -> dict[float, list[float]]:
    """Microseconds of ``step(i)``, ``n`` times after each pause (``time.sleep`` is the pause);
    ``after`` runs untimed after each step."""
    out: dict[float, list[float]] = {}
    for pause in PAUSES:
        samples: list[float] = []
        for i in range(n):
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            step(i)
            samples.append((time.perf_counter() - start) * 1e6)
            after()
        out[pause] = samples
    return out


def round_trips(n: int) -> dict[float, list[float]]:
    context: zmq.Context[Any] = zmq.Context()
    rep = context.socket(zmq.REP)
    rep.bind("inproc://echo")

    def echo() -> None:
        while (message := rep.recv()) != b"q":
            rep.send(message)
        rep.send(b"")

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    req = context.socket(zmq.REQ)
    req.connect("inproc://echo")

    def step(_: int) -> None:
        req.send(b"x")
        req.recv()

    try:
        return timed_after_pauses(n, step)
    finally:
        req.send(b"q")
        req.recv()
        thread.join()
        req.close(linger=0)
        rep.close(linger=0)
        context.term()


def store_transactions(n: int) -> dict[float, list[float]]:
    with tempfile.TemporaryDirectory() as work:
        db = StoreDB(str(Path(work) / "bench.db"), clock=SystemClock())
        try:
            claimed: list[int] = []

            def submit_and_claim(i: int) -> None:
                key = hashlib.sha256(f"{len(claimed)}-{i}".encode()).hexdigest()
                with db.batch() as tx:
                    tx.run(lambda: db.submit([Submission("noop", key, str(i))]))
                    rows, _ = tx.run(lambda: db.claim_next(4))
                claimed.append(rows[0].id)

            def finish() -> None:
                with db.batch() as tx:
                    tx.run(lambda: db.finish([TaskResult(claimed[-1], "ok")]))

            return timed_after_pauses(n, submit_and_claim, finish)
        finally:
            db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="samples per pause (default 100)")
    args = parser.parse_args()
    for name, fn in (("inproc round trip", round_trips), ("store transaction", store_transactions)):
        for pause, samples in fn(args.n).items():
            print(
                f"{name:18s} after {pause * 1000:4.0f} ms pause: "
                f"p50 {percentile(samples, 0.5):6.0f} us  p90 {percentile(samples, 0.9):6.0f} us"
            )


if __name__ == "__main__":
    main()
