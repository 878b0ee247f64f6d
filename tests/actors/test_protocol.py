"""The wire protocol (docs/protocol.md): framing, the msgpack codec, error replies.

Codec tests need no sockets: every registered kind is built from sample values derived from its
annotations, encoded and decoded again. The socket tests run one tiny actor (a ``RequestServer``
with ``dispatch_each`` and an ``Inbox``) in an ``ActorThread``, the test being its peer, and show
what a peer sees: errors answered, one-way garbage dropped and counted, ``ActorUnavailable``
instead of a hang, ``STOPPING`` instead of silence. Nothing sleeps: every wait is for a reply or
an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

import bus  # noqa: F401  (registers every kind)
from bus.client import AsyncRequester, RequestClient, check_reply
from bus.clock import FakeClock
from bus.endpoints import ensure_run_dir, inproc, ipc, new_namespace
from bus.errors import (
    ActorUnavailable,
    DatabaseError,
    ErrorCode,
    InvalidRequest,
    PayloadTooLarge,
    ProtocolError,
    RemoteError,
    SerializationError,
    TaskError,
    TaskmillError,
    error_from_reply,
)
from bus.events import Completed, SchedulerEvent, UnknownEvent
from bus.hosting import ActorThread
from bus.kinds import (
    Counts,
    Error,
    ListTasks,
    Ok,
    Outcome,
    Ping,
    Pong,
    Stats,
    StatsReply,
    Stop,
    Submission,
    Submit,
    SubmitReply,
    TaskRow,
)
from bus.kinds_run import (
    DispatcherState,
    ProgressRow,
    Readings,
    RunningTask,
    SetMaxConcurrency,
)
from bus.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL,
    Message,
    decode,
    decode_as,
    encode,
    encode_body,
    recv_ready,
    registry,
    send_frames,
    split_envelope,
    struct,
)
from bus.runtime import Actor, ActorLoop
from bus.server import MALFORMED_LOG_INTERVAL_S, Inbox, RequestServer, dispatch_each

WAIT = 5.0
KEY = "ab" * 32


# -- sample messages ------------------------------------------------------------------------


def sample(tp: Any) -> Any:
    """A non-default value of type ``tp`` (structs built recursively, optionals non-nil)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)))
    if tp is Any:
        return {"any": [1, "two", b"3", None]}
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is float:
        return 0.25
    if tp is str:
        return "text é"
    if tp is bytes:
        return b"\x00\xffbin"
    if origin is dict:
        return {"k": sample(args[1])}
    if origin is list:
        return [sample(args[0]), sample(args[0])]
    if origin is tuple and args[-1:] == (Ellipsis,):
        return (sample(args[0]), sample(args[0]))
    if origin is tuple:
        return tuple(sample(a) for a in args)
    if tp is SchedulerEvent:  # any event: one of them
        return build(Completed)
    if dataclasses.is_dataclass(tp):
        return build(tp)
    raise AssertionError(f"no sample value for {tp!r}: extend sample()")


def build(cls: Any, *, required_only: bool = False) -> Any:
    hints = typing.get_type_hints(cls)
    values = {
        f.name: sample(hints[f.name])
        for f in dataclasses.fields(cls)
        if not required_only
        or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    }
    return cls(**values)


def frames(kind: str, body: Any, correlation: bytes = b"c1") -> list[bytes]:
    return [PROTOCOL, kind.encode(), correlation, msgpack.packb(body, use_bin_type=True)]


def raises(code: ErrorCode, message_frames: list[bytes]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(message_frames)
    assert info.value.code == code, info.value
    return info.value


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(registry()))
def test_every_kind_round_trips(kind: str) -> None:
    cls = registry()[kind]
    message = build(cls)
    wire = encode(message, b"42")
    assert wire[:3] == [PROTOCOL, kind.encode("ascii"), b"42"]
    body = msgpack.unpackb(wire[3], raw=False)
    assert sorted(body) == sorted(f.name for f in dataclasses.fields(message))
    decoded, correlation = decode(wire)
    assert type(decoded) is cls
    assert decoded == message
    assert correlation == b"42"


@pytest.mark.parametrize("kind", sorted(registry()))
def test_every_kind_round_trips_with_defaults(kind: str) -> None:
    message = build(registry()[kind], required_only=True)
    assert decode(encode(message))[0] == message


def test_bytes_travel_as_bin_and_str_as_str() -> None:
    sub = Submission("t", KEY, "label", payload=b"\xff\x00")
    body = msgpack.unpackb(encode_body(Submit([sub])), raw=True)
    item = body[b"submissions"][0]
    assert item[:5] == [b"t", KEY.encode(), b"label", 128, b"\xff\x00"]  # a struct: an array
    raw_body = encode_body(Submit([sub]))
    assert b"\xc4\x02\xff\x00" in raw_body  # bin 8, length 2
    assert b"\xa5label" in raw_body  # fixstr, length 5


def test_tuples_arrive_as_lists_and_are_made_tuples_again() -> None:
    state = DispatcherState([], 4, False, 0.5, [("cpu", 0.5), ("network", 0.25)])
    wire = encode(state)
    assert msgpack.unpackb(wire[3])["pressure_breakdown"] == [["cpu", 0.5], ["network", 0.25]]
    decoded = decode_as(wire, DispatcherState)
    assert decoded.pressure_breakdown == [("cpu", 0.5), ("network", 0.25)]
    assert all(type(item) is tuple for item in decoded.pressure_breakdown)
    readings = decode_as(encode(Readings(0.1, 1, 2, 3, 4, breakdown=[("api", 1.0)])), Readings)
    assert readings.breakdown == [("api", 1.0)]


def test_a_list_typed_field_decodes_to_a_list() -> None:
    body = {"ids": [3, 1, 2]}
    decoded = decode(frames("store.claim", body))[0]
    assert type(decoded.ids) is list and decoded.ids == [3, 1, 2]  # type: ignore[attr-defined]


def test_nested_struct_lists_decode_to_dataclasses() -> None:
    reply = SubmitReply([Outcome("inserted", 1, 64), Outcome("duplicate", None)])
    decoded = decode_as(encode(reply), SubmitReply)
    assert [type(o) for o in decoded.outcomes] == [Outcome, Outcome]
    assert decoded.outcomes[1].id is None and decoded.outcomes[1].priority == 128

    row = TaskRow(5, "t", KEY, "l", 10, "running", payload=b"p")
    running = RunningTask(row, 1_700_000_000_000, ProgressRow(5, 0.5, None, 1_700_000_000_500))
    state = decode_as(encode(DispatcherState([running], 4, False)), DispatcherState)
    (got,) = state.running
    assert type(got) is RunningTask
    assert type(got.task) is TaskRow and got.task.payload == b"p"
    assert type(got.progress) is ProgressRow and got.progress.percent == 0.5


# -- tolerance ------------------------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    body = {"status": "pending", "limit": 3, "added_in_1_7": {"x": 1}}
    assert decode(frames("store.tasks", body))[0] == ListTasks("pending", 3)
    # A struct is an array of its fields in order: items past its last field were added later.
    wire = ["t", KEY, "l", 128, None, 0, 0, 0, 0, None, True, None, None, None, None, None]
    wire += [None, "submission", None, "skip"]
    wire += [None, None, "cancel"]  # dependencies
    wire += [None]  # recurring
    wire.append("added later")
    assert decode(frames("store.submit", {"submissions": [wire]}))[0] == Submit(
        [Submission("t", KEY, "l")]
    )


def test_missing_fields_take_their_defaults() -> None:
    assert decode(frames("store.tasks", {"status": "paused"}))[0] == ListTasks("paused", 100)
    sub = decode(frames("store.submit", {"submissions": [["t", KEY, "l"]]}))[0]
    assert sub == Submit([Submission("t", KEY, "l", 128, None, fail_fast=True)])
    sub = decode(frames("store.submit", {"submissions": [["t", KEY, "l", 7, b"p"]]}))[0]
    assert sub == Submit([Submission("t", KEY, "l", 7, b"p")])
    assert decode(frames("ping", {}))[0] == Ping()


def test_a_missing_required_field_is_malformed() -> None:
    error = raises(ErrorCode.MALFORMED, frames("store.tasks", {"limit": 3}))
    assert "status" in error.message
    raises(ErrorCode.MALFORMED, frames("store.submit", {"submissions": [["t", KEY]]}))
    error = raises(
        ErrorCode.MALFORMED, frames("store.submit", {"submissions": [{"task_type": "t"}]})
    )
    assert "Submission must be an array" in error.message
    # a required field whose type allows nil must still be present
    raises(ErrorCode.MALFORMED, frames("store.task.reply", {}))
    assert decode(frames("store.task.reply", {"task": None}))[0].task is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("store.tasks", {"status": "pending", "limit": "ten"}),
        ("store.tasks", {"status": None}),
        ("store.tasks", {"status": b"pending"}),
        ("store.tasks", {"status": "pending", "limit": 1.5}),
        ("store.claim", {"ids": [1, "2"]}),
        ("store.claim", {"ids": 3}),
        ("store.submit", {"submissions": [5]}),
        ("store.submit", {"submissions": "abc"}),
        ("store.submit", {"submissions": [["t", KEY, 1]]}),
        ("stats.reply", {"name": "x", "counters": [1, 2]}),
        ("error", {"code": "404", "reason": "r"}),
        ("event.paused", {"seq": 0, "at_ms": msgpack.Timestamp(1, 0)}),
        ("event.completed", {"task_id": "1", "task_type": "t", "key": KEY, "label": "l"}),
        ("event.waiting", {"task_id": 1, "task_type": "t", "key": KEY, "label": "l"}),
        ("event.teleported", {"seq": "1"}),  # unknown, but its seq is no int
        ("event.teleported", [1]),
        ("events", {"events": [["completed", {"task_id": "1"}]]}),
        ("events", {"events": [{"task_id": 1}]}),
        ("events", {"events": [["teleported", [1]]]}),
        ("events", {"events": [["téléported", {}]]}),  # a kind is ASCII
        ("store.tasks", [1, 2]),
        ("ping", None),
    ],
)
def test_a_wrong_field_type_is_malformed(kind: str, body: Any) -> None:
    raises(ErrorCode.MALFORMED, frames(kind, body))


def test_an_int_is_accepted_where_a_float_is_expected() -> None:
    assert decode(frames("dispatcher.shutdown", {"drain_s": 2}))[0].drain_s == 2  # type: ignore[attr-defined]


# -- framing errors -------------------------------------------------------------------------


def test_an_unknown_kind_is_unknown_kind() -> None:
    raises(ErrorCode.UNKNOWN_KIND, frames("store.teleport", {}))


def test_another_major_version_is_version_mismatch() -> None:
    wire = encode(Ping(), b"1")
    error = raises(ErrorCode.VERSION_MISMATCH, [b"TMP1", *wire[1:]])
    assert "TMP1" in error.message and "TMP4" in error.message


@pytest.mark.parametrize("header", [b"ZMTP", b"HTTP", b"", b"\x00TMP2", b"tmp2"])
def test_a_non_taskmill_header_is_malformed(header: bytes) -> None:
    raises(ErrorCode.MALFORMED, [header, *encode(Ping())[1:]])


@pytest.mark.parametrize("count", [0, 1, 3, 5])
def test_anything_but_four_frames_is_malformed(count: int) -> None:
    message_frames = [*encode(Ping()), b"extra"][:count]
    raises(ErrorCode.MALFORMED, message_frames)


def test_a_body_over_the_limit_is_too_large_and_one_at_the_limit_is_not() -> None:
    probe = 100_000  # bin 32 on both sides of the limit, so the overhead is constant
    overhead = len(encode_body(UnknownEvent(event_type="x", raw={"blob": b"\0" * probe}))) - probe
    at_limit = UnknownEvent(event_type="x", raw={"blob": b"\0" * (MAX_FRAME_BYTES - overhead)})
    wire = encode(at_limit)
    assert len(wire[3]) == MAX_FRAME_BYTES
    assert decode(wire)[0] == at_limit
    over = encode(
        UnknownEvent(event_type="x", raw={"blob": b"\0" * (MAX_FRAME_BYTES - overhead + 1)})
    )
    raises(ErrorCode.TOO_LARGE, over)


@pytest.mark.parametrize(
    "body",
    [b"\xc1", b"\x82\xa6status", b"\x80\x80", b"", b"\x81\xa6status\xa3\xff\xfe\xfd"],
    ids=["never-used-byte", "truncated", "extra-data", "empty", "invalid-utf8"],
)
def test_garbage_msgpack_is_malformed(body: bytes) -> None:
    raises(ErrorCode.MALFORMED, [PROTOCOL, b"store.tasks", b"c", body])


def test_a_non_str_map_key_is_malformed() -> None:
    top = msgpack.packb({"status": "pending", 1: "x"})
    raises(ErrorCode.MALFORMED, [PROTOCOL, b"store.tasks", b"c", top])
    nested = msgpack.packb({"task_id": 1, "tags": {2: "y"}})
    raises(ErrorCode.MALFORMED, [PROTOCOL, b"event.completed", b"c", nested])


def test_a_bin_map_key_is_malformed() -> None:
    body = msgpack.packb({"status": "pending", b"limit": 5}, use_bin_type=True)
    raises(ErrorCode.MALFORMED, [PROTOCOL, b"store.tasks", b"c", body])


def test_an_int_where_a_bool_is_expected_is_malformed() -> None:
    body = {"running": [], "max_concurrency": 1, "is_paused": 7}
    raises(ErrorCode.MALFORMED, frames("dispatcher.state.reply", body))


def test_decode_as_rejects_another_kind() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_as(encode(Ping()), Pong)
    assert info.value.code == ErrorCode.MALFORMED


def test_routing_frames_are_split_from_the_message() -> None:
    wire = encode(Ping(), b"9")
    assert split_envelope([b"\x00id", b"", *wire]) == ([b"\x00id", b""], wire)
    # By position, not content: a routing id may start with the header's bytes.
    assert split_envelope([b"TMP2-id", *wire]) == ([b"TMP2-id"], wire)
    assert split_envelope([b"\x00id", b"garbage"]) == ([b"\x00id"], [b"garbage"])
    with pytest.raises(ProtocolError):
        split_envelope([b"only-an-id"])


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (ErrorCode.MALFORMED, ProtocolError),
        (ErrorCode.UNKNOWN_KIND, ProtocolError),
        (ErrorCode.TOO_LARGE, ProtocolError),
        (ErrorCode.INVALID, InvalidRequest),
        (ErrorCode.VERSION_MISMATCH, ProtocolError),
        (ErrorCode.INTERNAL, RemoteError),
        (ErrorCode.DATABASE, DatabaseError),
        (ErrorCode.UNAVAILABLE, ActorUnavailable),
        (ErrorCode.STOPPING, ActorUnavailable),
        (ErrorCode.NOT_FOUND, RemoteError),
        (ErrorCode.PAYLOAD_TOO_LARGE, PayloadTooLarge),
        (ErrorCode.SERIALIZATION, SerializationError),
    ],
)
def test_error_replies_map_to_exception_classes(code: ErrorCode, cls: type) -> None:
    error = error_from_reply(int(code), "the reason")
    assert type(error) is cls
    assert isinstance(error, TaskmillError)
    assert error.message == "the reason"
    if code is not ErrorCode.STOPPING:  # STOPPING is reported as UNAVAILABLE: see the docs
        assert error.code == code


def test_an_unknown_error_code_is_a_remote_error_that_keeps_the_number() -> None:
    error = error_from_reply(1999, "from the future")
    assert type(error) is RemoteError
    assert "1999" in error.message and "from the future" in error.message


def test_check_reply_raises_the_error_and_rejects_the_wrong_reply_kind() -> None:
    with pytest.raises(InvalidRequest, match="bad limit"):
        check_reply(ListTasks("pending"), Error(int(ErrorCode.INVALID), "bad limit"))
    with pytest.raises(ProtocolError) as info:
        check_reply(ListTasks("pending"), Ok())
    assert info.value.code == ErrorCode.MALFORMED
    assert check_reply(Ping(), Pong("x")) == Pong("x")


def test_task_error_retryable_flag() -> None:
    assert TaskError.retryable("x").retryable is True
    assert TaskError("x").retryable is False
    assert TaskError.retryable("disk busy").message == "disk busy"


# -- one real actor over sockets ------------------------------------------------------------


class Tiny(Actor):
    """Doubles ``dispatcher.set_max_concurrency`` n (a handy kind with an ``ok`` reply), fails on
    request, and counts the events pushed to its PULL."""

    name = "tiny"

    def __init__(self, endpoint: str, inbox_endpoint: str) -> None:
        self.endpoint = endpoint
        self.inbox_endpoint = inbox_endpoint
        self.received: list[Message] = []
        self.got_event = threading.Event()
        self.inbox: Inbox | None = None

    def setup(self, loop: ActorLoop) -> None:
        router = loop.socket(zmq.ROUTER)
        router.bind(self.endpoint)
        RequestServer(loop, router, self, dispatch_each({SetMaxConcurrency: self.double}, "tiny"))
        pull = loop.socket(zmq.PULL)
        pull.bind(self.inbox_endpoint)
        self.inbox = Inbox(loop, pull, self.on_messages)

    def double(self, message: SetMaxConcurrency) -> Ok:
        if message.n < 0:
            raise InvalidRequest("n must be >= 0")
        if message.n == 13:
            raise RuntimeError("unlucky")
        return Ok(message.n * 2)

    def on_messages(self, messages: list[Message]) -> None:
        self.received.extend(messages)
        self.got_event.set()

    def stats(self) -> dict[str, Any]:
        return {"received": len(self.received), "dropped": self.inbox.dropped if self.inbox else 0}


@dataclass(frozen=True)
class Endpoints:
    requests: str
    inbox: str
    control: str
    nobody: str


@pytest.fixture(params=["inproc", "ipc"])
def endpoints(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Endpoints:
    names = ("tiny", "tiny-in", "tiny-control", "nobody")
    if request.param == "inproc":
        namespace = new_namespace()
        return Endpoints(*(inproc(namespace, n) for n in names))
    run_dir = ensure_run_dir(tmp_path_factory.mktemp("ipc"))
    return Endpoints(*(ipc(run_dir, n) for n in names))


@pytest.fixture
def tiny(context: zmq.Context[Any], endpoints: Endpoints) -> Iterator[Tiny]:
    actor = Tiny(endpoints.requests, endpoints.inbox)
    thread = ActorThread(actor, context, endpoints.control).start()
    try:
        yield actor
    finally:
        thread.stop()


@pytest.fixture
def client(context: zmq.Context[Any], endpoints: Endpoints, tiny: Tiny) -> Iterator[RequestClient]:
    requester = RequestClient(context, endpoints.requests, timeout=WAIT)
    yield requester
    requester.close()


def raw_dealer(context: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def recv_reply(sock: zmq.Socket[Any]) -> tuple[Message, bytes]:
    assert sock.poll(int(WAIT * 1000)), "no reply"
    return decode(sock.recv_multipart())


def test_requests_are_answered_and_errors_come_back_as_exceptions(client: RequestClient) -> None:
    assert client.call(SetMaxConcurrency(21), Ok).value == 42
    with pytest.raises(ProtocolError) as unknown:
        client.request(Counts())  # registered, but not a kind this actor handles
    assert unknown.value.code == ErrorCode.UNKNOWN_KIND
    assert "tiny does not handle store.counts" in unknown.value.message
    with pytest.raises(InvalidRequest, match="n must be >= 0"):
        client.request(SetMaxConcurrency(-1))
    with pytest.raises(RemoteError) as internal:
        client.request(SetMaxConcurrency(13))
    assert internal.value.code == ErrorCode.INTERNAL
    assert "RuntimeError: unlucky" in internal.value.message
    # several requests in flight at once, each reply matched by its correlation id
    replies = client.pipeline([SetMaxConcurrency(n) for n in range(5)])
    assert [r.value for r in replies] == [0, 2, 4, 6, 8]  # type: ignore[attr-defined]


def test_ping_and_stats_answer_on_the_request_and_the_control_socket(
    context: zmq.Context[Any], endpoints: Endpoints, client: RequestClient
) -> None:
    client.call(SetMaxConcurrency(1), Ok)
    assert client.call(Ping(), Pong) == Pong("tiny")
    stats = client.call(Stats(), StatsReply)
    assert stats.name == "tiny"
    assert stats.counters["received"] == 0
    assert stats.counters["bus_requests"] == 1  # the request above; control kinds not counted
    control = RequestClient(context, endpoints.control, timeout=WAIT)
    try:
        assert control.call(Ping(), Pong) == Pong("tiny")
        assert control.call(Stats(), StatsReply).counters["dropped"] == 0
        with pytest.raises(ProtocolError) as refused:
            control.request(SetMaxConcurrency(1))
        assert refused.value.code == ErrorCode.UNKNOWN_KIND
    finally:
        control.close()


def test_stop_on_a_request_socket_is_refused_as_the_protocol_doc_says(
    client: RequestClient,
) -> None:
    # Only the control socket stops an actor: a requester that may talk to the Store must not
    # be able to stop it. docs/protocol.md is the authoritative description, so it says so.
    with pytest.raises(ProtocolError) as refused:
        client.request(Stop())
    assert refused.value.code == ErrorCode.UNKNOWN_KIND
    assert client.call(Ping(), Pong) == Pong("tiny")  # still serving
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    request_sockets = doc.split("served by `RequestServer`", 1)[1].split("\n\n", 1)[0]
    assert "stops the whole actor" not in request_sockets
    assert "`stop` there is refused with `UNKNOWN_KIND`" in " ".join(request_sockets.split())


def test_malformed_requests_get_an_error_reply_with_their_correlation_id(
    context: zmq.Context[Any], endpoints: Endpoints, client: RequestClient
) -> None:
    sock = raw_dealer(context, endpoints.requests)
    try:
        sent = [
            ([b"TMP1", b"ping", b"c1", b"\x80"], ErrorCode.VERSION_MISMATCH, b"c1"),
            ([PROTOCOL, b"no.such.kind", b"c2", b"\x80"], ErrorCode.UNKNOWN_KIND, b"c2"),
            (
                frames("dispatcher.set_max_concurrency", {"n": "x"}, b"c3"),
                ErrorCode.MALFORMED,
                b"c3",
            ),
            ([PROTOCOL, b"ping", b"c4", b"\xc1"], ErrorCode.MALFORMED, b"c4"),
            ([b"no header at all"], ErrorCode.MALFORMED, b""),
        ]
        for message_frames, _, _ in sent:
            sock.send_multipart(message_frames)
        for _, code, correlation in sent:
            reply, got = recv_reply(sock)
            assert isinstance(reply, Error) and reply.code == code, reply
            assert got == correlation
        counters = client.call(Stats(), StatsReply).counters
        assert counters["bus_malformed"] == len(sent)
        assert counters["bus_errors"] == len(sent)
    finally:
        sock.close()


def test_malformed_one_way_messages_are_dropped_and_counted(
    context: zmq.Context[Any], endpoints: Endpoints, tiny: Tiny, client: RequestClient
) -> None:
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoints.inbox)
    try:
        push.send_multipart([b"garbage"])
        push.send_multipart([b"TMP1", *encode(Completed(1, "t", KEY, "l"))[1:]])
        push.send_multipart(frames("event.completed", {"task_id": "one"}))
        push.send_multipart(encode(Completed(1, "t", KEY, "l")))  # last, and valid
        assert tiny.got_event.wait(WAIT)
        counters = client.call(Stats(), StatsReply).counters
        assert counters["received"] == 1
        assert counters["dropped"] == 3
    finally:
        push.close()


def test_malformed_traffic_is_logged_once_per_interval_per_socket_with_its_count(
    context: zmq.Context[Any], endpoints: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    actor = Tiny(endpoints.requests, endpoints.inbox)
    thread = ActorThread(actor, context, endpoints.control, clock=clock).start()
    sock = raw_dealer(context, endpoints.requests)
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoints.inbox)
    caplog.set_level(logging.WARNING, logger="taskmill.bus")

    def flood(n: int) -> None:
        for i in range(n):
            sock.send_multipart([PROTOCOL, b"ping", str(i).encode(), b"\xc1"])
            push.send_multipart([b"garbage"])
        push.send_multipart(encode(Completed(1, "t", KEY, "l")))  # valid: a marker
        for _ in range(n):
            recv_reply(sock)
        assert actor.got_event.wait(WAIT)
        actor.got_event.clear()

    def reports() -> list[str]:
        return [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]

    try:
        flood(100)
        first = reports()
        assert len(first) == 2, first  # one per socket, for the first malformed message
        assert all("1 malformed message(s)" in line for line in first)
        assert any(endpoints.requests in line for line in first)
        assert any(endpoints.inbox in line for line in first)
        clock.advance(MALFORMED_LOG_INTERVAL_S)
        flood(1)
        later = reports()[2:]
        assert len(later) == 2, later
        assert all("100 malformed message(s)" in line and "(101 in all)" in line for line in later)
    finally:
        sock.close()
        push.close()
        thread.stop()


def test_a_request_nobody_serves_raises_actor_unavailable_in_time(
    context: zmq.Context[Any], endpoints: Endpoints
) -> None:
    requester = RequestClient(context, endpoints.nobody, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(ActorUnavailable, match=r"did not answer ping within 0\.3s"):
            requester.request(Ping())
        elapsed = time.monotonic() - started
        assert 0.29 <= elapsed < 2.0
    finally:
        requester.close()


@pytest.mark.parametrize("frames_know_more", [True, False], ids=["cython", "cffi"])
def test_messages_are_received_whole_frame_by_frame(
    context: zmq.Context[Any], frames_know_more: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of finding a message's last frame (the frame's own flag on pyzmq's Cython
    # backend, the socket's RCVMORE on its CFFI backend) give the same messages.
    monkeypatch.setattr("bus.protocol._FRAMES_KNOW_MORE", frames_know_more)
    endpoint = inproc(new_namespace(), "frames")
    pull = context.socket(zmq.PULL)
    push = context.socket(zmq.PUSH)
    try:
        pull.bind(endpoint)
        push.connect(endpoint)
        sent = [[b"one"], [b"a", b"", b"c" * 70_000], [b"", b""], [b"last", b"x"]]
        for message in sent:
            send_frames(push, message)
        received: list[list[bytes]] = []
        while len(received) < len(sent):
            assert pull.poll(int(WAIT * 1000))
            received += recv_ready(pull, 100)
        assert received == sent
        assert recv_ready(pull, 100) == []
    finally:
        push.close(linger=0)
        pull.close(linger=0)


async def test_async_requests_nobody_serves_each_fail_at_their_own_timeout(
    context: zmq.Context[Any], endpoints: Endpoints
) -> None:
    requester = AsyncRequester(context, endpoints.nobody, timeout=1.0)
    try:
        started = time.monotonic()
        slow = asyncio.ensure_future(requester.request(Ping()))  # the requester's 1 s
        quick = asyncio.ensure_future(requester.request(Ping(), timeout=0.1))
        with pytest.raises(ActorUnavailable, match=r"did not answer ping within 0\.1s"):
            await quick
        quick_failed = time.monotonic() - started
        assert not slow.done()
        with pytest.raises(ActorUnavailable, match=r"did not answer ping within 1s"):
            await slow
        slow_failed = time.monotonic() - started
        assert 0.09 <= quick_failed < 0.99 <= slow_failed < 5.0
        # The requester goes on: a later request gets its own full timeout again.
        started = time.monotonic()
        with pytest.raises(ActorUnavailable, match=r"within 0\.2s"):
            await requester.request(Ping(), timeout=0.2)
        assert 0.19 <= time.monotonic() - started < 5.0
    finally:
        requester.close()


def test_a_requester_whose_routing_id_starts_with_tmp_is_answered(
    context: zmq.Context[Any], endpoints: Endpoints, tiny: Tiny
) -> None:
    requester = RequestClient(
        context,
        endpoints.requests,
        timeout=0.3,
        configure=lambda sock: sock.setsockopt(zmq.ROUTING_ID, b"TMPclient"),
    )
    try:
        assert requester.call(Ping(), Pong) == Pong("tiny")
    finally:
        requester.close()


# -- stopping -------------------------------------------------------------------------------


class Holder(Actor):
    """Each ``dispatcher.set_max_concurrency`` stops the loop, then blocks its handler until the
    test lets it go: the test decides what is queued when (the one place a handler may block)."""

    name = "holder"

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.entered = [threading.Event(), threading.Event()]
        self.release = [threading.Event(), threading.Event()]
        self.calls = 0

    def setup(self, loop: ActorLoop) -> None:
        router = loop.socket(zmq.ROUTER)
        router.bind(self.endpoint)

        def hold(message: SetMaxConcurrency) -> Ok:
            turn = self.calls
            self.calls += 1
            loop.stop()
            self.entered[turn].set()
            assert self.release[turn].wait(WAIT)
            return Ok(message.n)

        RequestServer(loop, router, self, dispatch_each({SetMaxConcurrency: hold}, self.name))


def test_requests_queued_when_an_actor_stops_are_answered_stopping(
    context: zmq.Context[Any],
) -> None:
    """inproc only: a message is in the ROUTER's pipe once ``send`` returns, which makes "queued
    before the loop's last turn" and "queued after it" something the test can arrange."""
    endpoint = inproc(new_namespace(), "holder")
    actor = Holder(endpoint)
    loop = ActorLoop(context, actor.name)
    actor.setup(loop)
    runner = threading.Thread(target=loop.run, name="holder")
    runner.start()
    sock = raw_dealer(context, endpoint)
    try:
        sock.send_multipart(encode(SetMaxConcurrency(1), b"r1"))
        assert actor.entered[0].wait(WAIT)  # r1 is being handled and has stopped the loop
        sock.send_multipart(encode(SetMaxConcurrency(2), b"r2"))  # arrives before the last turn
        actor.release[0].set()
        assert actor.entered[1].wait(WAIT)  # the last turn handles r2
        sock.send_multipart(encode(SetMaxConcurrency(3), b"r3"))  # queued after it
        sock.send_multipart(encode(Ping(), b"r4"))
        actor.release[1].set()
        replies = dict((c, m) for m, c in (recv_reply(sock) for _ in range(4)))
        assert replies[b"r1"] == Ok(1)
        assert replies[b"r2"] == Ok(2)
        for correlation in (b"r3", b"r4"):
            reply = replies[correlation]
            assert isinstance(reply, Error) and reply.code == ErrorCode.STOPPING
            assert reply.reason == "holder is stopping"
            assert type(error_from_reply(reply.code, reply.reason)) is ActorUnavailable
        runner.join(WAIT)
        assert not runner.is_alive()
    finally:
        for event in actor.release:
            event.set()
        runner.join(WAIT)
        sock.close()


def test_a_struct_takes_every_field_positionally() -> None:
    # A struct travels as an array: a field outside __init__ or keyword-only has no position.
    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Named:
        n: int

    with pytest.raises(TypeError, match="positional"):
        struct(Named)
