"""Time, injected: actors read the clock they were given, so tests can use a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch as an aware UTC datetime."""

_MS = timedelta(milliseconds=1)


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timers)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to (``advance``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._mono += seconds


def now_ms(clock: Clock) -> int:
    return int(clock.time() * 1000)


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds (wire and database form) as an aware UTC datetime, exactly."""
    return EPOCH + timedelta(milliseconds=ms)


def datetime_to_ms(when: datetime) -> int:
    """An aware datetime as epoch milliseconds; ``ValueError`` for a naive datetime."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: give a timezone-aware datetime")
    return (when - EPOCH) // _MS
