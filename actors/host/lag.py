"""Noticing a blocked event loop: an ``async def`` executor that makes a blocking call holds the
loop it runs on — embedded, the loop the Store and Dispatcher share with it."""

from __future__ import annotations

import logging

from bus.clock import Clock
from bus.runtime import ActorLoop

log = logging.getLogger("taskmill.worker")


class LagWatch:
    """A timer due every ``interval``: when it fires ``threshold`` or more late, something held
    the loop that long. Counted always; logged at most once per ``quiet_s``."""

    def __init__(
        self,
        clock: Clock,
        *,
        interval: float = 0.25,
        threshold: float = 0.5,
        quiet_s: float = 60.0,
    ) -> None:
        self.clock = clock
        self.interval = interval
        self.threshold = threshold
        self.quiet_s = quiet_s
        self.blocked = 0
        self.longest_s = 0.0
        self.last_late_s = 0.0
        self._due = 0.0
        self._last_log: float | None = None

    def start(self, loop: ActorLoop) -> None:
        self.arm()
        loop.call_every(self.interval, self.tick)

    def arm(self) -> None:
        """Expect the first tick one interval from now."""
        self._due = self.clock.monotonic() + self.interval

    def tick(self) -> None:
        """Called by the timer: note how late it ran (``last_late_s``)."""
        now = self.clock.monotonic()
        late = self.last_late_s = max(0.0, now - self._due)
        self._due = now + self.interval
        if late >= self.threshold:
            self.blocked += 1
            self.longest_s = max(self.longest_s, late)
            if self._last_log is None or now - self._last_log >= self.quiet_s:
                self._last_log = now
                log.warning(
                    "the event loop that runs the async executors was held for %.2fs: by a "
                    "blocking call in an async executor (blocking work belongs in a plain `def` "
                    "executor, run in a worker thread, or in asyncio.to_thread), or, embedded, "
                    "by the actors sharing the loop (a very large submit_batch, say)",
                    late,
                )
