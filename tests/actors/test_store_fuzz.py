"""Garbage at the Store's ROUTER: every frame set gets an error reply, and nothing is written.

A hypothesis property test against one real Store actor (inproc), through a DEALER: random frame
counts and bytes, the right header with unknown kinds, another protocol version (``TMP9``), bodies
that are not msgpack, known kinds with wrong-typed fields, and well-typed submissions with values
the Store must refuse. What the reply must be is predicted from the protocol module: the error
code ``bus.protocol.decode`` raises (or ``INVALID`` for the refused values), returned along the
routing frames the DEALER put before the header. Afterwards a normal submit still works and the
database holds nothing the garbage could have put there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from store_support import key, running_store, store_endpoints, sub

from actors.store.submit import validate
from bus.client import RequestClient
from bus.codec import _encoders
from bus.errors import ErrorCode, InvalidRequest, ProtocolError
from bus.kinds import Counts, CountsReply, Error, Finish, History, HistoryReply, Submit, SubmitReply
from bus.protocol import PROTOCOL, decode, registry
from bus.structs import Submission

WAIT_MS = 5_000

KNOWN_KINDS = {k.encode() for k in registry()}

VALID_FIELDS: dict[str, Any] = {"task_type": "t", "key": key("fuzz"), "label": "fuzz"}


def submission(**values: Any) -> list[Any]:
    """A submission as it travels: the array of its fields (any values, valid or not)."""
    wire: list[Any] = _encoders[Submission](Submission(**{**VALID_FIELDS, **values}))
    return wire


VALID_SUBMISSION = submission()

TEMPLATES: dict[bytes, dict[str, Any]] = {
    b"store.submit": {"submissions": [VALID_SUBMISSION]},
    b"store.claim": {"ids": [1], "now_ms": 0},
    b"store.finish": {"results": [[1, "ok"]], "max_retries": 3},
    b"store.preempt": {"ids": [1]},
    b"store.cancel": {"id": 1},
    b"store.release": {"ids": [1], "error": "lost"},
    b"store.resume": {"preempt_priority": 0},
    b"store.peek": {"claim": [5]},
}

packb = msgpack.Packer(use_bin_type=True).pack

correlations = st.binary(max_size=16)
wrong_values = st.one_of(
    st.text(max_size=8),
    st.binary(max_size=8),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**64 - 1), max_size=2),
)


@st.composite
def huge_ints(draw: st.DrawFn) -> list[bytes]:
    """A known kind whose integer ids or counts do not fit SQLite's 64-bit integers."""
    huge = draw(st.integers(2**63, 2**64 - 1))
    kind, body = draw(
        st.sampled_from(
            [
                (b"store.cancel", {"id": huge}),
                (b"store.claim", {"ids": [1, huge]}),
                (b"store.preempt", {"ids": [huge]}),
                (b"store.task", {"id": huge}),
                (b"store.finish", {"results": [[huge, "ok"]]}),
                (b"store.release", {"ids": [huge]}),
            ]
        )
    )
    return [PROTOCOL, kind, draw(correlations), packb(body)]


@st.composite
def wrong_typed(draw: st.DrawFn) -> list[bytes]:
    """A known write kind whose body has one field (maybe nested) of the wrong type."""
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    body = {k: (list(v) if isinstance(v, list) else v) for k, v in TEMPLATES[kind].items()}
    nested = [k for k, v in body.items() if isinstance(v, list) and v and isinstance(v[0], list)]
    if nested and draw(st.booleans()):
        name = nested[0]  # a list of structs: each struct an array of its fields
        item = list(body[name][0])
        item[draw(st.integers(0, len(item) - 1))] = draw(wrong_values)
        body[name] = [item]
    else:
        body[draw(st.sampled_from(sorted(body)))] = draw(wrong_values)
    return [PROTOCOL, kind, draw(correlations), packb(body)]


@st.composite
def refused_submission(draw: st.DrawFn) -> list[bytes]:
    """Well-formed, well-typed, but a value the Store refuses (nothing may be inserted)."""
    bad = draw(
        st.one_of(
            st.fixed_dictionaries({"priority": st.integers(256, 2**31)}),
            st.fixed_dictionaries({"priority": st.integers(-(2**31), -1)}),
            st.fixed_dictionaries({"key": st.text(max_size=70)}),
            st.fixed_dictionaries({"task_type": st.just("")}),
            st.fixed_dictionaries({"expected_read_bytes": st.integers(-(2**31), -1)}),
        )
    )
    assume(not (isinstance(bad.get("key"), str) and len(bad["key"]) == 64))
    subs = [submission(key=key("other")), submission(**bad)]
    return [PROTOCOL, b"store.submit", draw(correlations), packb({"submissions": subs})]


garbage_frames = st.lists(st.binary(max_size=40), min_size=1, max_size=7)
unknown_kind = st.builds(
    lambda kind, corr, body: [PROTOCOL, kind, corr, body],
    st.binary(min_size=0, max_size=30).filter(lambda k: k not in KNOWN_KINDS),
    correlations,
    st.just(packb({})),
)
wrong_version = st.builds(
    lambda kind, corr: [b"TMP9", kind, corr, packb(TEMPLATES[kind])],
    st.sampled_from(sorted(TEMPLATES)),
    correlations,
)
garbage_body = st.builds(
    lambda kind, corr, body: [PROTOCOL, kind, corr, body],
    st.sampled_from(sorted(TEMPLATES)),
    correlations,
    st.binary(max_size=40),
)
wrong_frame_count = st.builds(
    lambda n, extra: (
        [PROTOCOL, b"store.counts", b"1", packb({}), *extra][:n]
        if n <= 4
        else [PROTOCOL, b"store.counts", b"1", packb({}), *extra]
    ),
    st.integers(1, 7),
    st.lists(st.binary(max_size=8), min_size=1, max_size=3),
).filter(lambda frames: len(frames) != 4)

anything = st.one_of(
    garbage_frames,
    unknown_kind,
    wrong_version,
    garbage_body,
    wrong_frame_count,
    wrong_typed(),
    refused_submission(),
    huge_ints(),
)


def predict(frames: list[bytes]) -> tuple[list[bytes], int, bytes] | None:
    """(routing prefix, error code, correlation) of the reply, or None for a valid request."""
    # The server splits by position: the last four frames are the message, any before them
    # are routing frames (after the one the ROUTER adds, which the DEALER strips again).
    prefix, parts = (frames[:-4], frames[-4:]) if len(frames) >= 4 else ([], frames)
    try:
        message, correlation = decode(parts)
    except ProtocolError as exc:
        correlation = parts[2] if len(parts) >= 3 and len(parts[2]) <= 64 else b""
        return prefix, int(exc.code), correlation
    if isinstance(message, Finish) and message.max_retries < 2**63:
        return None  # a bad result is ignored on its own (logged): the batch is answered
    if any(isinstance(v, int) and v >= 2**63 for v in _leaves(message)):
        return prefix, int(ErrorCode.INVALID), correlation
    if isinstance(message, Submit):
        try:
            for index, submission in enumerate(message.submissions):
                validate(submission, index)
        except InvalidRequest:
            return prefix, int(ErrorCode.INVALID), correlation
    return None


def _leaves(value: Any) -> Iterator[Any]:
    """Every scalar inside a decoded message."""
    if is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            yield from _leaves(getattr(value, f.name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def fuzz(dealer: zmq.Socket[Any]) -> int:
    """Throw ``anything`` at the Store through ``dealer``; how many messages were sent."""
    sent = 0

    @settings(
        deadline=None,
        max_examples=150,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(anything)
    def one_message_one_error(frames: list[bytes]) -> None:
        nonlocal sent
        expected = predict(frames)
        assume(expected is not None)  # a valid request: not garbage
        assert expected is not None
        prefix, code, correlation = expected
        dealer.send_multipart(frames)
        sent += 1
        assert dealer.poll(WAIT_MS), f"no reply to {frames!r}"
        reply = dealer.recv_multipart()
        assert reply[: len(prefix)] == prefix
        message, echoed = decode(reply[len(prefix) :])
        assert isinstance(message, Error), message
        assert (message.code, echoed) == (code, correlation), message.reason

    one_message_one_error()
    return sent


def test_garbage_gets_error_replies_and_writes_nothing(tmp_path: Path) -> None:
    context: zmq.Context[Any] = zmq.Context()
    endpoints = store_endpoints("inproc", tmp_path)
    try:
        with running_store(context, endpoints, tmp_path):
            dealer = context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(endpoints.store)
            try:
                assert fuzz(dealer) >= 100
                assert not dealer.poll(100), "a message got more than one reply"
            finally:
                dealer.close()
            client = RequestClient(context, endpoints.store, timeout=WAIT_MS / 1000)
            try:
                assert client.call(Counts(), CountsReply) == CountsReply(0, 0, 0, 0)
                assert client.call(History(limit=10), HistoryReply).rows == []
                reply = client.call(Submit([sub("after-the-storm")]), SubmitReply)
                assert [o.kind for o in reply.outcomes] == ["inserted"]
                assert client.call(Counts(), CountsReply).pending == 1
            finally:
                client.close()
    finally:
        context.term()
