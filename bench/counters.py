"""What the actors do per task, counted rather than timed.

    python bench/counters.py [--n N] [--tasks M] [--idle-s S] [--only procfile|embedded]

Three counts, each printed plainly:

1. **Procfile drain** — the suite's drain shape (one producer awaiting each ``submit``,
   concurrency 4, no-op tasks) against the Procfile deployment over ipc; every actor's ``Stats``
   before and after it, and each counter that moved, per task: how many requests the Store
   served and in how many transactions, how many dispatch cycles the Dispatcher ran (tasks per
   claim = 1 / cycles), how many notifications it was sent. The figures behind "the Store serves
   N requests per task" in ``docs/benchmarks.md``.
2. **Store requests while idle** — an embedded scheduler, running, with nothing to do (one
   warm-up task done, nothing else submitted): the Store's ``requests`` counter (every request
   its actor served) read before and after ``--idle-s`` seconds. The same window also counts
   every message sent on any socket (see 3), by kind.
3. **Messages per no-op task, embedded, idle queue** — ``M`` no-op tasks submitted one at a time
   to that embedded scheduler; each is submitted only once the previous one completed (its
   ``completed`` event) and no message was sent for ``QUIET_S``, so every task enters an idle
   scheduler. Counted: every message sent on every ZeroMQ socket of the process between the
   first submit and the end of the last quiet period, divided by ``M`` — the submit request and
   its reply, Store requests and replies, Store notifications, Dispatcher claims, run orders,
   results and acknowledgements, events sent to the publisher and the events it publishes (sent
   whether or not anyone subscribes), monitor readings, host heartbeats: whatever the actors
   send, by message kind. Idle traffic that falls in the window (safety ticks, heartbeats,
   readings) is in the raw figure; the figure "less idle" subtracts the rate counted in 2 over
   the window's duration.

Messages are counted where they leave: every send of the project goes through
``bus.protocol.send_frames``, whose socket call this script wraps in its own process (the
embedded scheduler's actors are threads of it); a message is one call with its last frame.
Sends through pyzmq's own ``send``/``send_multipart`` are counted apart, as a check that
nothing bypasses ``send_frames``. The ``Stats`` requests that read the counters happen outside
every counting window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import shapes
from bench.common import EventPump
from bench.targets import ACTORS, control, embedded, procfile
from bus import protocol
from bus.client import RequestClient
from bus.kinds import Stats, StatsReply
from bus.topology import Topology
from taskmill import Scheduler, TaskSubmission

QUIET_S = 0.02
"""How long no message may be sent before the scheduler counts as idle again."""
STEP_WAIT_S = 15.0
"""The longest one task may take to complete, or the scheduler to fall quiet after it."""
OUTSIDE = "(outside send_frames)"
"""The kind under which sends that bypass ``bus.protocol.send_frames`` are counted."""


def counters(context: zmq.Context[Any], endpoints: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every actor's counters, by actor (``endpoints``: actor → control endpoint)."""
    out = {}
    for name, endpoint in endpoints.items():
        client = RequestClient(context, endpoint, timeout=5.0)
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


def _per(counts: dict[str, int] | Counter[str], n: float) -> str:
    return ", ".join(f"{k} {v / n:.3g}" for k, v in sorted(counts.items())) or "-"


def _per_moved(before: dict[str, Any], after: dict[str, Any], n: int) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in sorted(moved(before, after, n).items())) or "-"


async def procfile_drain(n: int) -> None:
    context: zmq.Context[Any] = zmq.Context()
    try:
        with tempfile.TemporaryDirectory() as work:
            async with procfile(Path(work), 4, deferred=True) as target:
                endpoints = {name: control(target.topology, name) for name in ACTORS}
                before = counters(context, endpoints)
                metrics = await shapes.drain(target, n)
                after = counters(context, endpoints)
        print(f"Procfile drain of {n:,} no-op tasks: {metrics['drain_per_s']:,.0f} tasks/s")
        for name in ACTORS:
            print(f"  {name:10} per task: {_per_moved(before[name], after[name], n)}")
    finally:
        context.destroy(linger=0)


# -- counting every message sent ---------------------------------------------------------------


class SentMessages:
    """Messages sent by this process, by kind, while ``counting()`` is active."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._partial = threading.local()
        """The frames of the message this thread is sending (``send_frames`` sends frame by
        frame; the kind is the third frame from the end, after any routing frames)."""

    def total(self) -> int:
        with self._lock:
            return sum(self.by_kind.values())

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.by_kind)

    def _frame(self, frame: Any, flags: int, via_send_frames: bool = True) -> None:
        frames: list[Any] = self._partial.__dict__.setdefault("frames", [])
        frames.append(frame)
        if flags & zmq.SNDMORE:
            return
        kind = bytes(frames[-3]).decode("ascii", "replace") if len(frames) >= 4 else "?"
        frames.clear()
        with self._lock:
            self.by_kind[kind if via_send_frames else OUTSIDE] += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[SentMessages]:
        """Wrap the socket call of ``bus.protocol.send_frames`` (and pyzmq's ``Socket.send``,
        for anything that bypasses it); both restored on exit."""
        if not hasattr(protocol, "_backend_send"):
            raise SystemExit("bus.protocol.send_frames changed: teach bench/counters.py anew")
        backend_send = protocol._backend_send
        sugar_send = zmq.Socket.send

        def counted_backend(sock: Any, frame: Any, flags: int = 0, *args: Any) -> Any:
            result = backend_send(sock, frame, flags, *args)
            self._frame(frame, flags)
            return result

        def counted_sugar(sock: Any, data: Any, flags: int = 0, *args: Any, **kw: Any) -> Any:
            result = sugar_send(sock, data, flags, *args, **kw)
            self._frame(data, int(flags), via_send_frames=False)
            return result

        protocol._backend_send = counted_backend  # type: ignore[assignment]
        zmq.Socket.send = counted_sugar  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            protocol._backend_send = backend_send
            zmq.Socket.send = sugar_send  # type: ignore[method-assign]


def completed(k: int) -> Callable[[EventPump], bool]:
    return lambda pump: pump.counts["completed"] >= k


async def quiet(sent: SentMessages) -> None:
    """Until no message was sent for ``QUIET_S``."""
    deadline = time.monotonic() + STEP_WAIT_S
    seen, since = sent.total(), time.monotonic()
    while time.monotonic() - since < QUIET_S:
        if time.monotonic() > deadline:
            raise TimeoutError(f"messages still flowing after {STEP_WAIT_S}s")
        await asyncio.sleep(QUIET_S / 4)
        now = sent.total()
        if now != seen:
            seen, since = now, time.monotonic()


def embedded_controls(scheduler: Scheduler) -> dict[str, str]:
    """The control endpoints of the embedded actors that keep counters (the host's id is the
    scheduler's own business: its counts are in the messages)."""
    topology: Topology = scheduler.topology
    return {
        "store": topology.store_control,
        "events": topology.events_control,
        "limiter": topology.limiter_control,
        "monitor": topology.monitor_control,
        "dispatcher": topology.dispatcher_control,
    }


async def embedded_counts(tasks: int, idle_s: float) -> None:
    sent = SentMessages()
    with tempfile.TemporaryDirectory() as work, sent.counting():
        async with embedded(Path(work), 4) as target:
            scheduler = target.scheduler
            # inproc endpoints: only the scheduler's own context reaches them
            context: zmq.Context[Any] = scheduler._context
            controls = embedded_controls(scheduler)
            await target.start()
            pump = EventPump(await target.subscribe())
            try:
                await target.submit(TaskSubmission("noop", key="warm-up"))
                await pump.wait(completed(1), STEP_WAIT_S)
                await quiet(sent)

                before = counters(context, controls)
                idle_from, start = sent.snapshot(), time.monotonic()
                await asyncio.sleep(idle_s)
                idle_sent, idle_elapsed = sent.snapshot() - idle_from, time.monotonic() - start
                after = counters(context, controls)
                store_requests = after["store"]["requests"] - before["store"]["requests"]
                print(f"Embedded scheduler idle for {idle_elapsed:.1f} s (nothing submitted):")
                print(f"  Store requests: {store_requests}")
                print(f"  messages sent: {sum(idle_sent.values())} ({_per(idle_sent, 1)})")

                before = counters(context, controls)
                task_from, start = sent.snapshot(), time.monotonic()
                for i in range(tasks):
                    await target.submit(TaskSubmission("noop", key=f"one-{i}"))
                    await pump.wait(completed(i + 2), STEP_WAIT_S)  # + the warm-up
                    await quiet(sent)
                task_sent, elapsed = sent.snapshot() - task_from, time.monotonic() - start
                after = counters(context, controls)
            finally:
                await pump.close()
    total = sum(task_sent.values())
    idle_rate = sum(idle_sent.values()) / idle_elapsed
    print(f"Embedded, idle queue: {tasks} no-op tasks one at a time ({elapsed:.1f} s):")
    print(f"  messages per task: {total / tasks:.2f}")
    print(f"  less idle traffic ({idle_rate:.2f}/s over the same time): "
          f"{(total - idle_rate * elapsed) / tasks:.2f}")  # fmt: skip
    print(f"  by kind, per task: {_per(task_sent, tasks)}")
    for name in controls:
        print(f"  {name:10} per task: {_per_moved(before[name], after[name], tasks)}")


async def main(args: argparse.Namespace) -> None:
    if args.only in (None, "procfile"):
        await procfile_drain(args.n)
    if args.only in (None, "embedded"):
        await embedded_counts(args.tasks, args.idle_s)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000, help="tasks in the drain (default 5,000)")
    parser.add_argument(
        "--tasks", type=int, default=200, help="tasks one at a time, embedded (default 200)"
    )
    parser.add_argument("--idle-s", type=float, default=10.0, help="idle window (default 10 s)")
    parser.add_argument("--only", choices=("procfile", "embedded"), help="one part only")
    asyncio.run(main(parser.parse_args()))
