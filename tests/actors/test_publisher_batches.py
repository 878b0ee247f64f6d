"""Events in batches: ``events`` into the EventPublisher, and out of it for subscribers that read
batches (the ``b.`` mark of their welcome token), never for one that does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from actors.dispatcher.actor import Dispatcher, Settings
from actors.publisher.actor import MAX_BATCH, MAX_BATCH_BYTES, EventPublisher
from bus.events import EventBatch, SchedulerEvent
from bus.protocol import MAX_FRAME_BYTES, decode, encode
from tests.actors.test_publisher import ev, raw_sub, recv_all, recv_frames, running


def published(frames: list[bytes]) -> tuple[bytes, list[int]]:
    """The topic and the seqs one published message carries."""
    message, _ = decode(frames[1:])
    if isinstance(message, EventBatch):
        return frames[0], [e.seq for e in message.events]
    assert isinstance(message, SchedulerEvent)
    return frames[0], [message.seq]


def test_runs_of_one_topic_are_published_as_one_message_each() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    batch = EventBatch([ev("completed", task_id=i) for i in range(3)])
    out = publisher.on_events([batch, ev("dispatched", task_id=9), ev("completed", task_id=4)])
    assert [published(f) for f in out] == [
        (b"task.completed", [1, 2, 3]),
        (b"task.dispatched", [4]),
        (b"task.completed", [5]),
    ]
    assert decode(out[1][1:])[0].KIND == "event.dispatched"  # a run of one stays a single event
    assert publisher.stats()["by_type"] == {"completed": 4, "dispatched": 1}


def test_a_run_longer_than_the_limit_is_split() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    out = publisher.on_events([ev("completed", task_id=i) for i in range(MAX_BATCH + 1)])
    assert [len(published(f)[1]) for f in out] == [MAX_BATCH, 1]


def test_a_connected_1_0_subscriber_keeps_every_event_single() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    run = [ev("completed", task_id=i) for i in range(3)]
    assert publisher.on_subscription(b"\x01welcome.b.new") is not None
    assert publisher.batching
    assert publisher.on_subscription(b"\x01welcome.0ld") is not None  # no b. mark: 1.0
    assert not publisher.batching
    assert [published(f)[1] for f in publisher.on_events(run)] == [[1], [2], [3]]
    publisher.on_subscription(b"\x00welcome.0ld")  # it left
    assert publisher.batching and publisher.stats()["batching"] is True
    assert [published(f)[1] for f in publisher.on_events(run)] == [[4, 5, 6]]


def test_a_subscriber_receives_a_pushed_batch_event_by_event(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    events = [ev("dispatched", task_id=i) for i in range(5)] + [ev("completed", task_id=0)]
    with running(context, "ipc", tmp_path) as bus, bus.subscribe() as sub:
        wire = raw_sub(context, bus.pub_endpoint, [b"task."], b"b.wire")  # reads batches
        try:
            assert recv_frames(wire)[0] == b"welcome.b.wire"
            bus.pusher.send_multipart(encode(EventBatch(events)))
            got = recv_all(sub, len(events))
            messages = [published(recv_frames(wire)), published(recv_frames(wire))]
        finally:
            wire.close()
    assert [(e.seq, e.type, e.data()) for e in got] == [
        (i + 1, e.type, e.data()) for i, e in enumerate(events)
    ]
    assert sub.missed == 0 and sub.malformed == 0
    assert messages == [(b"task.dispatched", [1, 2, 3, 4, 5]), (b"task.completed", [6])]


def test_a_1_0_subscriber_on_the_wire_never_sees_a_batch(context: zmq.Context[Any]) -> None:
    events: list[SchedulerEvent] = [ev("completed", task_id=i) for i in range(4)]
    with running(context) as bus, bus.subscribe() as sub:
        old = raw_sub(context, bus.pub_endpoint, [b""], b"0ld")
        try:
            assert recv_frames(old)[0] == b"welcome.0ld"
            bus.pusher.send_multipart(encode(EventBatch(events)))
            kinds = [recv_frames(old)[2] for _ in events]
            assert [e.seq for e in recv_all(sub, len(events))] == [1, 2, 3, 4]
        finally:
            old.close()
        assert sub.recv(0) is None  # nothing else was published
    assert kinds == [b"event.completed"] * 4


def test_a_run_too_large_for_one_frame_goes_one_event_per_message() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    big = "x" * (MAX_BATCH_BYTES // 2)  # two of these exceed the batch limit
    run = [ev("failed", task_id=i, error=big) for i in range(3)]
    out = publisher.on_events([EventBatch(run)])
    assert [published(f) for f in out] == [
        (b"task.failed", [1]),
        (b"task.failed", [2]),
        (b"task.failed", [3]),
    ]
    assert all(len(f[4]) <= MAX_FRAME_BYTES for f in out)


def test_the_dispatcher_pushes_the_events_of_one_reply_as_one_message(
    context: zmq.Context[Any],
) -> None:
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        pull.bind("inproc://dispatcher-events")
        push.connect("inproc://dispatcher-events")
        dispatcher = Dispatcher(Settings("inproc://c", "inproc://h", "inproc://s", "inproc://n"))
        dispatcher._events = push
        small = [ev("dispatched", task_id=i) for i in range(3)]
        big = [ev("failed", task_id=i, error="x" * (MAX_BATCH_BYTES // 2)) for i in range(2)]
        dispatcher._emit(small)
        dispatcher._emit(big)  # too large as one message: one event each
        kinds = [recv_frames(pull)[1] for _ in range(3)]
        assert kinds == [b"events", b"event.failed", b"event.failed"]
        assert dispatcher.counters["events"] == 5
    finally:
        push.close(linger=0)
        pull.close(linger=0)
