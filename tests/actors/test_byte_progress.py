"""Byte-level progress: the reporter's checks, the host's rate and time left, and the one
``Progress`` event (and the snapshot) that carries them in a real embedded scheduler."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from actors.host.progress import ALPHA, ReportedProgress
from taskmill import (
    Dispatched,
    EstimatedProgress,
    Priority,
    Progress,
    ProgressReporter,
    SchedulerSnapshot,
    TaskContext,
    TaskRecord,
    TaskStatus,
    TaskSubmission,
)
from taskmill.demo import View
from taskmill.watch import WatchView, format_snapshot, transfer
from tests.scheduler_support import EventRecorder, Latch, builder


def test_the_first_report_is_where_the_rate_is_measured_from() -> None:
    state = ReportedProgress()
    state.bytes(100, 1_000, at_ms=5)
    row = state.row(task_id=1, run_id=2, now_s=10.0)
    assert (row.bytes_done, row.bytes_total, row.percent) == (100, 1_000, 0.1)
    assert (row.throughput_bps, row.eta_s, row.reported_at_ms) == (0.0, None, 5)


def test_the_rate_is_smoothed_and_gives_the_time_left() -> None:
    state = ReportedProgress()
    state.bytes(0, 1_000, 0)
    state.row(1, 1, now_s=0.0)
    state.bytes(100, 1_000, 0)
    first = state.row(1, 1, now_s=1.0)
    assert first.throughput_bps == 100.0  # the first sample stands alone
    assert first.eta_s == pytest.approx(9.0)
    state.bytes(400, 1_000, 0)
    second = state.row(1, 1, now_s=2.0)
    assert second.throughput_bps == pytest.approx(ALPHA * 300 + (1 - ALPHA) * 100)
    assert second.eta_s == pytest.approx(600 / second.throughput_bps)


def test_reports_closer_than_ten_ms_wait_for_the_next_sample() -> None:
    state = ReportedProgress()
    state.bytes(0, None, 0)
    state.row(1, 1, now_s=0.0)
    state.bytes(50, None, 0)
    assert state.row(1, 1, now_s=0.005).throughput_bps == 0.0
    state.bytes(100, None, 0)
    row = state.row(1, 1, now_s=0.100)
    assert row.throughput_bps == pytest.approx(1_000.0)  # 100 bytes over the whole 0.1 s
    assert (row.eta_s, row.bytes_total, row.percent) == (None, None, 0.0)


def test_done_past_the_total_is_complete() -> None:
    state = ReportedProgress()
    state.bytes(120, 100, 0)
    row = state.row(1, 1, 0.0)
    assert (row.percent, row.eta_s) == (1.0, 0.0)


def test_a_fraction_alone_carries_no_bytes() -> None:
    state = ReportedProgress()
    state.fraction(0.25, "resizing", 7)
    row = state.row(1, 1, 0.0)
    assert (row.percent, row.message, row.bytes_done, row.throughput_bps) == (
        0.25,
        "resizing",
        None,
        None,
    )


def test_the_reporter_counts_and_refuses_negative_counts() -> None:
    sent: list[tuple[int, int | None]] = []
    reporter = ProgressReporter(lambda p, m: None, lambda done, total: sent.append((done, total)))
    reporter.set_bytes_total(1_000)
    reporter.add_bytes(300)
    reporter.add_bytes(200)
    reporter.report_bytes(600)
    assert sent == [(0, 1_000), (300, 1_000), (500, 1_000), (600, 1_000)]
    for call in (
        lambda: reporter.add_bytes(-1),
        lambda: reporter.set_bytes_total(-5),
        lambda: reporter.report_bytes(-1, 10),
        lambda: reporter.report_bytes(10, -1),
    ):
        with pytest.raises(ValueError, match=">= 0"):
            call()
    with pytest.raises(TypeError):
        reporter.add_bytes(1.5)  # type: ignore[arg-type]
    assert len(sent) == 4 and (reporter.bytes_done, reporter.bytes_total) == (600, 1_000)


async def test_byte_reports_travel_in_the_progress_event_and_the_snapshot(tmp_path: Path) -> None:
    latch = Latch()

    async def upload(ctx: TaskContext) -> None:
        ctx.progress.set_bytes_total(4_000)
        for _ in range(100):  # one loop turn: one report leaves the host
            ctx.progress.add_bytes(10)
        await latch.wait(ctx)
        ctx.progress.report_bytes(4_000)

    scheduler = await builder(tmp_path, upload=upload).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("upload"))
        await events.wait_for(lambda _: bool(events.of("progress", outcome.id)))
        [first] = events.of("progress", outcome.id)
        assert isinstance(first, Progress)
        assert (first.bytes_done, first.bytes_total, first.percent) == (1_000, 4_000, 0.25)
        assert (first.throughput_bps, first.eta_s) == (0.0, None)
        snapshot = await scheduler.snapshot()
        [running] = snapshot.progress
        assert (running.task_id, running.bytes_done, running.bytes_total) == (
            outcome.id,
            1_000,
            4_000,
        )
        assert running.percent == 0.25
        latch.release()
        await scheduler.wait_result(outcome.id, timeout=10.0)
        await events.wait_for(lambda _: len(events.of("progress", outcome.id)) == 2)
        last = events.of("progress", outcome.id)[-1]
        assert (last.bytes_done, last.percent, last.eta_s) == (4_000, 1.0, 0.0)
        assert last.throughput_bps is not None and last.throughput_bps >= 0.0
        await events.close()


async def test_a_negative_byte_count_fails_only_the_executor_call(tmp_path: Path) -> None:
    async def bad(ctx: TaskContext) -> str:
        try:
            ctx.progress.add_bytes(-10)
        except ValueError as exc:
            return str(exc)
        return "accepted"

    scheduler = await builder(tmp_path, bad=bad).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("bad"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.result_json() == "bytes added must be >= 0, got -10"
        assert events.of("progress", outcome.id) == []
        await events.close()


def _upload_progress(**fields: object) -> Progress:
    return Progress(task_id=1, task_type="upload", key="k" * 64, label="IMG_1.jpg", **fields)  # type: ignore[arg-type]


def test_watch_and_the_demo_show_bytes_rate_and_eta() -> None:
    moving = _upload_progress(
        percent=0.25, bytes_done=2_000_000, bytes_total=8_000_000, throughput_bps=1e6, eta_s=6.0
    )
    watch = WatchView(io.StringIO(), tty=True)
    watch.apply(moving)
    watch.draw(force=True)
    assert "2.0/8.0 MB  1.0 MB/s  ETA 6s" in watch.out.getvalue()  # type: ignore[attr-defined]
    demo = View(io.StringIO(), tty=True)
    demo.apply(Dispatched(task_id=1, task_type="upload", key="k" * 64, label="IMG_1.jpg"))
    demo.apply(moving)
    demo.draw(pending=0)
    assert "2.0/8.0 MB  1.0 MB/s  ETA 6s" in demo.out.getvalue()  # type: ignore[attr-defined]
    assert transfer(_upload_progress(percent=0.5)) == ""  # a fraction alone: no transfer


def test_status_shows_the_transfer_and_the_blocked_count() -> None:
    task = TaskRecord(7, "upload", "k" * 64, "photo.jpg", Priority.NORMAL, TaskStatus.RUNNING)
    progress = EstimatedProgress(
        7, "upload", task.key, "photo.jpg", 0.5, None, 0.5, 4_000_000, 8_000_000, 2e6, 2.0
    )
    text = format_snapshot(SchedulerSnapshot(running=[task], progress=[progress], blocked_count=2))
    assert "blocked 2" in text
    assert "4.0/8.0 MB  2.0 MB/s  ETA 2s" in text
