"""How ``wait_result`` waits: on events about the task, asking the Store again after each; by
polling with a growing pause when there is no event stream; never in a busy loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bus.errors import ActorUnavailable
from taskmill.events import Completed, Progress, SchedulerEvent
from taskmill.records import HistoryStatus, TaskHistoryRecord
from taskmill.results import wait_result, wait_result_blocking

RECORD = TaskHistoryRecord(
    id=1, task_id=7, task_type="t", key="k" * 64, label="t", priority=128,  # type: ignore[arg-type]
    status=HistoryStatus.COMPLETED,
)  # fmt: skip
IDS: dict[str, Any] = dict(task_type="t", key="k" * 64, label="t")


class FakeEvents:
    """Stands for an ``EventSubscription``: yields what the test puts in."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SchedulerEvent | None] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[SchedulerEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[SchedulerEvent]:
        while (event := await self.queue.get()) is not None:
            yield event

    async def close(self) -> None:
        self.closed = True


class Store:
    """Stands for the Store: counts the questions, answers once the task has finished."""

    def __init__(self) -> None:
        self.asked = 0
        self.finished = False
        self.on_ask = asyncio.Event()

    async def fetch(self) -> TaskHistoryRecord | None:
        self.asked += 1
        self.on_ask.set()
        return RECORD if self.finished else None


async def test_an_event_about_the_task_makes_it_ask_again() -> None:
    store, events = Store(), FakeEvents()

    async def subscribe() -> Any:
        return events

    waiting = asyncio.ensure_future(wait_result(7, 30.0, store.fetch, subscribe))
    await store.on_ask.wait()
    assert store.asked == 1
    store.on_ask.clear()
    events.queue.put_nowait(Progress(task_id=8, percent=0.5, **IDS))  # another task: ignored
    store.finished = True
    events.queue.put_nowait(Completed(task_id=7, **IDS))
    assert await asyncio.wait_for(waiting, 10.0) is RECORD
    assert store.asked == 2 and events.closed


async def test_without_an_event_stream_it_polls_with_a_growing_pause() -> None:
    store = Store()

    async def subscribe() -> Any:
        raise ActorUnavailable("no publisher")

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError, match=r"task 7 has no result after 1\.2s"):
        await wait_result(7, 1.2, store.fetch, subscribe)
    assert loop.time() - started >= 1.2
    assert store.asked <= 4  # at 0, 0.25, 0.75, 1.2 s: no busy loop


async def test_a_finished_task_needs_no_wait() -> None:
    store, events = Store(), FakeEvents()
    store.finished = True

    async def subscribe() -> Any:
        return events

    assert await wait_result(7, 0.0, store.fetch, subscribe) is RECORD
    assert store.asked == 1 and events.closed


class BlockingEvents:
    """Stands for an ``EventSubscriber``: ``recv`` hands out what the test queued."""

    def __init__(self, events: list[SchedulerEvent]) -> None:
        self.events = events
        self.closed = False

    def recv(self, timeout: float | None = None) -> SchedulerEvent | None:
        return self.events.pop(0) if self.events else None

    def close(self) -> None:
        self.closed = True


def test_the_blocking_wait_asks_again_after_an_event_about_the_task() -> None:
    asked: list[int] = []
    events = BlockingEvents([Progress(task_id=8, percent=0.5, **IDS), Completed(task_id=7, **IDS)])

    def fetch() -> TaskHistoryRecord | None:
        asked.append(len(events.events))
        return RECORD if not events.events else None

    assert wait_result_blocking(7, 30.0, fetch, lambda: events) is RECORD  # type: ignore[arg-type,return-value]
    assert asked == [2, 0] and events.closed


def test_the_blocking_wait_polls_without_an_event_stream() -> None:
    asked = 0

    def fetch() -> TaskHistoryRecord | None:
        nonlocal asked
        asked += 1
        return None

    def subscribe() -> Any:
        raise ActorUnavailable("no publisher")

    with pytest.raises(TimeoutError):
        wait_result_blocking(7, 0.5, fetch, subscribe)
    assert 2 <= asked <= 3  # at 0, 0.25 and 0.5 s
