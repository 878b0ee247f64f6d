"""Progress: the reporter executors call, and the estimate shown for a running task.

``estimate_progress`` is a pure function of its inputs (``now`` included), so it is tested with
plain numbers and no clock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import datetime

from taskmill.records import EstimatedProgress, TaskRecord
from taskmill.task import _non_negative

__all__ = ["EXTRAPOLATION_CAP", "ProgressReporter", "estimate_progress"]

EXTRAPOLATION_CAP = 0.99
"""An extrapolated estimate never claims completion: it stops at 99 %."""


def _clamp01(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, float(value)))


def estimate_progress(
    task: TaskRecord,
    started_at: datetime,
    reported: tuple[float, datetime] | None,
    mean_duration_s: float | None,
    now: datetime,
) -> EstimatedProgress:
    """The progress estimate of a running ``task`` at ``now``.

    ``reported`` is the latest ``(percent, reported_at)`` from its executor, if any;
    ``mean_duration_s`` the mean duration of the type's completed runs (None or <= 0: unknown).

    * ``reported_percent`` = the reported value, else None.
    * ``extrapolated_percent`` (None when the mean duration is unknown):
      with a report p at t_r, ``rate`` = mean of ``1 / mean duration`` and
      ``p / (t_r - started_at)``, and the estimate is ``min(0.99, p + rate * (now - t_r))``
      (when ``t_r - started_at`` is not positive the observed rate is unknown and ``rate`` is
      ``1 / mean duration`` alone); without a report, ``min(0.99, elapsed / mean duration)``.
    * ``percent`` = the reported value when there is one, else the extrapolated one, else 0.

    Negative time spans (a clock that stepped back) count as zero.
    """
    reported_percent = None if reported is None else _clamp01(reported[0])
    extrapolated: float | None = None
    mean = mean_duration_s if mean_duration_s is not None and mean_duration_s > 0 else None
    if mean is not None and reported is not None and reported_percent is not None:
        p, reported_at = reported_percent, reported[1]
        elapsed_at_report = (reported_at - started_at).total_seconds()
        since_report = max(0.0, (now - reported_at).total_seconds())
        rate = 1.0 / mean
        if elapsed_at_report > 0:  # the observed rate is known: average it with history's
            rate = (rate + p / elapsed_at_report) / 2.0
        extrapolated = min(EXTRAPOLATION_CAP, p + rate * since_report)
    elif mean is not None:
        elapsed = max(0.0, (now - started_at).total_seconds())
        extrapolated = min(EXTRAPOLATION_CAP, elapsed / mean)
    if reported_percent is not None:
        percent = reported_percent
    elif extrapolated is not None:
        percent = extrapolated
    else:
        percent = 0.0
    return EstimatedProgress(
        task_id=task.id,
        task_type=task.task_type,
        key=task.key,
        label=task.label,
        reported_percent=reported_percent,
        extrapolated_percent=extrapolated,
        percent=percent,
    )


class ProgressReporter:
    """What an executor reports progress through (``ctx.progress``).

    A fraction: each report is clamped to [0, 1] (NaN counts as 0) and handed to
    ``sink(percent, message)``, which the executor host wires to the bus. Bytes
    (``set_bytes_total``, ``add_bytes``, ``report_bytes``): the counts, checked (a negative one is
    a ``ValueError``, and changes nothing), go to ``bytes_sink(done, total)``; the host measures
    the rate and the time left. Either kind is sent at most once per turn of the host's loop,
    the latest state then; the ``Progress`` event carries both.
    """

    def __init__(
        self,
        sink: Callable[[float, str | None], None],
        bytes_sink: Callable[[int, int | None], None] | None = None,
    ) -> None:
        self._sink = sink
        self._bytes_sink = bytes_sink
        self._last: tuple[float, str | None] | None = None
        self._lock = threading.Lock()  # a plain ``def`` executor may count from several threads
        self._bytes_done = 0
        self._bytes_total: int | None = None

    def report(self, percent: float, message: str | None = None) -> None:
        """Report ``percent`` done (0..1, clamped) with an optional message."""
        value = _clamp01(percent)
        self._last = (value, message)
        self._sink(value, message)

    def report_fraction(
        self, done: int | float, total: int | float, message: str | None = None
    ) -> None:
        """Report ``done / total`` (1.0 when ``total`` is 0)."""
        self.report(1.0 if total == 0 else done / total, message)

    def set_bytes_total(self, total: int) -> None:
        """The bytes the task will have done in all (e.g. a file's size)."""
        _non_negative("bytes total", total)
        with self._lock:
            self._bytes_total = total
            self._send_bytes()

    def add_bytes(self, n: int) -> None:
        """``n`` more bytes done."""
        _non_negative("bytes added", n)
        with self._lock:
            self._bytes_done += n
            self._send_bytes()

    def report_bytes(self, done: int, total: int | None = None) -> None:
        """Bytes done so far and, when given, in all (``None`` keeps the total set before)."""
        _non_negative("bytes done", done)
        if total is not None:
            _non_negative("bytes total", total)
        with self._lock:
            self._bytes_done = done
            if total is not None:
                self._bytes_total = total
            self._send_bytes()

    def _send_bytes(self) -> None:
        if self._bytes_sink is not None:
            self._bytes_sink(self._bytes_done, self._bytes_total)

    @property
    def bytes_done(self) -> int:
        """The bytes reported done so far."""
        return self._bytes_done

    @property
    def bytes_total(self) -> int | None:
        """The total set with ``set_bytes_total`` or ``report_bytes``, or None."""
        return self._bytes_total

    @property
    def last(self) -> tuple[float, str | None] | None:
        """The latest ``(percent, message)`` reported, or None."""
        return self._last
