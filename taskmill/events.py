"""Scheduler events: one frozen class per event type, the very messages the bus carries.

Each class is a message kind of its own (``Completed`` is ``event.completed``, see
``bus.events``): the Dispatcher builds a ``Completed``, the EventPublisher numbers and publishes
it, and a subscriber receives a ``Completed``. An event type this version does not know arrives
as ``UnknownEvent`` rather than raising, so an older subscriber keeps working when a newer
scheduler adds event types.

``event_to_wire`` and ``event_from_wire`` convert an event to and from its plain form (type
string, flat data, epoch ms), for code that stores or forwards events as data.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from bus.events import (
    EVENT_TYPES,
    Cancelled,
    Completed,
    DeadLettered,
    DependencyFailed,
    Dispatched,
    Expired,
    Failed,
    GroupPaused,
    GroupResumed,
    GroupWeightChanged,
    HostResources,
    Paused,
    Preempted,
    Progress,
    RecurringCompleted,
    Resources,
    Resumed,
    SchedulerEvent,
    Superseded,
    TaskEvent,
    Unblocked,
    UnknownEvent,
    Waiting,
)

__all__ = [
    "EVENT_TYPES",
    "Cancelled",
    "Completed",
    "DeadLettered",
    "DependencyFailed",
    "Dispatched",
    "Expired",
    "Failed",
    "GroupPaused",
    "GroupResumed",
    "GroupWeightChanged",
    "HostResources",
    "Paused",
    "Preempted",
    "Progress",
    "RecurringCompleted",
    "Resources",
    "Resumed",
    "SchedulerEvent",
    "Superseded",
    "TaskEvent",
    "Unblocked",
    "UnknownEvent",
    "Waiting",
    "WireEvent",
    "event_from_message",
    "event_from_wire",
    "event_to_wire",
]


class WireEvent(NamedTuple):
    """An event as plain data: its ``type``, its fields (``SchedulerEvent.data()``) and when it
    happened (epoch ms, 0 when unknown)."""

    type: str
    data: dict[str, Any]
    at_ms: int = 0


def event_to_wire(event: SchedulerEvent) -> WireEvent:
    """The plain form of ``event`` (``seq`` dropped)."""
    return WireEvent(event.type, event.data(), event.at_ms)


def event_from_wire(
    type: str,  # the wire field name
    data: dict[str, Any],
    seq: int = 0,
    at_ms: int = 0,
) -> SchedulerEvent:
    """The event of a plain ``(type, data)``; ``at_ms`` 0 means "time unknown".

    Unknown keys in ``data`` are ignored and missing optional fields take their defaults; a
    missing required field raises ``ValueError``. An unknown ``type`` gives ``UnknownEvent``.
    """
    cls = EVENT_TYPES.get(type)
    if cls is None:
        return UnknownEvent(event_type=type, raw=dict(data), seq=seq, at_ms=at_ms)
    kwargs: dict[str, Any] = {}
    for name, key, required in _FIELDS[cls]:
        if key in data:
            kwargs[name] = data[key]
        elif required:
            raise ValueError(f"{type!r} event without its {key!r} field")
    return cls(**kwargs, seq=seq, at_ms=at_ms)


def _data_key(cls: type[SchedulerEvent], name: str) -> str:
    """The key of field ``name`` in ``data()``: its name, but for ``RecurringCompleted``'s
    ``next_run_ms``, which ``data()`` names ``next_run``."""
    return "next_run" if cls is RecurringCompleted and name == "next_run_ms" else name


_FIELDS: dict[type[SchedulerEvent], tuple[tuple[str, str, bool], ...]] = {
    cls: tuple(
        (
            f.name,
            _data_key(cls, f.name),
            f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
        )
        for f in dataclasses.fields(cls)
        if f.name not in ("seq", "at_ms")
    )
    for cls in EVENT_TYPES.values()
}
"""The data fields of each event class: (field, key in ``data()``, whether required)."""


def event_from_message(message: SchedulerEvent | WireEvent) -> SchedulerEvent:
    """The event a message carries: the message itself, since events travel as their classes
    (a ``WireEvent`` is converted)."""
    if isinstance(message, WireEvent):
        return event_from_wire(message.type, message.data, at_ms=message.at_ms)
    return message
