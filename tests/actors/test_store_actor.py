"""The Store actor on real sockets, over inproc and ipc: requests, group commit, notifications.

Actor tier: one ``StoreActor`` in an ``ActorThread``, the test as its client and subscriber. The
group-commit contract (replies only after the commit; a failing request alone rolled back) is also
checked on the batch handler directly, with a recording server instead of a socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
import zmq
from store_support import StoreEndpoints, key, running_store, store_endpoints, sub

from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.client import RequestClient
from bus.clock import FakeClock
from bus.errors import ErrorCode, InvalidRequest, PayloadTooLarge, ProtocolError
from bus.kinds import (
    ClaimNext,
    ClaimNextReply,
    ClaimSpec,
    Counts,
    CountsReply,
    Error,
    GetTask,
    Lookup,
    LookupReply,
    Peek,
    Stats,
    StatsReply,
    StoreChanged,
    Submit,
    SubmitReply,
    TaskReply,
)
from bus.kinds_run import PauseAll
from bus.limits import MAX_PAYLOAD_BYTES
from bus.protocol import Message, decode, encode, send_frames
from bus.runtime import ActorLoop
from bus.server import Request

WAIT = 5.0


@pytest.fixture(params=["inproc", "ipc"])
def endpoints(request: pytest.FixtureRequest, tmp_path: Path) -> StoreEndpoints:
    return store_endpoints(request.param, tmp_path)


@pytest.fixture
def client(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> Iterator[RequestClient]:
    with running_store(context, endpoints, tmp_path):
        store = RequestClient(context, endpoints.store, timeout=WAIT)
        try:
            yield store
        finally:
            store.close()


def counts(client: RequestClient) -> CountsReply:
    return client.call(Counts(), CountsReply)


def test_submit_then_lookup(client: RequestClient) -> None:
    reply = client.call(Submit([sub("a", 64, payload=b"body")]), SubmitReply)
    [outcome] = reply.outcomes
    assert (outcome.kind, outcome.priority) == ("inserted", 64)
    found = client.call(Lookup(key("a")), LookupReply)
    assert found.location == "active" and found.task is not None
    assert (found.task.id, found.task.payload, found.task.status) == (
        outcome.id,
        b"body",
        "pending",
    )
    assert client.call(Lookup(key("b")), LookupReply).location == "not_found"
    again = client.call(Submit([sub("a", 64)]), SubmitReply)
    assert [o.kind for o in again.outcomes] == ["duplicate"]


def test_200_pipelined_submits_are_all_acknowledged_and_stored(client: RequestClient) -> None:
    replies = client.pipeline([Submit([sub(f"t{i}", i % 256)]) for i in range(200)])
    stats = client.call(Stats(), StatsReply).counters
    # Requests that arrived together were committed together (group commit): fewer commits
    # than requests. (Sent in a burst, they queue up while the first commit is written.)
    assert (stats["requests"], stats["inserted"]) == (200, 200)
    assert stats["commits"] == stats["batches"] < 200
    assert stats["max_batch"] > 1
    assert len(replies) == 200
    assert all(isinstance(r, SubmitReply) for r in replies)
    ids = [r.outcomes[0].id for r in replies if isinstance(r, SubmitReply)]
    assert [r.outcomes[0].kind for r in replies if isinstance(r, SubmitReply)] == ["inserted"] * 200
    assert len(set(ids)) == 200
    assert counts(client).pending == 200
    for i in (0, 99, 199):
        task = client.call(GetTask(key=key(f"t{i}")), TaskReply).task
        assert task is not None and task.priority == i % 256


def test_bad_priority_gets_an_error_reply_and_writes_nothing(client: RequestClient) -> None:
    with pytest.raises(InvalidRequest, match="priority"):
        client.request(Submit([sub("ok"), sub("bad", 300)]))
    assert counts(client).pending == 0
    assert client.call(Lookup(key("ok")), LookupReply).location == "not_found"


def test_oversized_payload_gets_an_error_reply_and_writes_nothing(client: RequestClient) -> None:
    with pytest.raises(PayloadTooLarge):
        client.request(Submit([sub("ok"), sub("big", payload=b"x" * 1_048_577)]))
    assert counts(client).pending == 0
    # Exactly 1 MiB is fine.
    reply = client.call(Submit([sub("edge", payload=b"x" * 1_048_576)]), SubmitReply)
    assert reply.outcomes[0].kind == "inserted"


def test_kinds_the_store_does_not_serve_get_an_error(client: RequestClient) -> None:
    with pytest.raises(ProtocolError) as caught:
        client.request(PauseAll())
    assert caught.value.code == ErrorCode.UNKNOWN_KIND
    assert counts(client) == CountsReply(0, 0, 0, 0)  # and the store still serves


class Watcher:
    """A DEALER that looks at the queue as the Dispatcher does (``store.peek``), and so is the
    one the Store sends ``store.changed`` to, on this same pipe."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.sock = context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.notes: list[StoreChanged] = []

    def look(self) -> None:
        """A peek, waited for: the Store's next change is news to it."""
        send_frames(self.sock, encode(Peek(ClaimSpec(1)), b"look"))
        while True:
            _, correlation = self._read(WAIT)
            if correlation == b"look":
                return

    def _read(self, timeout: float) -> tuple[Message, bytes]:
        if not self.sock.poll(int(timeout * 1000)):
            raise TimeoutError("nothing from the store")
        message, correlation = decode(self.sock.recv_multipart())
        if not correlation:
            assert isinstance(message, StoreChanged)
            self.notes.append(message)
        return message, correlation

    def next_note(self, timeout: float = WAIT) -> StoreChanged | None:
        while not self.notes:
            try:
                self._read(timeout)
            except TimeoutError:
                return None
        return self.notes.pop(0)

    def close(self) -> None:
        self.sock.close()


def test_store_changed_is_sent_after_submits_and_folded_while_unanswered(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> None:
    clock = FakeClock()
    with running_store(context, endpoints, tmp_path, clock=clock, urgent_priority=5):
        store = RequestClient(context, endpoints.store, timeout=WAIT)
        watcher = Watcher(context, endpoints.store)
        try:
            watcher.look()
            store.request(Submit([sub("a", 40), sub("b", 9), sub("a", 1)]))
            # a, then a again more urgent (upgraded): three non-duplicate outcomes, the most
            # urgent 1.
            assert watcher.next_note() == StoreChanged(min_priority=1, count=3)
            store.request(Submit([sub("a", 40)]))  # a duplicate: no note
            store.request(Submit([sub("c", 77)]))  # unanswered note, not more urgent: no note
            store.request(Submit([sub("d", 9)]))  # as urgent as the unanswered one: no note
            store.request(Submit([sub("e", 5)]))  # may preempt (urgent_priority 5): a note
            assert watcher.next_note() == StoreChanged(min_priority=5, count=1)
            store.request(Submit([sub("f", 5)]))  # may preempt: always a note
            assert watcher.next_note() == StoreChanged(min_priority=5, count=1)
            store.request(Submit([sub("g", 100)]))  # unanswered and recent: no note
            store.request(Counts())  # g's notification is decided (replies go out before it)
            clock.advance(1.5)  # nobody answered for a while (a notification lost?)...
            store.request(Submit([sub("h", 120)]))  # ...so a change is news again
            assert watcher.next_note() == StoreChanged(min_priority=120, count=1)
            store.request(Submit([sub("i", 130)]))  # unanswered (h) and recent: no note
            watcher.look()  # the Dispatcher looks at the queue...
            store.request(Submit([sub("j", 150)]))  # ...so the next change is news again
            assert watcher.next_note() == StoreChanged(min_priority=150, count=1)
            assert watcher.next_note(0.2) is None  # and nothing else came
            stats = store.call(Stats(), StatsReply).counters
            assert stats["notifications_saved"] >= 4
        finally:
            watcher.close()
            store.close()


def test_a_change_reaches_the_claimer_on_its_own_pipe_behind_the_claims_reply(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> None:
    with running_store(context, endpoints, tmp_path, urgent_priority=0):
        producer = RequestClient(context, endpoints.store, timeout=WAIT)
        dispatcher = context.socket(zmq.DEALER)
        dispatcher.connect(endpoints.store)
        try:
            producer.call(Submit([sub("mid", 100)]), SubmitReply)
            # The claim and an urgent submission leave together; whatever order the Store
            # runs them in, the claim's reply comes first on the claimer's pipe.
            send_frames(dispatcher, encode(ClaimNext(ClaimSpec(1, 255, 0)), b"c1"))
            producer.call(Submit([sub("urgent", 0)]), SubmitReply)
            assert dispatcher.poll(int(WAIT * 1000))
            reply, correlation = decode(dispatcher.recv_multipart())
            assert correlation == b"c1" and isinstance(reply, ClaimNextReply)
            assert dispatcher.poll(int(WAIT * 1000))
            note, correlation = decode(dispatcher.recv_multipart())
            assert correlation == b"" and note == StoreChanged(min_priority=0, count=1)
        finally:
            dispatcher.close(linger=0)
            producer.close()


def test_a_standing_claim_cut_short_by_its_reply_size_stands_no_more(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> None:
    """A standing claim that could not carry every row it found (the reply's size) tells the
    Dispatcher it was not exhausted, and the Dispatcher claims again: claiming on its behalf
    once more before that claim arrives would start tasks for slots its claim fills too."""
    with running_store(context, endpoints, tmp_path):
        producer = RequestClient(context, endpoints.store, timeout=WAIT)
        dispatcher = Watcher(context, endpoints.store)
        try:
            send_frames(dispatcher.sock, encode(ClaimNext(ClaimSpec(8)), b"c1"))
            reply, correlation = dispatcher._read(WAIT)
            assert correlation == b"c1" and isinstance(reply, ClaimNextReply) and reply.exhausted
            big = [sub(f"big{i}", payload=b"x" * MAX_PAYLOAD_BYTES) for i in range(3)]
            producer.call(Submit(big), SubmitReply)
            pushed = dispatcher.next_note()
            assert pushed is not None and len(pushed.claimed) == 2 and not pushed.exhausted
            producer.call(Submit([sub("small")]), SubmitReply)
            assert counts(producer).running == 2  # nothing more until the Dispatcher asks
        finally:
            dispatcher.close()
            producer.close()


def test_a_claim_that_crossed_a_push_takes_only_the_slots_left(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> None:
    """The Dispatcher counts its free slots when it sends a claim; rows the standing claim
    pushed to it meanwhile took some of them. Its claim names the last push it had handled,
    and the Store takes the later ones' rows off the claim's limit."""
    with running_store(context, endpoints, tmp_path):
        producer = RequestClient(context, endpoints.store, timeout=WAIT)
        dispatcher = Watcher(context, endpoints.store)

        def claim(spec: ClaimSpec, tag: bytes) -> ClaimNextReply:
            send_frames(dispatcher.sock, encode(ClaimNext(spec), tag))
            while True:
                reply, correlation = dispatcher._read(WAIT)
                if correlation == tag:
                    assert isinstance(reply, ClaimNextReply)
                    return reply

        try:
            assert claim(ClaimSpec(1), b"c1").exhausted  # the queue empty: its slot stands
            producer.call(Submit([sub("a")]), SubmitReply)
            pushed = dispatcher.next_note()
            assert pushed is not None and [r.label for r in pushed.claimed] == ["a"]
            assert pushed.push > 0
            producer.call(Submit([sub("b"), sub("c")]), SubmitReply)
            # Sent before the push was handled: two slots free as the Dispatcher counted.
            stale = claim(ClaimSpec(2, pushes_seen=0), b"c2")
            assert [r.label for r in stale.tasks] == ["b"]
            # Sent after: every slot it counts is free.
            fresh = claim(ClaimSpec(1, pushes_seen=pushed.push), b"c3")
            assert [r.label for r in fresh.tasks] == ["c"]
            assert counts(producer).running == 3
        finally:
            dispatcher.close()
            producer.close()


def test_tasks_survive_an_actor_restart(
    context: zmq.Context[Any], endpoints: StoreEndpoints, tmp_path: Path
) -> None:
    with running_store(context, endpoints, tmp_path):
        store = RequestClient(context, endpoints.store, timeout=WAIT)
        store.request(Submit([sub("kept", payload=b"k")]))
        store.close()
    with running_store(context, endpoints, tmp_path):
        store = RequestClient(context, endpoints.store, timeout=WAIT)
        try:
            found = store.call(Lookup(key("kept")), LookupReply)
            assert found.task is not None and found.task.payload == b"k"
        finally:
            store.close()


# -- group commit, on the batch handler -------------------------------------------------------


class RecordingServer:
    """Stands in for ``RequestServer``: records replies, and what a second connection to the
    database file could see at the moment each reply was sent."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.sent: list[tuple[Message, int]] = []

    def send(self, envelope: list[bytes], message: Message, correlation: bytes) -> None:
        conn = apsw.Connection(str(self.db_file))
        visible = conn.execute("SELECT count(*) FROM tasks").fetchall()[0][0]
        conn.close()
        self.sent.append((message, visible))


@contextmanager
def batch_handler(context: zmq.Context[Any], tmp_path: Path) -> Iterator[StoreActor]:
    """A set-up Store actor whose batch handler the test calls directly."""
    namespace = f"inproc://batch-{id(tmp_path)}"
    actor = StoreActor(
        lambda: StoreDB(str(tmp_path / "tasks.db"), clock=FakeClock()),
        f"{namespace}-store",
    )
    loop = ActorLoop(context, "store")
    actor.setup(loop)
    try:
        yield actor
    finally:
        loop.close()
        actor.on_stop()


def test_a_batch_commits_once_then_replies_and_failures_stay_alone(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with batch_handler(context, tmp_path) as actor:
        server = RecordingServer(tmp_path / "tasks.db")
        messages: list[Message] = [
            Submit([sub("a")]),
            Submit([sub("b"), sub("bad", 999)]),
            Submit([sub("c"), sub("a", 5)]),
            Counts(),
        ]
        requests = [Request(m, [b"peer"], str(i).encode(), server) for i, m in enumerate(messages)]  # type: ignore[arg-type]
        actor._on_batch(requests)
        replies = [message for message, _ in server.sent]
        assert isinstance(replies[0], SubmitReply)
        assert isinstance(replies[1], Error) and replies[1].code == ErrorCode.INVALID
        assert isinstance(replies[2], SubmitReply)
        assert [o.kind for o in replies[2].outcomes] == ["inserted", "upgraded"]
        assert replies[3] == CountsReply(pending=2, running=0, paused=0, waiting=0)
        # Every reply went out after the commit: another connection already saw both rows.
        assert [visible for _, visible in server.sent] == [2, 2, 2, 2]
        assert actor.db.get_task(key=key("b")) is None
        stats = actor.stats()
        assert (stats["batches"], stats["commits"], stats["errors"]) == (1, 1, 1)
        assert (stats["inserted"], stats["upgraded"]) == (2, 1)


class Replies:
    """Stands in for ``RequestServer``: keeps the replies."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, envelope: list[bytes], message: Message, correlation: bytes) -> None:
        self.sent.append(message)


def test_a_busy_store_prepares_no_statement_again(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    # A batch in which a request fails runs again, each request in a savepoint. The statements
    # that open and close those savepoints must be the same every time: a new text per
    # savepoint would be prepared afresh, and push the task INSERT and the claim out of the
    # connection's statement cache, to be prepared afresh as well.
    with batch_handler(context, tmp_path) as actor:
        server = Replies()

        def batch_with_a_refused_request(n: int) -> None:
            messages = [Submit([sub(f"t{n}-0")]), Submit([sub(f"t{n}-1")]), Submit([sub("x", 999)])]
            requests = [
                Request(m, [b"peer"], b"%d" % i, server)  # type: ignore[arg-type]
                for i, m in enumerate(messages)
            ]
            actor._on_batch(requests)
            actor._on_batch([Request(ClaimNext(ClaimSpec(2)), [b"peer"], b"c", server)])  # type: ignore[arg-type]

        for n in range(5):  # the first batches prepare what every later one uses
            batch_with_a_refused_request(n)
        before = actor.stats()
        for n in range(5, 205):
            batch_with_a_refused_request(n)
        after = actor.stats()
        assert after["reruns"] - before["reruns"] == 200
        assert after["commits"] - before["commits"] == 400
        assert after["statements_reused"] > before["statements_reused"] + 2_000
        assert after["statements_prepared"] == before["statements_prepared"]
        refused = [r for r in server.sent if isinstance(r, Error)]
        assert len(refused) == 205 and {r.code for r in refused} == {ErrorCode.INVALID}
        assert actor.db.counts().running == 410  # every valid submit was committed and claimed


def test_a_batch_of_valid_requests_commits_once_without_running_again(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    with batch_handler(context, tmp_path) as actor:
        server = Replies()
        requests = [
            Request(Submit([sub(f"t{i}")]), [b"peer"], b"%d" % i, server)  # type: ignore[arg-type]
            for i in range(20)
        ]
        actor._on_batch(requests)
        stats = actor.stats()
        assert (stats["commits"], stats["reruns"], stats["rollbacks"]) == (1, 0, 0)
        assert all(isinstance(r, SubmitReply) for r in server.sent) and len(server.sent) == 20
        assert actor.db.counts().pending == 20


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "in-a-batch"])
def test_a_request_that_fails_after_writing_leaves_nothing_behind(
    context: zmq.Context[Any], tmp_path: Path, alone: bool
) -> None:
    # A request alone in its batch runs without a savepoint; its failure must still undo what
    # it wrote, exactly as the savepoint does for a request among others.
    with batch_handler(context, tmp_path) as actor:
        submit = actor._handlers[Submit]

        def fails_after_writing(message: Message) -> Message:
            assert isinstance(message, Submit)
            reply = submit(message)
            if message.submissions[0].key == key("doomed"):
                raise InvalidRequest("refused after writing")
            return reply

        actor._handlers[Submit] = fails_after_writing
        server = RecordingServer(tmp_path / "tasks.db")
        messages: list[Message] = [Submit([sub("doomed")])]
        if not alone:
            messages.append(Submit([sub("kept")]))
        requests = [Request(m, [b"peer"], str(i).encode(), server) for i, m in enumerate(messages)]  # type: ignore[arg-type]
        actor._on_batch(requests)
        replies = [message for message, _ in server.sent]
        assert isinstance(replies[0], Error) and replies[0].code == ErrorCode.INVALID
        assert actor.db.get_task(key=key("doomed")) is None
        expected_rows = 0 if alone else 1
        assert [visible for _, visible in server.sent] == [expected_rows] * len(messages)
        stats = actor.stats()
        assert (stats["commits"], stats["rollbacks"]) == ((0, 1) if alone else (1, 0))
        # The Store goes on: the next lone request is committed.
        actor._on_batch([Request(Submit([sub("next")]), [b"peer"], b"9", server)])  # type: ignore[arg-type]
        assert actor.db.get_task(key=key("next")) is not None
