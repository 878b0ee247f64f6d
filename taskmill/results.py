"""Waiting for a task's result: ``wait_result`` of the ``Scheduler`` and of both clients.

A task has its result once it has a terminal history row (``store.result``). The waiter
subscribes to the terminal events first and only then asks the Store, so a task that finishes
in between is not missed: the event arrives on the live subscription. Each event about the task
means "ask again". Events are not guaranteed (a subscriber that reads too slowly is dropped
from, the publisher may be down), so the Store is also asked again after a pause that doubles
up to ``MAX_PAUSE_S``; without an event stream at all, that polling is what remains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from bus.errors import ActorUnavailable
from taskmill.records import TaskHistoryRecord
from taskmill.subscription import EventSubscriber, EventSubscription

__all__ = ["TERMINAL_TOPICS", "wait_result", "wait_result_blocking"]

TERMINAL_TOPICS = (
    b"task.completed",
    b"task.failed",
    b"task.cancelled",
    b"task.dead_lettered",
    b"task.expired",
    b"task.superseded",
    b"task.dependency_failed",
)
"""The events after which a task may have a terminal history row."""

FIRST_PAUSE_S = 0.25
MAX_PAUSE_S = 5.0
SUBSCRIBE_TIMEOUT_S = 2.0
"""How long to wait for the event publisher's welcome before falling back to polling."""


class _Pauses:
    """How long to wait before asking the Store again, within the caller's timeout."""

    def __init__(self, task_id: int, timeout: float | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = FIRST_PAUSE_S

    def next(self) -> float:
        """The next wait (seconds); ``TimeoutError`` once the deadline has passed."""
        wait = self.pause
        self.pause = min(self.pause * 2, MAX_PAUSE_S)
        if self.deadline is None:
            return wait
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"task {self.task_id} has no result after {self.timeout:g}s")
        return min(wait, left)


async def wait_result(
    task_id: int,
    timeout: float | None,
    fetch: Callable[[], Awaitable[TaskHistoryRecord | None]],
    subscribe: Callable[[], Awaitable[EventSubscription]],
) -> TaskHistoryRecord:
    """The task's terminal history record, once it has one (see the module docstring)."""
    pauses = _Pauses(task_id, timeout)
    events: EventSubscription | None
    try:
        events = await subscribe()
    except ActorUnavailable:
        events = None
    try:
        while (record := await fetch()) is None:
            wait = pauses.next()
            if events is None:
                await asyncio.sleep(wait)
                continue
            try:
                if not await asyncio.wait_for(_event_about(events, task_id), wait):
                    await events.close()
                    events = None  # the stream ended: polling alone from now on
            except TimeoutError:
                pass
        return record
    finally:
        if events is not None:
            await events.close()


async def _event_about(events: EventSubscription, task_id: int) -> bool:
    """Wait for an event about ``task_id``: True, or False when the stream ended."""
    async for event in events:
        if getattr(event, "task_id", None) == task_id:
            return True
    return False


def wait_result_blocking(
    task_id: int,
    timeout: float | None,
    fetch: Callable[[], TaskHistoryRecord | None],
    subscribe: Callable[[], EventSubscriber],
) -> TaskHistoryRecord:
    """``wait_result`` for the blocking ``Client``."""
    pauses = _Pauses(task_id, timeout)
    events: EventSubscriber | None
    try:
        events = subscribe()
    except ActorUnavailable:
        events = None
    try:
        while (record := fetch()) is None:
            wait = pauses.next()
            if events is None:
                time.sleep(wait)
                continue
            until = time.monotonic() + wait
            while (left := until - time.monotonic()) > 0:
                event = events.recv(left)
                if event is None or getattr(event, "task_id", None) == task_id:
                    break
        return record
    finally:
        if events is not None:
            events.close()
