"""Failed Store requests, told once per episode, and the backoff before the Dispatcher retries."""

from __future__ import annotations

import logging

from bus.errors import TaskmillError

log = logging.getLogger("taskmill.dispatcher")


class StoreTrouble:
    """Failed Store requests, told once per episode: a WARNING at the first failure, DEBUG for
    the next ones, an INFO when a request succeeds again (or a failure long after the last one
    starts a new episode). A full disk fails every commit until room is made: a line per retry
    would fill the log too. ``failed`` also says how long to wait before a retry: doubling from
    ``first_delay_s`` to ``max_delay_s``, so a retry comes soon after the Store can commit again
    without asking it many times a second meanwhile."""

    def __init__(
        self, first_delay_s: float = 0.25, max_delay_s: float = 4.0, quiet_s: float = 60.0
    ) -> None:
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self.quiet_s = quiet_s
        self.failures = 0
        """Failures in the current episode (0: none)."""
        self._last_at = float("-inf")

    def failed(self, what: str, error: TaskmillError, now: float) -> float:
        """Account for a failed request; the delay before retrying it."""
        if self.failures and now - self._last_at > self.quiet_s:
            self.failures = 0  # long quiet: the Store recovered meanwhile, unnoticed
        self._last_at = now
        self.failures += 1
        if self.failures == 1:
            log.warning("store %s failed: %s (retrying; quiet until it succeeds)", what, error)
        else:
            log.debug("store %s failed again (%d): %s", what, self.failures, error)
        return min(self.max_delay_s, self.first_delay_s * 2.0 ** min(self.failures - 1, 32))

    def succeeded(self) -> None:
        """A Store request succeeded: the episode, if any, is over."""
        if self.failures:
            log.info("store requests succeed again after %d failure(s)", self.failures)
            self.failures = 0
