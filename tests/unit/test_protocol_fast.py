"""The generated decoders agree with the general field-by-field ones: the same message for every
body, or the same error. The bodies are every kind's sample, then each field replaced by a value
of every wire type, each field removed (a struct's array cut short), and an unknown field added."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest

from bus.codec import _decoders, _encoders, _general_decoders, _general_encoders
from bus.errors import ProtocolError
from tests.actors.test_protocol import build

WIRE_VALUES: list[Any] = [
    0,
    -3,
    2**40,
    1.5,
    True,
    False,
    None,
    "s",
    b"b",
    [],
    [1, "x"],
    {},
    {"k": 1},
]
"""One of each type msgpack can hand a decoder (with raw=False)."""

CODECS = sorted(_decoders, key=lambda c: f"{c.__module__}.{c.__qualname__}")
"""Every message kind and every struct nested in them."""


def outcome(decoder: Any, body: Any) -> tuple[str, Any]:
    try:
        return "ok", decoder(body)
    except ProtocolError as exc:
        return "error", (exc.code, exc.message)


def bodies(cls: Any) -> list[Any]:
    """The wire body of a sample of ``cls`` (through msgpack, as a peer sends it), and mutants:
    a message's map, or a struct's array of fields."""
    message = build(cls)
    body = msgpack.unpackb(
        msgpack.packb(_encoders[cls](message), use_bin_type=True), raw=False, timestamp=0
    )
    if isinstance(body, list):
        out: list[Any] = [body, {}, "not an array", [*body, "added later"]]
        for i in range(len(body)):
            out.append(body[:i])
            out.extend([*body[:i], value, *body[i + 1 :]] for value in WIRE_VALUES)
        return out
    out = [body, [], "not a map", {**body, "unknown_field": 1}]
    for name in body:
        out.append({k: v for k, v in body.items() if k != name})
        out.extend({**body, name: value} for value in WIRE_VALUES)
    return out


@pytest.mark.parametrize("cls", CODECS, ids=lambda c: c.__qualname__)
def test_generated_decoder_agrees_with_the_general_one(cls: Any) -> None:
    fast, general = _decoders[cls], _general_decoders[cls]
    for body in bodies(cls):
        assert outcome(fast, body) == outcome(general, body), body


def test_every_kind_and_struct_with_fields_has_a_generated_decoder() -> None:
    generated = [c for c in _decoders if _decoders[c] is not _general_decoders[c]]
    assert {c for c in _decoders if dataclasses.fields(c)} <= set(generated)


def test_a_nested_struct_is_decoded_by_its_generated_decoder_too() -> None:
    from bus.kinds import ClaimNextReply
    from bus.structs import TaskRow

    reply = build(ClaimNextReply)
    body = msgpack.unpackb(msgpack.packb(_encoders[ClaimNextReply](reply)), raw=False)
    body["tasks"][0][4] = "urgent"  # a wrong type (priority) deep inside: the same error either way
    assert outcome(_decoders[ClaimNextReply], body) == outcome(
        _general_decoders[ClaimNextReply], body
    )
    assert outcome(_decoders[ClaimNextReply], body)[0] == "error"
    assert _decoders[TaskRow] is not _general_decoders[TaskRow]


@pytest.mark.parametrize("cls", CODECS, ids=lambda c: c.__qualname__)
def test_generated_encoder_agrees_with_the_general_one(cls: Any) -> None:
    for message in (build(cls), build(cls, required_only=True)):
        assert _encoders[cls](message) == _general_encoders[cls](message)
