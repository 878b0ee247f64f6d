"""Progress estimates (every branch of the documented formula) and the ProgressReporter."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from taskmill.priority import Priority
from taskmill.progress import ProgressReporter, estimate_progress
from taskmill.records import TaskRecord, TaskStatus

START = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
TASK = TaskRecord(
    id=9, task_type="resize", key="k" * 64, label="photo", priority=Priority.NORMAL,
    status=TaskStatus.RUNNING, started_at=START,
)  # fmt: skip


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def test_estimate_carries_the_task_identity() -> None:
    est = estimate_progress(TASK, START, None, None, at(1))
    assert (est.task_id, est.task_type, est.key, est.label) == (9, "resize", "k" * 64, "photo")


def test_no_report_no_history_is_zero() -> None:
    est = estimate_progress(TASK, START, None, None, at(30))
    assert est.reported_percent is None and est.extrapolated_percent is None
    assert est.percent == 0.0


def test_no_report_extrapolates_elapsed_over_mean_duration() -> None:
    est = estimate_progress(TASK, START, None, 10.0, at(4))
    assert est.reported_percent is None
    assert est.extrapolated_percent == pytest.approx(0.4)
    assert est.percent == pytest.approx(0.4)


def test_no_report_extrapolation_is_capped_at_99_percent() -> None:
    est = estimate_progress(TASK, START, None, 10.0, at(25))
    assert est.extrapolated_percent == pytest.approx(0.99)
    assert est.percent == pytest.approx(0.99)


def test_report_wins_and_extrapolation_blends_both_rates() -> None:
    # p = 0.5 reported 2 s in: observed rate 0.25/s; history rate 1/10 s = 0.1/s.
    # rate = (0.1 + 0.25) / 2 = 0.175/s; 2 s after the report: 0.5 + 0.35 = 0.85.
    est = estimate_progress(TASK, START, (0.5, at(2)), 10.0, at(4))
    assert est.reported_percent == 0.5
    assert est.extrapolated_percent == pytest.approx(0.85)
    assert est.percent == 0.5  # the reported value, when there is one


def test_report_extrapolation_is_capped_at_99_percent() -> None:
    est = estimate_progress(TASK, START, (0.5, at(2)), 10.0, at(12))  # 0.5 + 1.75
    assert est.extrapolated_percent == pytest.approx(0.99)
    assert est.percent == 0.5


def test_report_at_start_uses_the_history_rate_alone() -> None:
    # Elapsed at the report is 0, so the observed rate is unknown: rate = 1/10 s.
    est = estimate_progress(TASK, START, (0.2, START), 10.0, at(3))
    assert est.extrapolated_percent == pytest.approx(0.5)


def test_report_without_history_has_no_extrapolation() -> None:
    est = estimate_progress(TASK, START, (0.3, at(1)), None, at(5))
    assert est.reported_percent == 0.3 and est.extrapolated_percent is None
    assert est.percent == 0.3


@pytest.mark.parametrize("mean", [0.0, -5.0])
def test_non_positive_mean_duration_counts_as_unknown(mean: float) -> None:
    est = estimate_progress(TASK, START, None, mean, at(5))
    assert est.extrapolated_percent is None and est.percent == 0.0


def test_clock_behind_start_counts_as_no_elapsed_time() -> None:
    est = estimate_progress(TASK, START, None, 10.0, at(-3))
    assert est.extrapolated_percent == 0.0
    est = estimate_progress(TASK, START, (0.4, at(2)), 10.0, at(1))  # now before the report
    assert est.extrapolated_percent == pytest.approx(0.4)


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str | None]] = []

    def __call__(self, percent: float, message: str | None) -> None:
        self.calls.append((percent, message))


def test_reporter_forwards_to_its_sink() -> None:
    sink = Sink()
    reporter = ProgressReporter(sink)
    reporter.report(0.5, "resizing")
    reporter.report(0.75)
    assert sink.calls == [(0.5, "resizing"), (0.75, None)]
    assert reporter.last == (0.75, None)


@pytest.mark.parametrize(
    ("given", "sent"), [(-0.5, 0.0), (0.0, 0.0), (1.0, 1.0), (7.0, 1.0), (math.nan, 0.0)]
)
def test_reporter_clamps_to_unit_interval(given: float, sent: float) -> None:
    sink = Sink()
    ProgressReporter(sink).report(given)
    assert sink.calls == [(sent, None)]


@pytest.mark.parametrize(
    ("done", "total", "sent"), [(3, 4, 0.75), (0, 0, 1.0), (5, 0, 1.0), (9, 4, 1.0), (0, 10, 0.0)]
)
def test_report_fraction(done: int, total: int, sent: float) -> None:
    sink = Sink()
    ProgressReporter(sink).report_fraction(done, total, "parts")
    assert sink.calls == [(sent, "parts")]
