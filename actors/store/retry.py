"""Retry policies as the Store applies them when a run fails: whether it runs again, and when.

The effective policy of a task is its own (``TaskSubmission.retry``), else its type's
(``builder.retry_policy``), else the default (``builder.default_retry_policy``); without any,
the builder's ``max_retries`` with no delay (the first version's rule). A task's own
``max_retries`` wins over its policy's. A retry waits its delay as a ``scheduled`` row; a delay
the executor asked for (``TaskError(retry_after=)``) wins over the policy's.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bus.kinds import RetrySpec, TaskResult, TaskRow


def delay_s(
    spec: RetrySpec, n: int, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """The delay before retry ``n`` (0-based: the first retry has n = 0)."""
    if spec.strategy == "constant":
        delay = spec.initial_s
    elif spec.strategy == "linear":
        delay = spec.initial_s + n * spec.increment_s
    elif spec.strategy in ("exponential", "exponential_jitter"):
        try:
            delay = spec.initial_s * spec.multiplier**n if spec.initial_s else 0.0
        except OverflowError:  # a steep policy after many retries: the cap applies
            delay = math.inf
    else:  # none
        return 0.0
    if spec.max_s is not None:
        delay = min(delay, spec.max_s)
    if spec.strategy == "exponential_jitter":
        delay = uniform(0.0, delay)
    return delay


@dataclass(frozen=True, slots=True)
class Plan:
    retry: bool
    delay_s: float = 0.0


@dataclass(slots=True)
class Retries:
    """The policies per type and the default, as the application was built with them."""

    by_type: Mapping[str, RetrySpec] = field(default_factory=dict)
    default: RetrySpec | None = None

    def policy(self, row: TaskRow) -> RetrySpec | None:
        return row.retry or self.by_type.get(row.task_type) or self.default

    def max_retries(self, row: TaskRow, builder_max: int) -> int:
        if row.max_retries is not None:
            return row.max_retries
        spec = self.policy(row)
        if spec is None:
            return builder_max
        if spec.strategy == "none":
            return 0
        return builder_max if spec.max_retries is None else spec.max_retries

    def plan(self, row: TaskRow, result: TaskResult, builder_max: int) -> Plan:
        """For a retryable failure of ``row``'s run: run again (after what delay), or not."""
        if row.retry_count >= self.max_retries(row, builder_max):
            return Plan(False)
        if result.retry_after_s is not None:
            return Plan(True, max(0.0, float(result.retry_after_s)))
        spec = self.policy(row)
        return Plan(True, 0.0 if spec is None else delay_s(spec, row.retry_count))
