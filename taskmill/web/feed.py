"""``LiveFeed``: what every open dashboard page receives, gathered once for all of them.

One event subscription and one poll of the scheduler's state serve every page, and only while
at least one is open: a dashboard nobody looks at costs the scheduler nothing. Events are not
forwarded one by one (a drain of thousands of tasks a second would swamp a browser): every
``TICK_S`` the page gets one batch, with the newest lifecycle events, how many of each type
arrived, and the latest progress of each task that reported. The state (what runs, the queue,
pressure, hosts) is polled every ``POLL_S``, and at once after an action.

A page that reads too slowly has batches dropped for it rather than held (``QUEUE`` messages at
most wait for it): the next state and batch bring it up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bus.errors import TaskmillError
from taskmill.client import AsyncClient
from taskmill.events import (
    HostResources,
    Paused,
    Progress,
    Resources,
    Resumed,
    SchedulerEvent,
)
from taskmill.subscription import EventSubscription
from taskmill.web.views import event_view, state_view

log = logging.getLogger("taskmill.web")

__all__ = ["LiveFeed"]

TICK_S = 0.25
POLL_S = 1.0
RECENT = 40
"""Lifecycle events one batch carries at most (the newest)."""
QUEUE = 16

_CLOSED = ""
"""Put in a listener's queue when the feed closes: its stream ends."""


def sse(kind: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class LiveFeed:
    """The stream of server-sent events shared by the open pages (see the module docstring)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        tick_s: float = TICK_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.client = client
        self.tick_s = tick_s
        self.poll_s = poll_s
        self._listeners: set[asyncio.Queue[str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: EventSubscription | None = None
        self._lock = asyncio.Lock()
        self._poll_now = asyncio.Event()
        self._last_state: str | None = None
        self._reset_batch()

    def _reset_batch(self) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._counts: Counter[str] = Counter()
        self._progress: dict[int, list[Any]] = {}
        self._resources: dict[str, Any] | None = None

    # -- listeners ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue of server-sent events for one page, from the latest state on."""
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE)
        async with self._lock:
            if not self._listeners:
                await self._start()
            self._listeners.add(queue)
            if self._last_state is not None:
                queue.put_nowait(self._last_state)
            self._poll_now.set()
        try:
            yield queue
        finally:
            async with self._lock:
                self._listeners.discard(queue)
                if not self._listeners:
                    await self._stop()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def refresh(self) -> None:
        """Poll the state now (after an action), not at the next interval."""
        self._poll_now.set()

    def _send(self, message: str) -> None:
        for queue in self._listeners:
            if queue.full():  # a slow page: it catches up with the next messages
                continue
            queue.put_nowait(message)

    async def close(self) -> None:
        """End every open stream."""
        async with self._lock:
            for queue in self._listeners:
                while queue.full():
                    queue.get_nowait()
                queue.put_nowait(_CLOSED)
            self._listeners.clear()
            await self._stop()

    # -- the shared subscription and poll ----------------------------------------------------

    async def _start(self) -> None:
        self._subscription = await self.client.subscribe()
        self._reset_batch()
        self._tasks = [
            asyncio.create_task(self._guard(self._pump)),
            asyncio.create_task(self._guard(self._ticker)),
            asyncio.create_task(self._guard(self._poller)),
        ]

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        self._last_state = None

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # the page shows the feed as stale; the server keeps serving
            log.exception("dashboard feed stopped")
            self._send(sse("problem", {"error": "the live feed stopped; reload the page"}))

    async def _pump(self) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            self._take(event)

    def _take(self, event: SchedulerEvent) -> None:
        if isinstance(event, Progress):
            self._progress[event.task_id] = [event.percent, event.message]
        elif isinstance(event, Resources):
            self._resources = {"pressure": event.pressure, "breakdown": event.breakdown}
        elif not isinstance(event, HostResources):
            self._counts[event.type] += 1
            self._recent.append(event_view(event))
            if isinstance(event, Paused | Resumed):
                self._poll_now.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            if not (self._counts or self._progress or self._resources):
                continue
            assert self._subscription is not None
            batch = {
                "recent": list(self._recent),
                "counts": dict(self._counts),
                "progress": self._progress,
                "resources": self._resources,
                "missed": self._subscription.missed,
            }
            self._reset_batch()
            self._send(sse("events", batch))

    async def _poller(self) -> None:
        while True:
            try:
                state = await self.state()
            except TaskmillError as exc:  # an actor restarting: say so, try again
                self._send(sse("problem", {"error": f"{type(exc).__name__}: {exc}"}))
            else:
                self._last_state = sse("state", state)
                self._send(self._last_state)
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), self.poll_s)

    async def state(self) -> dict[str, Any]:
        """The scheduler's state as the page shows it."""
        snapshot, depth = await asyncio.gather(
            self.client.snapshot(), self.client.store().queue_depth()
        )
        return state_view(snapshot, depth, group_controls(self.client))


def group_controls(client: object) -> bool:
    """Whether the client can pause and resume a group (the page shows those buttons then)."""
    return callable(getattr(client, "pause_group", None)) and callable(
        getattr(client, "resume_group", None)
    )
