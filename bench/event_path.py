"""What one event costs at each hop of its path, without sockets.

    python bench/event_path.py [--n N]

A claim of four tasks and the finish of four results, as the Dispatcher reports them: four
``Dispatched`` and four ``Completed`` events, timed per event (best of five rounds of ``N``):

1. **produce** — the Dispatcher builds the events (``actors.dispatcher.state``) and encodes them
   as two ``events`` messages, as ``Dispatcher._emit`` does;
2. **publish** — the EventPublisher decodes those messages, numbers the events, counts them in
   its metrics and encodes what it publishes (``EventPublisher.on_events``);
3. **subscribe** — a subscription decodes what was published back into the event classes (the
   decoding ``bus.subscribe`` does for every received message).

Also printed: the bytes of a published event's body, in a batch. Sockets and the actor loop are
left out on purpose: they cost the same whatever an event's encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.dispatcher.state import dispatched
from actors.publisher.actor import EventPublisher
from bus.events import Completed, EventBatch, SchedulerEvent
from bus.kinds import TaskRow, Transition
from bus.protocol import decode, encode

KEY = "ab" * 32
NOW_MS = 1_700_000_000_010
ROWS = [
    TaskRow(i, "noop", KEY, f"task {i}", 128, "running", created_at_ms=NOW_MS - 10,
            started_at_ms=NOW_MS - 5)
    for i in range(4)
]  # fmt: skip
RESULTS = [Transition(i, "completed", "noop", KEY, f"task {i}", duration_ms=3) for i in range(4)]
EVENTS = 8


def produce() -> list[list[bytes]]:
    claimed = [dispatched(row, NOW_MS) for row in ROWS]
    finished = [
        Completed(t.id, t.task_type, t.key, t.label, t.duration_ms, tags={}, at_ms=NOW_MS)
        for t in RESULTS
    ]
    return [encode(EventBatch(claimed)), encode(EventBatch(finished))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="rounds per timing (default 20,000)")
    args = parser.parse_args()
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")

    def publish(pushed: list[list[bytes]]) -> list[list[bytes]]:
        return publisher.on_events([decode(frames)[0] for frames in pushed])

    def subscribe(published: list[list[bytes]]) -> list[SchedulerEvent]:
        out: list[SchedulerEvent] = []
        for frames in published:
            message, _ = decode(frames[1:])  # after the topic frame
            if isinstance(message, EventBatch):
                out += message.events
            elif isinstance(message, SchedulerEvent):
                out.append(message)
        return out

    pushed = produce()
    published = publish(pushed)
    assert len(subscribe(published)) == EVENTS
    body = sum(len(frames[-1]) for frames in published) / EVENTS
    print(f"published event body, in a batch: {body:.1f} bytes")
    for name, step in (
        ("produce", lambda: produce()),
        ("publish", lambda: publish(pushed)),
        ("subscribe", lambda: subscribe(published)),
    ):
        print(f"{name:<10} {best_us(step, args.n) / EVENTS:.2f} µs per event")
    return 0


def best_us(step: Callable[[], object], n: int) -> float:
    """The best of five rounds of ``n`` calls, in µs per call."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            step()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
