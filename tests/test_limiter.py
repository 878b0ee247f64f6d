"""The GroupLimiter: the rule of semantics.md "Groups", and its actor over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.limiter.actor import GroupBook, GroupLimiter, LimiterSettings
from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.client import RequestClient
from bus.clock import SystemClock
from bus.endpoints import inproc, new_namespace
from bus.errors import InvalidRequest
from bus.hosting import ActorThread
from bus.kinds import Claim, Submit, SubmitReply, TasksReply
from bus.kinds_run import (
    Admit,
    AdmitReply,
    GetLimiterState,
    GroupCandidate,
    LimiterState,
    LimitsChanged,
    ReleaseGroups,
    SetGroupLimit,
)
from bus.protocol import decode
from tests.store_support import sub


def c(task_id: int, group: str) -> GroupCandidate:
    return GroupCandidate(task_id, group)


def test_effective_limit_is_override_else_positive_default_else_unlimited() -> None:
    book = GroupBook(default=2, overrides={"hot": 8, "off": 0})
    assert book.limit("hot") == 8
    assert book.limit("off") == 0
    assert book.limit("other") == 2
    assert GroupBook(default=0).limit("any") is None


def test_admission_counts_running_and_skips_full_groups_without_blocking() -> None:
    book = GroupBook(overrides={"a": 1})
    assert book.admit([c(1, "a"), c(2, "a"), c(3, "b"), c(4, "a")]) == [1, 3]
    assert book.saturated() == ["a"]
    assert book.admit([c(5, "a")]) == []


def test_zero_blocks_a_group() -> None:
    book = GroupBook(overrides={"off": 0})
    assert book.admit([c(1, "off")]) == []
    assert book.saturated() == ["off"]


def test_release_frees_a_place_and_says_so() -> None:
    book = GroupBook(overrides={"a": 1})
    book.admit([c(1, "a")])
    assert book.release([1]) is True
    assert book.admit([c(2, "a")]) == [2]
    assert book.release([999]) is False


def test_a_repeated_admit_of_the_same_task_is_not_counted_twice() -> None:
    book = GroupBook(overrides={"a": 2})
    book.admit([c(1, "a")])
    assert book.admit([c(1, "a"), c(2, "a")]) == [1, 2]
    assert book.running["a"] == 2


def test_limits_change_at_runtime() -> None:
    book = GroupBook(default=1)
    book.admit([c(1, "a")])
    assert book.admit([c(2, "a")]) == []
    book.set_limit("a", 3)
    assert book.admit([c(2, "a"), c(3, "a"), c(4, "a")]) == [2, 3]
    book.set_limit("a", None)
    book.set_default(0)
    assert book.admit([c(4, "a")]) == [4]
    with pytest.raises(InvalidRequest):
        book.set_limit("a", -1)


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_a_restarted_limiter_rebuilds_its_counts_from_the_store(
    tmp_path: Path, context: zmq.Context[Any]
) -> None:
    ns = new_namespace()
    store_ep, limiter_ep, notify_ep = (inproc(ns, n) for n in ("store", "limiter", "notify"))

    def open_db() -> StoreDB:
        return StoreDB(str(tmp_path / "t.db"), clock=SystemClock())

    store = ActorThread(
        StoreActor(open_db, store_ep, inproc(ns, "store-notify")), context, inproc(ns, "sc")
    ).start()
    client = RequestClient(context, store_ep)
    limiter_client = RequestClient(context, limiter_ep)
    watcher = context.socket(zmq.SUB)
    watcher.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        outcomes = client.call(
            Submit([sub("a1", group_key="a"), sub("a2", group_key="a"), sub("b1", group_key="b")]),
            SubmitReply,
        ).outcomes
        ids = [o.id for o in outcomes if o.id is not None]
        client.call(Claim(ids[:2]), TasksReply)  # a1 and a2 are running before the limiter starts
        settings = LimiterSettings(limiter_ep, notify_ep, store_ep, group_concurrency=(("a", 2),))
        limiter = ActorThread(GroupLimiter(settings), context, inproc(ns, "lc")).start()
        try:
            # An admit sent at once is answered only after the counts were rebuilt.
            reply = limiter_client.call(Admit([c(ids[2], "b"), c(99, "a")]), AdmitReply)
            assert (reply.admitted, reply.saturated) == ([ids[2]], ["a"])
            state = limiter_client.call(GetLimiterState(), LimiterState)
            assert state.ready and state.running == {"a": 2, "b": 1}
            limiter_client.request(ReleaseGroups([ids[0]]))
            state = limiter_client.call(GetLimiterState(), LimiterState)
            assert state.running == {"a": 1, "b": 1}
        finally:
            limiter.stop()
    finally:
        watcher.close(linger=0)
        client.close()
        limiter_client.close()
        store.stop()


def test_a_limit_change_is_published(context: zmq.Context[Any], tmp_path: Path) -> None:
    ns = new_namespace()
    store_ep, limiter_ep, notify_ep = (inproc(ns, n) for n in ("store", "limiter", "notify"))

    def open_db() -> StoreDB:
        return StoreDB(str(tmp_path / "t.db"), clock=SystemClock())

    store = ActorThread(
        StoreActor(open_db, store_ep, inproc(ns, "store-notify")), context, inproc(ns, "sc")
    ).start()
    settings = LimiterSettings(limiter_ep, notify_ep, store_ep)
    limiter = ActorThread(GroupLimiter(settings), context, inproc(ns, "lc")).start()
    watcher = context.socket(zmq.SUB)
    watcher.setsockopt(zmq.SUBSCRIBE, b"")
    watcher.connect(notify_ep)
    client = RequestClient(context, limiter_ep)
    try:
        assert client.call(GetLimiterState(), LimiterState) is not None
        # PUB/SUB has no handshake: repeat the change until the subscription has taken.
        for _ in range(50):
            client.request(SetGroupLimit("g", 0))
            if watcher.poll(100):
                break
        seen: list[list[str]] = []
        while watcher.poll(1000):
            message = decode(watcher.recv_multipart())[0]
            assert isinstance(message, LimitsChanged)
            seen.append(message.saturated)
            if ["g"] in seen:
                break
        assert ["g"] in seen
    finally:
        watcher.close(linger=0)
        client.close()
        limiter.stop()
        store.stop()
