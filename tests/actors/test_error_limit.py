"""An executor's error message is kept to ``MAX_ERROR_CHARS``, its cut said in the text.

An exception whose message is 50 MB long must not bloat the task's row, its history, the events
or the host's result batch (which would not even fit a frame): the beginning is kept, with a
marker saying how many characters were cut.
"""

from __future__ import annotations

import re
from pathlib import Path

from store_support import error, row, run

from actors.store.db import StoreDB
from bus.limits import MAX_ERROR_CHARS, cut_text
from taskmill import TaskContext, TaskError, TaskSubmission
from tests.scheduler_support import EventRecorder, builder

HUGE = 50_000_000
MARKER = re.compile(r"… \[(\d+) characters cut\]$")


def assert_cut(text: str | None, original: str) -> None:
    """``text`` is ``original`` cut to the limit, and says how many characters it lost."""
    assert text is not None and len(text) <= MAX_ERROR_CHARS
    found = MARKER.search(text)
    assert found is not None, text[-80:]
    kept = found.start()
    assert text[:kept] == original[:kept] and kept > MAX_ERROR_CHARS // 2
    assert int(found.group(1)) == len(original) - kept


def test_a_short_text_is_kept_whole_and_a_long_one_cut_with_its_count() -> None:
    assert cut_text("boom", MAX_ERROR_CHARS) == "boom"
    exact = "e" * MAX_ERROR_CHARS
    assert cut_text(exact, MAX_ERROR_CHARS) == exact
    assert_cut(cut_text(exact + "!", MAX_ERROR_CHARS), exact + "!")


async def test_an_executor_s_50_mb_error_is_cut_in_the_event_and_in_history(
    tmp_path: Path,
) -> None:
    message = "x" * HUGE

    def broken(ctx: TaskContext) -> None:
        raise ValueError(message)

    scheduler = await builder(tmp_path, broken=broken).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("broken"))
        [failed] = await events.wait_count("failed", 1, timeout=30)
        assert failed.task_id == outcome.id
        assert_cut(failed.error, f"ValueError: {message}")
        [record] = await scheduler.store().history()
        assert_cut(record.last_error, f"ValueError: {message}")
        await events.close()


async def test_a_retried_task_keeps_a_cut_last_error(tmp_path: Path) -> None:
    message = "r" * (HUGE // 10)
    runs = 0

    async def flaky(ctx: TaskContext) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise TaskError(message, retryable=True)

    scheduler = await builder(tmp_path, flaky=flaky).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit(TaskSubmission("flaky"))
        [retry] = await events.wait_count("failed", 1, timeout=30)
        assert retry.will_retry
        assert_cut(retry.error, message)
        await events.wait_count("completed", 1, timeout=30)
        [record] = await scheduler.store().history()
        assert_cut(record.last_error, message)
        await events.close()


def test_the_store_cuts_a_long_error_whatever_sent_it(db: StoreDB) -> None:
    message = "s" * (MAX_ERROR_CHARS * 10)
    [task_id] = run(db, "a")
    [t] = db.finish([error(task_id, message, retryable=True)], max_retries=3)
    assert_cut(t.error, message)
    assert_cut(row(db, task_id).last_error, message)
    db.claim([task_id])
    [t] = db.release([task_id], message)
    assert_cut(t.error, message)
    assert_cut(row(db, task_id).last_error, message)
