"""Retry policies, and the ``TaskError`` an executor raises to fail (or retry) its task.

A ``RetryPolicy`` only describes the delay before each retry and how many retries there are; the
Store applies it when a retryable failure is reported (``to_wire`` gives what it receives). The
delay before retry ``n`` (0-based: the first retry has n = 0) is ``constant``: the delay;
``linear``: min(initial + n * increment, max); ``exponential``: min(initial * multiplier**n,
max); ``exponential_jitter``: uniform in [0, the exponential's delay]; ``none``: no retries.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from datetime import timedelta

from actors.store.retry import delay_s
from bus.errors import TaskError as _BusTaskError
from bus.kinds import RetrySpec

__all__ = ["RetryPolicy", "TaskError", "seconds"]

STRATEGIES = ("constant", "linear", "exponential", "exponential_jitter", "none")


def seconds(name: str, value: float | timedelta, *, positive: bool = False) -> float:
    """``value`` (seconds as int/float, or a ``timedelta``) as float seconds.

    ``TypeError`` for anything else (a bool included); ``ValueError`` for NaN, an infinity, a
    negative value, or zero when ``positive``.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be seconds (a float or a timedelta), got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {value}")
    return value


def _retries(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_retries must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"max_retries must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait before each retry of a retryable failure, and how many retries.

    Build one with ``constant``, ``linear``, ``exponential``, ``exponential_jitter`` or
    ``none``. ``max_retries`` None leaves the count to the next layer: a submission's policy
    falls back to its type's, that to the default policy, that to the builder's ``max_retries``.
    """

    strategy: str
    initial: float = 0.0
    """Seconds: the constant delay, or the first delay of the growing strategies."""
    increment: float = 0.0
    """Linear: seconds added per retry."""
    max: float | None = None
    """The largest delay in seconds (None: no cap)."""
    multiplier: float = 2.0
    """Exponential: the factor between two delays (>= 1)."""
    max_retries: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown retry strategy {self.strategy!r} (one of {STRATEGIES})")
        object.__setattr__(self, "initial", seconds("initial delay", self.initial))
        object.__setattr__(self, "increment", seconds("increment", self.increment))
        if self.max is not None:
            object.__setattr__(self, "max", seconds("max delay", self.max))
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, int | float):
            raise TypeError(f"multiplier must be a number, got {self.multiplier!r}")
        if not (math.isfinite(self.multiplier) and self.multiplier >= 1.0):
            raise ValueError(f"multiplier must be a finite number >= 1, got {self.multiplier}")
        object.__setattr__(self, "multiplier", float(self.multiplier))
        object.__setattr__(self, "max_retries", _retries(self.max_retries))

    @classmethod
    def constant(cls, delay: float | timedelta, *, max_retries: int | None = None) -> RetryPolicy:
        """The same ``delay`` before every retry."""
        return cls("constant", seconds("delay", delay), max_retries=max_retries)

    @classmethod
    def linear(
        cls,
        initial: float | timedelta,
        *,
        increment: float | timedelta | None = None,
        max: float | timedelta | None = None,
        max_retries: int | None = None,
    ) -> RetryPolicy:
        """``initial``, then ``increment`` more per retry (default: ``initial`` more), capped
        at ``max``."""
        first = seconds("initial delay", initial)
        step = first if increment is None else seconds("increment", increment)
        return cls("linear", first, step, _cap(max), max_retries=max_retries)

    @classmethod
    def exponential(
        cls,
        initial: float | timedelta,
        *,
        max: float | timedelta | None = None,
        multiplier: float = 2.0,
        max_retries: int | None = None,
    ) -> RetryPolicy:
        """``initial``, multiplied by ``multiplier`` per retry, capped at ``max``."""
        return cls(
            "exponential", seconds("initial delay", initial), 0.0, _cap(max), multiplier,
            max_retries,
        )  # fmt: skip

    @classmethod
    def exponential_jitter(
        cls,
        initial: float | timedelta,
        *,
        max: float | timedelta | None = None,
        multiplier: float = 2.0,
        max_retries: int | None = None,
    ) -> RetryPolicy:
        """``exponential``, each delay drawn uniformly between 0 and that delay (retries of
        many tasks that failed together spread out instead of arriving together)."""
        grown = cls.exponential(initial, max=max, multiplier=multiplier, max_retries=max_retries)
        return dataclasses.replace(grown, strategy="exponential_jitter")

    @classmethod
    def none(cls) -> RetryPolicy:
        """No retries: a retryable failure goes straight to the dead letter."""
        return cls("none", max_retries=0)

    def delay(self, n: int, rng: random.Random | None = None) -> float:
        """The delay in seconds before retry ``n`` (0-based), as the Store computes it (the
        jitter drawn from ``rng``, default the ``random`` module)."""
        if n < 0:
            raise ValueError(f"retry number must be >= 0, got {n}")
        return delay_s(self.to_wire(), n, (rng or random).uniform)

    def to_wire(self) -> RetrySpec:
        """The policy as the Store receives it."""
        return RetrySpec(
            self.strategy, self.initial, self.increment, self.max, self.multiplier,
            self.max_retries,
        )  # fmt: skip


def _cap(value: float | timedelta | None) -> float | None:
    return None if value is None else seconds("max delay", value)


class TaskError(_BusTaskError):
    """Raised by an executor to fail its task: permanent by default; ``retryable=True`` asks
    for a retry, after ``retry_after`` seconds when given (that delay wins over the policy's).

    ``TaskError("429 from S3", retryable=True, retry_after=30.0)``;
    ``TaskError.retryable("connection reset")`` is the short form without a delay.
    """

    def __init__(
        self,
        message: str = "",
        *,
        retryable: bool = False,
        retry_after: float | timedelta | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.retry_after: float | None = (
            None if retry_after is None else seconds("retry_after", retry_after)
        )
        """Seconds to wait before the retry (None: the retry policy's delay)."""

    def __repr__(self) -> str:
        text = super().__repr__()
        if self.retry_after is None:
            return text
        return f"{text[:-1]}, retry_after={self.retry_after:g})"
