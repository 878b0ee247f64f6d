"""Recurring schedules as the user gives them: every so many seconds, or by a cron expression.

``RecurringSchedule`` and ``CronSchedule`` are what ``TaskSubmission.recurring`` and ``.cron``
build (or what the constructor's ``recurring=`` and ``cron=`` take); ``to_wire`` gives the
``RecurSpec`` the Store keeps. Each checks its values when it is made: a bad one is a
``ValueError`` (or ``TypeError``) at once, before anything is submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bus.cron import check_cron
from bus.kinds import RecurSpec
from taskmill.retry import seconds

__all__ = ["CronSchedule", "RecurringSchedule"]


def _max_executions(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_executions must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"max_executions must be >= 1, got {value}")
    return value


@dataclass(frozen=True)
class RecurringSchedule:
    """Run again ``every`` seconds after each completion; the first run after
    ``initial_delay`` seconds (None: at once); at most ``max_executions`` runs (None: no end)."""

    every: float
    initial_delay: float | None = None
    max_executions: int | None = None

    def __init__(
        self,
        every: float | timedelta,
        initial_delay: float | timedelta | None = None,
        max_executions: int | None = None,
    ) -> None:
        object.__setattr__(self, "every", seconds("every", every, positive=True))
        delay = None if initial_delay is None else seconds("initial_delay", initial_delay)
        object.__setattr__(self, "initial_delay", delay)
        object.__setattr__(self, "max_executions", _max_executions(max_executions))

    def to_wire(self) -> RecurSpec:
        return RecurSpec(self.every, None, self.max_executions)


@dataclass(frozen=True)
class CronSchedule:
    """Run at each minute the five-field cron expression ``expr`` matches, in UTC (the next
    after each completion; the first after submission); at most ``max_executions`` runs."""

    expr: str
    max_executions: int | None = None

    def __init__(self, expr: str, max_executions: int | None = None) -> None:
        object.__setattr__(self, "expr", check_cron(expr))
        object.__setattr__(self, "max_executions", _max_executions(max_executions))

    def to_wire(self) -> RecurSpec:
        return RecurSpec(None, self.expr, self.max_executions)
