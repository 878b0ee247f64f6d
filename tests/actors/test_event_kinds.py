"""Typed events as a user sees them: the class the Dispatcher built is the class a subscriber in
another process receives; an event type it does not know arrives as ``UnknownEvent``; malformed
event frames are dropped and counted while the publisher and the subscriber go on."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgpack
import zmq

from actors.publisher.actor import EventPublisher
from bus.events import Completed, Dispatched, UnknownEvent
from bus.kinds_run import Welcome
from bus.protocol import PROTOCOL, encode
from taskmill import EventSubscriber
from tests.actors.test_publisher import WAIT, running

LISTENER = """
import json, sys
from taskmill import EventSubscriber
with EventSubscriber(sys.argv[1], timeout=10) as sub:
    print("live", flush=True)
    for _ in range(int(sys.argv[2])):
        event = sub.recv(10)
        line = {"class": type(event).__name__, "at_ms": event.at_ms, **event.to_dict()}
        print(json.dumps(line), flush=True)
    print(json.dumps({"malformed": sub.malformed}), flush=True)
"""


def test_a_subscriber_in_another_process_receives_the_classes_pushed(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with running(context, "ipc", tmp_path) as bus:
        child = subprocess.Popen(
            [sys.executable, "-c", LISTENER, bus.pub_endpoint, "2"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "live"
            done = Completed(7, "resize", "k" * 64, "cat.jpg", 1500, tags={"tenant": "a"})
            bus.push_raw([PROTOCOL, b"event.completed", b"", msgpack.packb({"task_id": "7"})])
            bus.push(done, UnknownEvent(event_type="teleported", raw={"task_id": 7, "to": "mars"}))
            lines = [json.loads(child.stdout.readline()) for _ in range(3)]
            assert child.wait(WAIT) == 0
            assert bus.stats()["malformed"] == 1
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
    completed, unknown, counts = lines
    assert completed == {
        "class": "Completed", "type": "completed", "seq": 1, "at": completed["at"],
        "at_ms": completed["at_ms"], "task_id": 7, "task_type": "resize", "key": "k" * 64,
        "label": "cat.jpg", "tags": {"tenant": "a"}, "duration_ms": 1500,
    }  # fmt: skip
    assert completed["at_ms"] > 0 and completed["at"].endswith("+00:00")  # stamped by the publisher
    assert unknown["class"] == "UnknownEvent" and unknown["type"] == "teleported"
    assert (unknown["seq"], unknown["task_id"], unknown["to"]) == (2, 7, "mars")
    assert counts == {"malformed": 0}  # the bad frame never left the publisher


def test_a_malformed_event_does_not_stop_the_subscriber(context: zmq.Context[Any]) -> None:
    """A publisher of another version or a broken one: its bad frames are dropped and counted,
    the good ones after them delivered. (An event without a required field used to raise out of
    ``recv``.)"""
    xpub = context.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    endpoint = "inproc://a-broken-publisher"
    xpub.bind(endpoint)
    sub = _welcomed_subscriber(context, xpub, endpoint)
    try:
        topic = b"task.completed"
        xpub.send_multipart([topic, PROTOCOL, b"event.completed", b"", b"\xc1"])
        xpub.send_multipart([topic, PROTOCOL, b"event.completed", b"", msgpack.packb([1])])
        bad_batch = msgpack.packb({"events": [["completed", {"task_id": None}]]})
        xpub.send_multipart([topic, PROTOCOL, b"events", b"", bad_batch])
        xpub.send_multipart([topic, b"TMP3", b"event.completed", b"", msgpack.packb({})])
        no_count = {"task_id": 1, "task_type": "t", "key": "k", "label": "l"}  # children_count?
        xpub.send_multipart(
            [b"task.waiting", PROTOCOL, b"event.waiting", b"", msgpack.packb(no_count)]
        )
        good = Completed(1, "t", "k", "l", seq=5)
        xpub.send_multipart([topic, *encode(good)])
        event = sub.recv(WAIT)
        assert event == good and isinstance(event, Completed) and event.seq == 5
        assert sub.malformed == 5
    finally:
        sub.close()
        xpub.close()


def _welcomed_subscriber(
    context: zmq.Context[Any], xpub: zmq.Socket[Any], endpoint: str
) -> EventSubscriber:
    """An ``EventSubscriber`` on ``xpub``, welcomed by hand from this thread: it subscribes in
    its constructor and waits for the welcome, so the welcome is sent from a helper thread."""

    def welcome() -> None:
        while True:
            assert xpub.poll(int(WAIT * 1000))
            frame = xpub.recv()
            if frame[1:].startswith(b"welcome."):
                xpub.send_multipart([frame[1:], *encode(Welcome(4))])
                return

    helper = threading.Thread(target=welcome)
    helper.start()
    try:
        return EventSubscriber(endpoint, timeout=WAIT, context=context)
    finally:
        helper.join(WAIT)


def test_the_publisher_counts_its_metrics_from_the_fields() -> None:
    publisher = EventPublisher("inproc://unused-in", "inproc://unused-pub")
    first = Dispatched(1, "scan", "k", "l", base_priority=0, wait_ms=2_000)
    again = Dispatched(1, "scan", "k", "l", base_priority=0, phase="finalize")
    publisher.on_events([first, again, Completed(1, "scan", "k", "l", 250)])
    value = publisher.metrics.registry.get_sample_value
    assert value("taskmill_tasks_dispatched_total", {"task_type": "scan"}) == 2
    assert value("taskmill_task_wait_seconds_count", {"tier": "realtime"}) == 1
    assert value("taskmill_task_wait_seconds_sum", {"tier": "realtime"}) == 2.0
    assert value("taskmill_task_duration_seconds_sum", {"task_type": "scan"}) == 0.25


def test_an_unknown_event_that_could_not_be_published_as_it_came_is_refused(
    context: zmq.Context[Any],
) -> None:
    """A batch item of an unknown type is published as it came, alone when it runs alone: a
    type that cannot be a kind (not ASCII) is malformed on arrival, not an error in the
    publisher when it sends it on."""
    with running(context) as bus, bus.subscribe() as sub:
        item = ["téléported", {"task_id": 1}]
        bus.push_raw([PROTOCOL, b"events", b"", msgpack.packb({"events": [item]})])
        bus.push(Completed(2, "t", "k", "l"))
        event = sub.recv(WAIT)
        assert isinstance(event, Completed) and (event.seq, event.task_id) == (1, 2)
        assert bus.stats()["malformed"] == 1
