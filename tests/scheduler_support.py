"""Helpers for tests of a real embedded scheduler: an event recorder and executor controls.

Nothing here sleeps to wait: the recorder waits for events, ``Latch`` for a release from the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskmill import Scheduler, SchedulerBuilder, SchedulerEvent, TaskContext
from taskmill.subscription import EventSubscription


class EventRecorder:
    """Records every event of a live subscription; ``wait_for`` a predicate over them."""

    def __init__(self, sub: EventSubscription) -> None:
        self.sub = sub
        self.events: list[SchedulerEvent] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    @classmethod
    async def start(cls, scheduler: Scheduler) -> EventRecorder:
        return cls(await scheduler.subscribe())

    async def _pump(self) -> None:
        async for event in self.sub:
            self.events.append(event)
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[list[SchedulerEvent]], bool], timeout: float = 10.0
    ) -> list[SchedulerEvent]:
        async def until() -> None:
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)
        return self.events

    async def wait_count(self, kind: str, n: int, timeout: float = 10.0) -> list[SchedulerEvent]:
        await self.wait_for(lambda evs: len(self.of(kind)) >= n, timeout)
        return self.of(kind)

    def of(self, kind: str, task_id: int | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if e.type == kind and (task_id is None or getattr(e, "task_id", None) == task_id)
        ]

    def types_for(self, task_id: int) -> list[str]:
        return [e.type for e in self.events if getattr(e, "task_id", None) == task_id]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.sub.close()


class Latch:
    """Blocks executors (on any thread or loop) until the test releases it."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def release(self) -> None:
        self._event.set()

    async def wait(self, ctx: TaskContext | None = None, timeout: float = 30.0) -> bool:
        """Wait for release (True) or for the task's token (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._event.is_set():
            if ctx is not None and ctx.token.is_cancelled():
                return False
            if loop.time() > deadline:
                raise TimeoutError("latch never released")
            waiter = asyncio.ensure_future(asyncio.to_thread(self._event.wait, 0.05))
            if ctx is not None:
                token = asyncio.ensure_future(ctx.token.wait())
                await asyncio.wait({waiter, token}, return_when=asyncio.FIRST_COMPLETED)
                token.cancel()
            else:
                await waiter
        return True


class Latches:
    """One latch per task label: the test decides when each run ends."""

    def __init__(self) -> None:
        self.latches: dict[str, Latch] = {}

    def __getitem__(self, label: str) -> Latch:
        return self.latches.setdefault(label, Latch())

    async def run(self, ctx: TaskContext) -> None:
        await self[ctx.record.label].wait(ctx)

    def release_all(self) -> None:
        for latch in self.latches.values():
            latch.release()


class Concurrency:
    """Counts concurrent runs of an executor (thread-safe) and remembers the peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> Concurrency:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


def builder(tmp_path: Path, **executors: Any) -> SchedulerBuilder:
    b = Scheduler.builder().store_path(tmp_path / "tasks.db")
    for task_type, executor in executors.items():
        b.executor(task_type.replace("_", "-"), executor)
    return b
