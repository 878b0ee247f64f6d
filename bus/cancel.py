"""A thread-safe cancellation token usable from threads and from any asyncio loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class CancellationToken:
    """Cancelled once, observed anywhere: ``is_cancelled()``, ``await wait()``, callbacks.

    Sync executors poll it from worker threads; async ones await it; ``child_token()`` gives a
    token cancelled with this one (but cancellable on its own).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_cancelled(self) -> bool:
        return self._cancelled

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the cancelling thread) when cancelled; at once if already so."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()

    async def wait(self) -> None:
        if self._cancelled:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(resolve)

        self.on_cancel(wake)
        await future

    def child_token(self) -> CancellationToken:
        child = CancellationToken()
        self.on_cancel(child.cancel)
        return child

    def __repr__(self) -> str:
        return f"CancellationToken(cancelled={self._cancelled})"
