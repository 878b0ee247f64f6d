"""The GroupLimiter: the group policy it owns, kept in the Store where claims apply it; the actor
over real sockets with a real Store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import zmq
from store_support import sub

from actors.limiter.actor import GroupLimiter, LimiterSettings
from actors.store.actor import StoreActor
from actors.store.claim import GroupPolicy
from actors.store.db import StoreDB
from bus.client import RequestClient
from bus.clock import SystemClock
from bus.endpoints import inproc, new_namespace
from bus.errors import InvalidRequest
from bus.hosting import ActorThread
from bus.kinds import ClaimNext, ClaimNextReply, ClaimSpec, Submit, SubmitReply
from bus.kinds_run import GetLimiterState, LimiterState, SetDefaultGroupLimit, SetGroupLimit


def test_effective_limit_is_override_else_positive_default_else_unlimited() -> None:
    policy = GroupPolicy(configured_default=0, configured={"a": 2, "z": 0})
    assert (policy.limit("a"), policy.limit("z"), policy.limit("other")) == (2, 0, None)
    policy.runtime_default = 3
    assert policy.limit("other") == 3
    policy.runtime["a"] = 5  # a runtime value wins over the configured one
    assert policy.limit("a") == 5
    policy.runtime["z"] = -1  # the override removed, the configured one too: the default applies
    assert policy.limit("z") == 3
    assert policy.full({"a": 5, "other": 2, "b": 3}) == {"a", "b"}


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@contextmanager
def store_and_limiter(
    context: zmq.Context[Any], tmp_path: Path, **limits: Any
) -> Iterator[tuple[RequestClient, RequestClient, ActorThread]]:
    """A Store and a GroupLimiter in their threads, and a client of each; the limiter thread is
    yielded so that a test can stop it."""
    ns = new_namespace()
    store_ep, limiter_ep = inproc(ns, "store"), inproc(ns, "limiter")

    def open_db() -> StoreDB:
        return StoreDB(str(tmp_path / "t.db"), clock=SystemClock())

    store = ActorThread(StoreActor(open_db, store_ep), context, inproc(ns, "sc")).start()
    limiter = ActorThread(
        GroupLimiter(LimiterSettings(limiter_ep, store_ep, **limits)), context, inproc(ns, "lc")
    ).start()
    store_client, limiter_client = (
        RequestClient(context, store_ep),
        RequestClient(context, limiter_ep),
    )
    try:
        yield store_client, limiter_client, limiter
    finally:
        store_client.close()
        limiter_client.close()
        limiter.stop()
        store.stop()


def ready_state(client: RequestClient) -> LimiterState:
    """The limiter's state once it has handed its configured limits to the Store."""
    for _ in range(200):
        state = client.call(GetLimiterState(), LimiterState)
        if state.ready:
            return state
    raise AssertionError("the limiter never handed its limits to the store")


def claim(store: RequestClient, limit: int = 10) -> list[str]:
    return [t.label for t in store.call(ClaimNext(ClaimSpec(limit)), ClaimNextReply).tasks]


def test_the_claim_applies_the_limiters_policy_and_counts_running_tasks(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with store_and_limiter(context, tmp_path, group_concurrency=(("a", 2),)) as (store, lim, _):
        assert ready_state(lim).overrides == {"a": 2}
        store.call(Submit([sub(f"a{i}", group_key="a") for i in range(3)]), SubmitReply)
        store.call(Submit([sub("b1", group_key="b")]), SubmitReply)
        # a at its limit, passed over (asking for no more than it takes: no claim left standing)
        assert claim(store, 3) == ["a0", "a1", "b1"]
        state = lim.call(GetLimiterState(), LimiterState)
        assert state.running == {"a": 2, "b": 1}
        lim.request(SetGroupLimit("a", 3))
        assert claim(store) == ["a2"]  # answered after the Store committed the change


def test_runtime_limits_survive_a_restart_and_the_configured_ones_are_set_anew(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with store_and_limiter(context, tmp_path, group_concurrency=(("a", 2), ("c", 1))) as (
        _,
        lim,
        __,
    ):
        ready_state(lim)
        lim.request(SetGroupLimit("b", 0))
        lim.request(SetGroupLimit("c", None))  # removes the configured override too
        lim.request(SetDefaultGroupLimit(7))
    with store_and_limiter(context, tmp_path, group_concurrency=(("a", 4),)) as (_, lim, __):
        state = ready_state(lim)
        assert (state.default, state.overrides) == (7, {"a": 4, "b": 0})


def test_a_bad_limit_is_refused_and_changes_nothing(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with store_and_limiter(context, tmp_path) as (_, lim, __):
        ready_state(lim)
        for bad in (SetGroupLimit("g", -1), SetGroupLimit("", 2), SetDefaultGroupLimit(-3)):
            with pytest.raises(InvalidRequest):
                lim.request(bad)
        state = lim.call(GetLimiterState(), LimiterState)
        assert (state.default, state.overrides) == (0, {})


def test_grouped_work_is_claimed_while_the_limiter_is_down(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    # The policy lives in the Store: no claim waits on the limiter.
    with store_and_limiter(context, tmp_path, group_concurrency=(("a", 1),)) as (store, lim, t):
        ready_state(lim)
        t.stop()
        store.call(Submit([sub("a1", group_key="a"), sub("a2", group_key="a")]), SubmitReply)
        assert claim(store) == ["a1"]


def test_a_limiter_with_a_bad_configuration_does_not_start() -> None:
    with pytest.raises(InvalidRequest):
        GroupLimiter(LimiterSettings("inproc://x", "inproc://y", group_concurrency=(("g", -1),)))
