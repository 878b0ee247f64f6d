"""``RetryPolicy``: the delay before each retry, validation, and what the Store receives;
``TaskError``'s ``retry_after``."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from bus.kinds import RetrySpec
from taskmill import RetryPolicy, TaskError, TaskmillError


def test_constant_waits_the_same_before_every_retry() -> None:
    policy = RetryPolicy.constant(5.0, max_retries=3)
    assert [policy.delay(n) for n in range(4)] == [5.0, 5.0, 5.0, 5.0]
    assert policy.max_retries == 3


def test_linear_grows_by_the_increment_up_to_the_cap() -> None:
    policy = RetryPolicy.linear(1.0, increment=2.0, max=6.0, max_retries=5)
    assert [policy.delay(n) for n in range(5)] == [1.0, 3.0, 5.0, 6.0, 6.0]
    assert RetryPolicy.linear(1.5).increment == 1.5  # default step: the first delay


def test_exponential_multiplies_up_to_the_cap() -> None:
    policy = RetryPolicy.exponential(1.0, max=300.0, multiplier=2.0, max_retries=8)
    assert [policy.delay(n) for n in range(10)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert RetryPolicy.exponential(0.5, multiplier=3.0).delay(2) == 4.5


def test_a_late_retry_of_an_exponential_is_capped_not_an_overflow() -> None:
    assert RetryPolicy.exponential(1.0, max=60.0).delay(5000) == 60.0


def test_jitter_draws_between_zero_and_the_exponential_delay() -> None:
    policy = RetryPolicy.exponential_jitter(1.0, max=10.0)
    rng = random.Random(7)
    for n in range(8):
        cap = min(2.0**n, 10.0)
        draws = [policy.delay(n, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > cap / 2 and min(draws) < cap / 2  # spread, not a constant


def test_none_means_no_retries() -> None:
    policy = RetryPolicy.none()
    assert policy.max_retries == 0
    assert policy.to_wire() == RetrySpec("none", max_retries=0)


def test_durations_may_be_timedeltas() -> None:
    policy = RetryPolicy.linear(
        timedelta(seconds=1), increment=timedelta(milliseconds=500), max=timedelta(minutes=1)
    )
    assert (policy.initial, policy.increment, policy.max) == (1.0, 0.5, 60.0)


def test_to_wire_carries_every_setting() -> None:
    assert RetryPolicy.exponential(2.0, max=120.0, multiplier=3.0, max_retries=4).to_wire() == (
        RetrySpec("exponential", 2.0, 0.0, 120.0, 3.0, 4)
    )
    assert RetryPolicy.linear(1.0, increment=2.0, max=60.0).to_wire() == RetrySpec(
        "linear", 1.0, 2.0, 60.0, 2.0, None
    )
    assert RetryPolicy.constant(0.0).to_wire() == RetrySpec("constant", 0.0)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: RetryPolicy.constant(-1.0), ValueError),
        (lambda: RetryPolicy.constant(float("nan")), ValueError),
        (lambda: RetryPolicy.constant(float("inf")), ValueError),
        (lambda: RetryPolicy.constant("5"), TypeError),
        (lambda: RetryPolicy.constant(True), TypeError),
        (lambda: RetryPolicy.constant(1.0, max_retries=-1), ValueError),
        (lambda: RetryPolicy.constant(1.0, max_retries=2.0), TypeError),
        (lambda: RetryPolicy.linear(1.0, increment=-1.0), ValueError),
        (lambda: RetryPolicy.linear(1.0, max=float("nan")), ValueError),
        (lambda: RetryPolicy.exponential(1.0, multiplier=0.5), ValueError),
        (lambda: RetryPolicy.exponential(1.0, multiplier=float("inf")), ValueError),
        (lambda: RetryPolicy.exponential_jitter(-0.1), ValueError),
        (lambda: RetryPolicy("fibonacci"), ValueError),
    ],
)
def test_bad_settings_are_refused(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_task_error_carries_its_retry_delay() -> None:
    err = TaskError("429 from S3", retryable=True, retry_after=30.0)
    assert (err.message, err.retryable, err.retry_after) == ("429 from S3", True, 30.0)
    assert TaskError("x", retryable=True, retry_after=timedelta(minutes=2)).retry_after == 120.0
    assert isinstance(err, TaskmillError)
    assert repr(err) == "TaskError('429 from S3', retryable, retry_after=30)"
    short = TaskError.retryable("reset")
    assert isinstance(short, TaskError) and short.retryable and short.retry_after is None
    assert TaskError("bad").retryable is False


@pytest.mark.parametrize("delay", [-1.0, float("nan"), "soon"])
def test_task_error_refuses_a_bad_retry_delay(delay: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        TaskError("x", retryable=True, retry_after=delay)


def test_a_steep_exponential_is_capped_however_late_the_retry() -> None:
    assert RetryPolicy.exponential(1.0, max=60.0, multiplier=10.0).delay(400) == 60.0
