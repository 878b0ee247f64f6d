"""The GroupLimiter's flow policy over real sockets with a real Store: rate limits and weights
handed over at start, runtime changes, group pauses with their events and timers."""

from __future__ import annotations

import time
from typing import Any

import pytest
import zmq
from test_limiter import context, ready_state, store_and_limiter

from bus.endpoints import inproc, new_namespace
from bus.errors import InvalidRequest
from bus.events import SchedulerEvent
from bus.kinds import Ok
from bus.kinds_flow import (
    FlowReply,
    GetFlow,
    GroupPauseReply,
    PauseGroupRequest,
    ResumeGroupRequest,
    SetGroupMinimumSlots,
    SetGroupWeight,
    SetRateLimit,
)
from bus.protocol import decode

__all__ = ["context"]


def events_socket(context: zmq.Context[Any]) -> tuple[zmq.Socket[Any], str]:
    endpoint = inproc(new_namespace(), "events")
    sock = context.socket(zmq.PULL)
    sock.bind(endpoint)
    return sock, endpoint


def next_event(sock: zmq.Socket[Any], timeout_s: float = 10.0) -> SchedulerEvent:
    assert sock.poll(int(timeout_s * 1000)), "no event"
    message, _ = decode(sock.recv_multipart())
    assert isinstance(message, SchedulerEvent)
    return message


def test_the_configured_policy_is_handed_over_and_runtime_changes_win(
    context: zmq.Context[Any], tmp_path: Any
) -> None:
    built = {
        "rate_limits": (("type:email", (10, 1000, 20)),),
        "group_weights": (("a", 3.0),),
        "group_minimum_slots": (("b", 1),),
    }
    with store_and_limiter(context, tmp_path, **built) as (store, limiter, _):
        ready_state(limiter)  # asked after its hand-over: answered once that is done
        state = store.call(GetFlow(), FlowReply)
        assert [(r.scope, r.permits, r.burst) for r in state.rate_limits] == [
            ("type:email", 10, 20)
        ]
        assert (state.weights, state.min_slots) == ({"a": 3.0}, {"b": 1})
        limiter.call(SetRateLimit("type:email", [5, 1000, 5]), Ok)
        limiter.call(SetRateLimit("group:api", [1, 60_000, 1]), Ok)
        limiter.call(SetGroupWeight("a", 5.0), Ok)
        state = store.call(GetFlow(), FlowReply)
        assert {r.scope: r.permits for r in state.rate_limits} == {"type:email": 5, "group:api": 1}
        assert state.weights == {"a": 5.0}
        limiter.call(SetRateLimit("type:email"), Ok)  # removed: the built one too
        state = store.call(GetFlow(), FlowReply)
        assert [r.scope for r in state.rate_limits] == ["group:api"]


@pytest.mark.parametrize(
    "bad",
    [
        SetRateLimit("type:email", [-1, 1000, 1]),
        SetRateLimit("type:email", [1, 1000]),
        SetRateLimit("email", [1, 1000, 1]),
        SetGroupWeight("a", 0.0),
        SetGroupWeight("a", -1.0),  # the Store's mark of a removed weight, not a weight
        SetGroupWeight("a", float("nan")),
        SetGroupWeight("", 1.0),
        SetGroupMinimumSlots("a", -1),
        SetGroupMinimumSlots("", 1),
        PauseGroupRequest(""),
        PauseGroupRequest("g", until_ms=1),
    ],
)
def test_bad_changes_are_refused_and_change_nothing(
    context: zmq.Context[Any], tmp_path: Any, bad: Any
) -> None:
    with store_and_limiter(context, tmp_path) as (store, limiter, _):
        with pytest.raises(InvalidRequest):
            limiter.call(bad, Ok)
        state = store.call(GetFlow(), FlowReply)
        assert (state.rate_limits, state.weights, state.paused_groups) == ([], {}, [])
        limiter.call(SetGroupWeight("a", 2.0), Ok)  # the limiter still serves


def test_a_pause_publishes_its_events_and_ends_by_itself(
    context: zmq.Context[Any], tmp_path: Any
) -> None:
    sock, endpoint = events_socket(context)
    with store_and_limiter(context, tmp_path, events_endpoint=endpoint) as (store, limiter, _):
        reply = limiter.call(PauseGroupRequest("s3"), GroupPauseReply)
        assert reply.changed
        event = next_event(sock)
        assert (event.type, event.data()) == (
            "group_paused",
            {"group": "s3", "pending_count": 0, "running_count": 0},
        )
        assert not limiter.call(PauseGroupRequest("s3"), GroupPauseReply).changed  # no event
        assert limiter.call(ResumeGroupRequest("s3"), GroupPauseReply).changed
        event = next_event(sock)
        assert (event.type, event.data()) == ("group_resumed", {"group": "s3", "resumed_count": 0})
        until = int(time.time() * 1000) + 200
        limiter.call(PauseGroupRequest("s3", until), GroupPauseReply)
        assert next_event(sock).type == "group_paused"
        event = next_event(sock)  # the limiter's timer
        assert event.type == "group_resumed" and event.at_ms >= until
        assert store.call(GetFlow(), FlowReply).paused_groups == []
    sock.close(linger=0)
