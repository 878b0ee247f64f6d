"""Scheduler events: type strings, wire round trip, to_dict, pattern matching, tolerance."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from bus.protocol import decode, encode
from taskmill.events import (
    Cancelled,
    Completed,
    DeadLettered,
    Dispatched,
    Failed,
    Paused,
    Preempted,
    Progress,
    Resumed,
    SchedulerEvent,
    UnknownEvent,
    Waiting,
    event_from_message,
    event_from_wire,
    event_to_wire,
)
from taskmill.events import (
    WireEvent as Event,
)

IDS: dict[str, Any] = dict(task_id=5, task_type="upload", key="f" * 64, label="part 1")
AT = datetime(2024, 5, 1, 8, 30, 0, 250_000, tzinfo=UTC)

EVENTS: list[tuple[SchedulerEvent, str]] = [
    (Dispatched(**IDS), "dispatched"),
    (Completed(**IDS), "completed"),
    (Failed(**IDS, error="boom", will_retry=True), "failed"),
    (Failed(**IDS, error="429", will_retry=True, retry_after=30.0), "failed"),
    (DeadLettered(**IDS, error="reset", retry_count=3), "dead_lettered"),
    (Preempted(**IDS), "preempted"),
    (Cancelled(**IDS), "cancelled"),
    (Progress(**IDS, percent=0.25, message="resizing"), "progress"),
    (Waiting(**IDS, children_count=3), "waiting"),
    (Paused(), "paused"),
    (Resumed(), "resumed"),
]


@pytest.mark.parametrize(("event", "type_"), EVENTS, ids=[t for _, t in EVENTS])
def test_type_strings(event: SchedulerEvent, type_: str) -> None:
    assert event.type == type_
    assert isinstance(event, SchedulerEvent)


@pytest.mark.parametrize(("event", "type_"), EVENTS, ids=[t for _, t in EVENTS])
def test_wire_round_trip_through_msgpack(event: SchedulerEvent, type_: str) -> None:
    wire = event_to_wire(event)
    assert isinstance(wire, Event) and wire.type == type_
    data = msgpack.unpackb(msgpack.packb(wire.data))  # what the bus really carries
    back = event_from_wire(wire.type, data, seq=42, at_ms=wire.at_ms)
    assert back == event and type(back) is type(event)
    assert back.seq == 42


@pytest.mark.parametrize(("event", "type_"), EVENTS, ids=[t for _, t in EVENTS])
def test_to_dict_is_json_serialisable(event: SchedulerEvent, type_: str) -> None:
    data = json.loads(json.dumps(event.to_dict()))
    assert data["type"] == type_
    assert {"seq", "at"} <= set(data)


def test_task_events_carry_the_task_identity_and_wire_data_is_flat() -> None:
    event = Failed(**IDS, error="disk full", will_retry=False)
    assert event_to_wire(event).data == {
        **IDS, "tags": {}, "error": "disk full", "will_retry": False, "retry_after": None,
    }  # fmt: skip
    assert event.to_dict() == {"type": "failed", "seq": 0, "at": None, **IDS, "tags": {},
                               "error": "disk full", "will_retry": False,
                               "retry_after": None}  # fmt: skip
    assert event_to_wire(Paused()).data == {}


def test_time_travels_as_epoch_ms_and_comes_back_as_utc() -> None:
    event = Progress(**IDS, percent=1.0, at=AT)
    wire = event_to_wire(event)
    assert wire.at_ms == 1_714_552_200_250
    back = event_from_wire(wire.type, wire.data, at_ms=wire.at_ms)
    assert back.at == AT and back.at is not None and back.at.tzinfo is not None
    assert Progress(**IDS, percent=1.0, at=AT).to_dict()["at"] == "2024-05-01T08:30:00.250000+00:00"
    assert event_from_wire("paused", {}).at is None  # at_ms 0: time unknown


def test_seq_and_time_do_not_affect_equality() -> None:
    assert Completed(**IDS, seq=1, at=AT) == Completed(**IDS, seq=2)
    assert Completed(**IDS) != Cancelled(**IDS)  # type: ignore[comparison-overlap]
    assert Completed(**IDS) != Completed(**{**IDS, "task_id": 6})


def test_events_support_pattern_matching() -> None:
    event = event_from_wire("progress", {**IDS, "percent": 0.5, "message": None})
    match event:
        case Progress(task_id=tid, percent=p, message=m):
            assert (tid, p, m) == (5, 0.5, None)
        case _:
            pytest.fail("not matched as Progress")


def test_decoding_ignores_unknown_fields_and_fills_defaults() -> None:
    event = event_from_wire("progress", {**IDS, "percent": 0.1, "new_field": 1})
    assert event == Progress(**IDS, percent=0.1, message=None)
    assert event_from_wire("failed", {**IDS, "error": "x"}) == Failed(**IDS, error="x")


def test_missing_required_field_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="children_count"):
        event_from_wire("waiting", dict(IDS))


def test_unknown_event_type_is_kept_not_dropped() -> None:
    event = event_from_wire("task.teleported", {"x": 1}, seq=3)
    assert isinstance(event, UnknownEvent)
    assert event.type == "task.teleported" and event.seq == 3
    assert event.to_dict() == {"type": "task.teleported", "seq": 3, "at": None, "x": 1}
    assert event_to_wire(event) == Event("task.teleported", {"x": 1}, 0)


def test_event_from_message_keeps_published_seq() -> None:
    published = decode(encode(Completed(**IDS, seq=17, at_ms=1_000)))[0]
    assert isinstance(published, Completed)
    event = event_from_message(published)
    assert event == Completed(**IDS) and event.seq == 17
    assert event.at == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert event_from_message(Event("resumed", {})) == Resumed()


def test_events_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Completed(**IDS).task_id = 1  # type: ignore[misc]


def test_the_new_outcomes_decode_from_the_dispatchers_data() -> None:
    failed = event_from_wire(
        "failed", {**IDS, "error": "429", "will_retry": True, "retry_after": 2.5}
    )
    assert isinstance(failed, Failed) and failed.retry_after == 2.5
    v1 = event_from_wire("failed", {**IDS, "error": "boom", "will_retry": True})
    assert isinstance(v1, Failed) and v1.retry_after is None
    dead = event_from_wire("dead_lettered", {**IDS, "error": "reset", "retry_count": 3})
    assert dead == DeadLettered(**IDS, error="reset", retry_count=3)


@pytest.mark.parametrize(("event", "type_"), EVENTS, ids=[t for _, t in EVENTS])
def test_an_event_is_its_own_kind_on_the_bus(event: SchedulerEvent, type_: str) -> None:
    """What the bus carries is the event's own class, ``event.<type>``, fields and all."""
    frames = encode(dataclasses.replace(event, seq=9, at=AT))
    assert frames[1] == f"event.{type_}".encode()
    back, _ = decode(frames)
    assert type(back) is type(event) and back == event
    assert (back.seq, back.at) == (9, AT)


def test_an_unknown_kind_on_the_bus_decodes_to_an_unknown_event() -> None:
    frames = encode(UnknownEvent(event_type="teleported", raw={"x": 1, "task_id": 4}, seq=3))
    assert frames[1] == b"event.teleported"
    back, _ = decode(frames)
    assert isinstance(back, UnknownEvent)
    assert (back.type, back.seq, back.data()) == ("teleported", 3, {"x": 1, "task_id": 4})
