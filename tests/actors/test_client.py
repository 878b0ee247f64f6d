"""``Client`` and ``AsyncClient`` against real actors on ipc sockets.

The actors are built by the same functions the Procfile processes use (``taskmill.processes``)
and run as threads of this process; the clients reach them only through the ipc endpoints of the
deployment configuration, as another process would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.errors import ActorUnavailable
from bus.kinds import Outcome, Submit, SubmitReply
from taskmill.client import AsyncClient
from taskmill.deploy import DeploymentConfig
from taskmill.events import Completed, SchedulerEvent
from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client
from taskmill.task import MAX_PAYLOAD_BYTES, TaskSubmission
from tests.procfile_support import actor_threads
from tests.scheduler_support import builder

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def cfg(tmp_path: Path) -> Iterator[DeploymentConfig]:
    """A running deployment (every actor a thread, on ipc sockets); its configuration."""
    with actor_threads(tmp_path) as cfg:
        yield cfg


def _until(
    events: EventSubscriber, predicate: Callable[[Any], bool], timeout: float = 10.0
) -> list[SchedulerEvent]:
    """Events received until one satisfies ``predicate`` (that one included)."""
    seen: list[SchedulerEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = events.recv(timeout=max(0.0, deadline - time.monotonic()))
        if event is not None:
            seen.append(event)
            if predicate(event):
                return seen
    raise AssertionError(f"no matching event within {timeout}s; saw {[e.type for e in seen]}")


def _sleepy(key: str, seconds: float) -> TaskSubmission:
    # Many steps: the first progress report comes early.
    return TaskSubmission("sleepy", key=key, label=key).payload_json(
        {"seconds": seconds, "steps": int(seconds * 20)}
    )


def test_submit_lookup_and_history(cfg: DeploymentConfig) -> None:
    with Client(cfg) as client, client.subscribe() as events:
        outcomes = client.submit_batch(
            [TaskSubmission("noop", key="a"), TaskSubmission("noop", key="a")]
        )
        assert [o.kind.value for o in outcomes] == ["inserted", "duplicate"]
        one = client.submit(TaskSubmission("noop", key="b", label="bee"))
        assert one.is_inserted() and one.id != outcomes[0].id
        assert client.submit_batch([]) == []
        done: set[int] = set()

        def both_completed(event: SchedulerEvent) -> bool:
            if isinstance(event, Completed):
                done.add(event.task_id)
            return len(done) == 2

        _until(events, both_completed)
        assert done == {outcomes[0].id, one.id}

        found = client.lookup("noop", "b")
        assert found.location == "history" and found.record is not None
        assert found.record.label == "bee" and found.record.status == "completed"
        assert client.lookup("noop", b"b") == found
        assert client.lookup("noop", "nothing").location == "not_found"

        history = client.history()
        assert [h.task_id for h in history] == [one.id, outcomes[0].id]  # newest first
        assert [h.task_id for h in client.history(limit=1, offset=1)] == [outcomes[0].id]


def test_history_larger_than_a_frame_comes_back_whole_in_pages(cfg: DeploymentConfig) -> None:
    # Five completed runs with payloads of 1 MiB (the most allowed) and labels at their limit:
    # more than one reply frame holds, so the Store answers in pages and the client joins them.
    payloads = [bytes([i]) * MAX_PAYLOAD_BYTES for i in range(5)]
    with Client(cfg) as client, client.subscribe() as events:
        ids = {
            client.submit(TaskSubmission("noop", key=f"big{i}", label="é" * 1024).payload(p)).id
            for i, p in enumerate(payloads)
        }
        done: set[int | None] = set()

        def all_completed(event: SchedulerEvent) -> bool:
            if isinstance(event, Completed):
                done.add(event.task_id)
            return done == ids

        _until(events, all_completed)
        history = client.history(limit=10)
        assert [h.payload for h in reversed(history)] == payloads  # newest first
        assert [h.task_id for h in client.history(limit=2, offset=3)] == [
            h.task_id for h in history[3:5]
        ]

    async def from_asyncio() -> list[bytes | None]:
        async with AsyncClient(cfg) as aclient:
            return [h.payload for h in await aclient.history(limit=10)]

    assert asyncio.run(from_asyncio()) == [h.payload for h in history]


def test_snapshot_shows_running_tasks_with_progress_and_cancel_stops_one(
    cfg: DeploymentConfig,
) -> None:
    with Client(cfg) as client, client.subscribe() as events:
        outcome = client.submit(_sleepy("long", 40.0))
        _until(events, lambda e: e.type == "progress" and e.task_id == outcome.id, timeout=15)
        snapshot = client.snapshot()
        assert [t.id for t in snapshot.running] == [outcome.id]
        assert snapshot.pending_count == 0 and snapshot.max_concurrency == 16
        assert not snapshot.is_paused
        (progress,) = snapshot.progress
        assert progress.task_id == outcome.id
        assert progress.reported_percent is not None and 0 < progress.reported_percent < 0.5
        assert client.lookup("sleepy", "long").location == "active"

        assert outcome.id is not None
        assert client.cancel(outcome.id) is True
        _until(events, lambda e: e.type == "cancelled" and e.task_id == outcome.id)
        assert client.cancel(outcome.id) is False  # no longer active
        assert client.snapshot().running == []
        assert client.history(limit=1)[0].status == "cancelled"


async def test_the_async_client_does_the_same(cfg: DeploymentConfig) -> None:
    async with AsyncClient(cfg) as client, await client.subscribe() as events:
        outcome = await client.submit(_sleepy("async", 40.0))
        quick = await client.submit_batch([TaskSubmission("noop", key=f"q{i}") for i in range(5)])
        assert all(o.is_inserted() for o in quick)
        async for event in events:
            if event.type == "progress" and getattr(event, "task_id", None) == outcome.id:
                break
        snapshot = await client.snapshot()
        assert outcome.id in [t.id for t in snapshot.running]
        assert [p.task_id for p in snapshot.progress if p.reported_percent] == [outcome.id]
        assert (await client.lookup("sleepy", "async")).location == "active"
        assert outcome.id is not None
        assert await client.cancel(outcome.id) is True
        async for event in events:
            if event.type == "cancelled" and getattr(event, "task_id", None) == outcome.id:
                break
        found = await client.lookup("sleepy", "async")
        assert found.location == "history" and found.record is not None
        assert found.record.status == "cancelled"
        by_key = await client.store().history_by_key(found.record.key)
        assert [h.task_id for h in by_key] == [outcome.id]
        assert outcome.id in [h.task_id for h in await client.history(limit=100)]


def test_the_configuration_comes_from_the_environment_by_default(
    cfg: DeploymentConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKMILL_RUN_DIR", cfg.run_dir)
    with Client() as client:
        assert client.topology == cfg.topology()
        assert client.submit(TaskSubmission("noop", key="env")).is_inserted()


class FlakyStore:
    """Stands in for the Store's request client: unavailable ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[Submit] = []

    def call(self, message: Submit, reply_type: type, timeout: float | None = None) -> Any:
        self.sent.append(message)
        if len(self.sent) <= self.failures:
            raise ActorUnavailable("store did not answer")
        return SubmitReply([Outcome("inserted", i + 1) for i in range(len(message.submissions))])

    def close(self) -> None:
        pass


def _flaky_client(monkeypatch: pytest.MonkeyPatch, failures: int, retries: int) -> Any:
    pauses: list[float] = []
    monkeypatch.setattr("taskmill.sync_client.time.sleep", pauses.append)
    client = Client(DeploymentConfig(transport="tcp", insecure=True), retries=retries)
    client._store.close()
    store = FlakyStore(failures)
    client._store = store  # type: ignore[assignment]
    return client, store, pauses


def test_a_submission_is_retried_with_the_same_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    client, store, pauses = _flaky_client(monkeypatch, failures=2, retries=3)
    with client:
        outcomes = client.submit_batch([TaskSubmission("noop", key="x"), TaskSubmission("noop")])
        assert [o.id for o in outcomes] == [1, 2]
        assert len(store.sent) == 3
        assert len({m.request_id for m in store.sent}) == 1  # one request, sent three times
        assert store.sent[0].request_id and len(store.sent[0].request_id) == 32
        assert pauses == [0.25, 0.5]  # doubling
        client.submit(TaskSubmission("noop", key="y"))
        assert store.sent[-1].request_id != store.sent[0].request_id  # a new request, a new id


def test_a_store_that_stays_away_raises_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    client, store, pauses = _flaky_client(monkeypatch, failures=10, retries=2)
    with client, pytest.raises(ActorUnavailable):
        client.submit(TaskSubmission("noop"))
    assert len(store.sent) == 3 and len(pauses) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -5}, "retries must be a non-negative integer"),
        ({"timeout": -1.0}, "timeout must be a positive number of seconds"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds"),
    ],
)
def test_a_client_refuses_negative_retries_and_timeouts(
    options: dict[str, Any], message: str
) -> None:
    cfg = DeploymentConfig(transport="tcp", insecure=True)
    with pytest.raises(ValueError, match=message):
        Client(cfg, **options)
    with pytest.raises(ValueError, match=message):
        AsyncClient(cfg, **options)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TaskSubmission("t", key="a\udc80"), "key is not valid text"),
        (lambda: TaskSubmission("t").label("\ud800"), "label is not valid text"),
        (lambda: TaskSubmission("t", group="\udfff"), "group is not valid text"),
        (lambda: TaskSubmission("t\udc80"), "task_type is not valid text"),
        (lambda: TaskSubmission("t", key="k" * 1025), "key is 1025 characters long"),
    ],
)
def test_text_that_cannot_travel_is_refused_where_it_is_set(
    build: Callable[[], TaskSubmission], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_wait_result_returns_the_finished_task(cfg: DeploymentConfig) -> None:
    with Client(cfg) as client:
        outcome = client.submit(TaskSubmission("echo").payload_json({"answer": 42}))
        assert outcome.id is not None
        record = client.wait_result(outcome.id, timeout=10.0)
        assert (record.status.value, record.result_json()) == ("completed", {"answer": 42})
        assert client.result(outcome.id) == record


def test_wait_result_times_out_for_a_task_still_running(cfg: DeploymentConfig) -> None:
    with Client(cfg) as client:
        outcome = client.submit(_sleepy("long", 30.0))
        assert outcome.id is not None
        with pytest.raises(TimeoutError):
            client.wait_result(outcome.id, timeout=0.3)
        assert client.result(outcome.id) is None
        client.cancel(outcome.id)


async def test_the_async_client_waits_for_results_too(cfg: DeploymentConfig) -> None:
    async with AsyncClient(cfg) as client:
        outcome = await client.submit(TaskSubmission("echo").payload_json([1, "two"]))
        assert outcome.id is not None
        record = await client.wait_result(outcome.id, timeout=10.0)
        assert record.result_json() == [1, "two"]
        with pytest.raises(TimeoutError):
            await client.wait_result(outcome.id + 100, timeout=0.3)


async def test_an_async_client_pauses_resumes_and_limits_a_deployment(
    cfg: DeploymentConfig,
) -> None:
    """The controls of the embedded scheduler are the client's: another process has them too."""
    async with AsyncClient(cfg) as client:
        await client.pause_all()
        assert await client.is_paused() is True
        await client.resume_all()
        assert await client.is_paused() is False
        await client.set_group_limit("uploads", 2)
        assert (await client.group_limits()).overrides["uploads"] == 2
        await client.remove_group_limit("uploads")
        assert "uploads" not in (await client.group_limits()).overrides
        await client.set_max_concurrency(3)
        assert await client.max_concurrency() == 3


class FlakyAsyncStore(FlakyStore):
    async def call(  # type: ignore[override]
        self, message: Submit, reply_type: type, timeout: float | None = None
    ) -> Any:
        return super().call(message, reply_type, timeout)


async def test_the_embedded_scheduler_retries_a_submission_with_its_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded or remote, one client: a submission the Store did not answer is sent again
    with the same request id, which the Store answers once."""
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    scheduler = await builder(tmp_path).build()
    try:
        store = FlakyAsyncStore(failures=1)
        scheduler._store = store  # type: ignore[assignment]
        monkeypatch.setattr("taskmill.client.asyncio.sleep", pause)
        outcome = await scheduler.submit(TaskSubmission("noop", key="x"))
        assert outcome.id == 1
        assert len(store.sent) == 2 and len({m.request_id for m in store.sent}) == 1
        assert pauses == [0.25]
    finally:
        await scheduler.close()
