"""A run's progress as its host reports it: the fraction and message, and the bytes with their rate.

An executor reports a fraction (``report``) or bytes (``set_bytes_total``, ``add_bytes``,
``report_bytes``) as often as it likes; the host sends the latest state once per loop turn, and
only then measures the rate: the bytes done since the last measurement over the time since,
smoothed by an exponentially weighted moving average (``ALPHA`` of the new sample). Pure: the
time is a parameter, so it is tested with plain numbers.
"""

from __future__ import annotations

from bus.kinds_run import ProgressRow

ALPHA = 0.3
"""The weight of the newest rate sample in the smoothed throughput."""
MIN_SAMPLE_S = 0.010
"""Reports closer together than this are not a rate sample: the bytes count towards the next
one (a few bytes over a few microseconds would make the rate jump)."""


class ReportedProgress:
    """The latest progress of one run (used from the host's loop thread only)."""

    __slots__ = (
        "_sample",
        "bytes_done",
        "bytes_total",
        "message",
        "percent",
        "reported_at_ms",
        "throughput_bps",
    )

    def __init__(self) -> None:
        self.percent = 0.0
        self.message: str | None = None
        self.reported_at_ms = 0
        self.bytes_done: int | None = None
        self.bytes_total: int | None = None
        self.throughput_bps = 0.0
        self._sample: tuple[float, int] | None = None
        """(when, bytes done) of the last rate sample; None before the first."""

    def fraction(self, percent: float, message: str | None, at_ms: int) -> None:
        self.percent, self.message, self.reported_at_ms = percent, message, at_ms

    def bytes(self, done: int, total: int | None, at_ms: int) -> None:
        """Bytes done so far and, when known, in all: ``percent`` follows them then."""
        self.bytes_done, self.bytes_total, self.reported_at_ms = done, total, at_ms
        if total is not None:
            self.percent = 1.0 if total == 0 else min(1.0, done / total)

    def row(self, task_id: int, run_id: int, now_s: float) -> ProgressRow:
        """The state to send, the rate measured at ``now_s`` (monotonic seconds)."""
        if self.bytes_done is None:
            return ProgressRow(task_id, self.percent, self.message, self.reported_at_ms, run_id)
        self._measure(self.bytes_done, now_s)
        return ProgressRow(
            task_id,
            self.percent,
            self.message,
            self.reported_at_ms,
            run_id,
            self.bytes_done,
            self.bytes_total,
            self.throughput_bps,
            self.eta_s(),
        )

    def _measure(self, done: int, now_s: float) -> None:
        if self._sample is None:  # the first report: where the rate is measured from
            self._sample = (now_s, done)
            return
        then, before = self._sample
        elapsed = now_s - then
        if elapsed < MIN_SAMPLE_S:
            return
        rate = max(0, done - before) / elapsed
        first = self.throughput_bps == 0.0
        self.throughput_bps = rate if first else ALPHA * rate + (1 - ALPHA) * self.throughput_bps
        self._sample = (now_s, done)

    def eta_s(self) -> float | None:
        """Seconds left at the smoothed rate; None while the total or the rate is unknown."""
        if self.bytes_total is None or self.bytes_done is None:
            return None
        left = self.bytes_total - self.bytes_done
        if left <= 0:
            return 0.0
        return left / self.throughput_bps if self.throughput_bps > 0 else None
