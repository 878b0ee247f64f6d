"""``TaskSubmission``'s time and failure settings: ``run_after``, ``run_at``, ``retry``,
``max_retries``, ``timeout``, and what the Store receives for them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from taskmill import RetryPolicy, TaskSubmission

NOW_MS = 1_800_000_000_000


def test_nothing_set_means_at_once_and_the_defaults() -> None:
    wire = TaskSubmission("report").to_wire(NOW_MS)
    assert (wire.due_at_ms, wire.retry, wire.max_retries, wire.timeout_s) == (
        None,
        None,
        None,
        None,
    )


def test_run_after_counts_from_the_submitting_clock() -> None:
    wire = TaskSubmission("report").run_after(30.0).to_wire(NOW_MS)
    assert wire.due_at_ms == NOW_MS + 30_000
    assert TaskSubmission("r", run_after=timedelta(milliseconds=1500)).to_wire(
        NOW_MS
    ).due_at_ms == (NOW_MS + 1500)
    assert TaskSubmission("r").run_after(0).to_wire(NOW_MS).due_at_ms == NOW_MS


def test_run_after_without_a_given_clock_uses_now() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    due = TaskSubmission("r").run_after(60.0).to_wire().due_at_ms
    after = int(datetime.now(UTC).timestamp() * 1000)
    assert due is not None and before + 60_000 <= due <= after + 60_001


def test_run_at_takes_aware_naive_and_epoch_instants() -> None:
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    expected = int(new_year.timestamp() * 1000)
    assert TaskSubmission("r").run_at(new_year).to_wire(NOW_MS).due_at_ms == expected
    naive = datetime(2027, 1, 1)  # naive means UTC, whatever the machine's zone
    assert TaskSubmission("r", run_at=naive).to_wire(NOW_MS).due_at_ms == expected
    paris = datetime(2027, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert TaskSubmission("r").run_at(paris).to_wire(NOW_MS).due_at_ms == expected
    assert TaskSubmission("r").run_at(expected / 1000).to_wire(NOW_MS).due_at_ms == expected
    assert TaskSubmission("r").run_at(new_year).run_at_time == new_year


def test_the_last_of_run_after_and_run_at_wins() -> None:
    s = TaskSubmission("r").run_after(10.0).run_at(1.0)
    assert (s.run_after_s, s.to_wire(NOW_MS).due_at_ms) == (None, 1000)
    s.run_after(2.0)
    assert (s.run_at_time, s.to_wire(NOW_MS).due_at_ms) == (None, NOW_MS + 2000)


def test_retry_max_retries_and_timeout_reach_the_wire() -> None:
    policy = RetryPolicy.exponential(2.0, max=120.0)
    s = TaskSubmission("upload").retry(policy).max_retries(10).timeout(timedelta(seconds=30))
    wire = s.to_wire(NOW_MS)
    assert (wire.retry, wire.max_retries, wire.timeout_s) == (policy.to_wire(), 10, 30.0)
    assert (s.retry_policy, s.retry_limit, s.timeout_s) == (policy, 10, 30.0)


def test_keywords_equal_the_builder() -> None:
    policy = RetryPolicy.constant(1.0)
    fluent = TaskSubmission("t").run_after(5.0).retry(policy).max_retries(2).timeout(3.0)
    keywords = TaskSubmission("t", run_after=5.0, retry=policy, max_retries=2, timeout=3.0)
    assert fluent == keywords
    assert fluent != TaskSubmission("t", run_after=5.0, retry=policy, max_retries=2)
    assert fluent.copy() == fluent
    assert "run_after=5" in repr(fluent) and "timeout=3" in repr(fluent)


def test_time_settings_do_not_change_the_dedup_key() -> None:
    plain = TaskSubmission("t", key="k")
    assert plain.dedup_key == TaskSubmission("t", key="k", run_after=60.0, timeout=1).dedup_key


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: TaskSubmission("t").run_after(-1.0), ValueError),
        (lambda: TaskSubmission("t").run_after(float("nan")), ValueError),
        (lambda: TaskSubmission("t").run_after(float("inf")), ValueError),
        (lambda: TaskSubmission("t").run_after("30"), TypeError),
        (lambda: TaskSubmission("t").run_after(True), TypeError),
        (lambda: TaskSubmission("t").run_after(timedelta(seconds=-1)), ValueError),
        (lambda: TaskSubmission("t").run_at(float("nan")), ValueError),
        (lambda: TaskSubmission("t").run_at("2027-01-01"), TypeError),
        (lambda: TaskSubmission("t").timeout(0), ValueError),
        (lambda: TaskSubmission("t").timeout(-5.0), ValueError),
        (lambda: TaskSubmission("t").timeout(float("nan")), ValueError),
        (lambda: TaskSubmission("t").max_retries(-1), ValueError),
        (lambda: TaskSubmission("t").max_retries(1.5), TypeError),
        (lambda: TaskSubmission("t").retry(3), TypeError),
        (lambda: TaskSubmission("t", run_after=1.0, run_at=2.0), ValueError),
        (lambda: TaskSubmission("t", timeout=-1.0), ValueError),
    ],
)
def test_bad_time_settings_are_refused_at_once(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_a_refused_setting_leaves_the_submission_as_it_was() -> None:
    s = TaskSubmission("t").run_after(5.0).timeout(2.0)
    with pytest.raises(ValueError):
        s.run_after(-1.0)
    with pytest.raises(ValueError):
        s.timeout(float("nan"))
    assert (s.run_after_s, s.timeout_s) == (5.0, 2.0)
