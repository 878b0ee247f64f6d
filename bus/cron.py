"""Cron expressions: the check at submit and the next matching minute, in UTC.

Shared by the Store (the next instance of a cron schedule) and the public API (an invalid
expression is refused at submit). Parsing is croniter's; taskmill accepts its five-field form
(minute, hour, day of month, month, day of week) and its ``@hourly``-style aliases, so a
schedule never fires more than once a minute.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

MAX_CRON_CHARS = 256


def check_cron(expr: object) -> str:
    """``expr`` when croniter reads it as a five-field expression; else ``ValueError``."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError(f"a cron expression must be a non-empty string, got {expr!r}")
    if len(expr) > MAX_CRON_CHARS:
        raise ValueError(f"a cron expression is at most {MAX_CRON_CHARS} characters")
    fields = expr.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ValueError(f"a cron expression has five fields (minute to day of week): {expr!r}")
    if not _croniter().is_valid(expr):
        raise ValueError(f"invalid cron expression {expr!r}")
    return expr


def next_cron_ms(expr: str, after_ms: int) -> int:
    """The first minute strictly after ``after_ms`` (epoch ms) that ``expr`` matches, in UTC."""
    start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=after_ms)
    following: datetime = _croniter()(expr, start).get_next(datetime)
    return int(following.timestamp() * 1000)


def _croniter() -> Any:
    """croniter, imported when a cron expression is first read: it takes ~50 ms to import
    (dateutil), which every actor process would pay at start for nothing otherwise."""
    from croniter import croniter

    return croniter
