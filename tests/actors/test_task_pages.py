"""Lists of active tasks come page by page, as history does: never past the frame limit.

Eight tasks with 1 MiB payloads (and labels of the longest) are twice what one frame holds: the
Store answers a list with the rows that fit and ``next_offset``, and the client asks for the rest
until it has them all. The Dispatcher's view of the running tasks (``active_tasks``, a snapshot)
is one reply: it carries the payloads that fit, the other tasks go without theirs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from store_support import insert, run

from actors.store.db import StoreDB
from actors.store.queries import REPLY_BYTES
from bus.kinds import TasksReply
from bus.limits import MAX_LABEL_CHARS, MAX_PAYLOAD_BYTES
from bus.protocol import MAX_FRAME_BYTES, encode
from taskmill import TaskContext, TaskSubmission
from tests.scheduler_support import EventRecorder, Latch, builder

N = 8
"""Tasks of 1 MiB each: 8 MiB, twice the frame limit (and past what a socket reads at all)."""


def big(i: int) -> bytes:
    return bytes([i]) * MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("status", ["pending", "running"])
def test_a_list_past_the_frame_size_is_a_page_that_says_where_the_rest_starts(
    db: StoreDB, status: str
) -> None:
    names = [f"t{i}" for i in range(N)]
    ids = [insert(db, name, payload=big(i))[0] for i, name in enumerate(names)]
    while status == "running" and db.claim(ids):  # a claim takes what fits its reply
        pass
    whole = db.list_tasks(status, 100)
    assert len(whole) == N
    pages, offset = [], 0
    while True:
        reply = db.tasks_page(status, 100 - sum(len(p) for p in pages), offset)
        assert len(encode(reply)[3]) <= MAX_FRAME_BYTES
        assert sum(len(r.payload or b"") for r in reply.tasks) <= REPLY_BYTES
        pages.append(reply.tasks)
        if reply.next_offset is None:
            break
        offset = reply.next_offset
    assert len(pages) > 1 and [r for p in pages for r in p] == whole
    two = db.tasks_page(status, 2)  # two fit: the whole query, nothing left to ask
    assert (len(two.tasks), two.next_offset) == (2, None)
    assert db.tasks_page(status, 3, 1).next_offset == 3  # the third does not


def test_a_claim_takes_the_big_tasks_that_fit_its_reply_and_leaves_the_rest_for_the_next(
    db: StoreDB,
) -> None:
    ids = [insert(db, f"t{i}", payload=big(i))[0] for i in range(N)]
    claimed: list[int] = []
    while len(claimed) < N:
        rows, exhausted = db.claim_next(N)
        assert rows and sum(len(r.payload or b"") for r in rows) <= REPLY_BYTES
        assert len(encode(TasksReply(rows))[3]) <= MAX_FRAME_BYTES
        assert exhausted == (len(claimed) + len(rows) == N)  # more to take: ask again
        claimed += [r.id for r in rows]
    assert claimed == ids
    [one] = insert(db, "alone", payload=big(9))
    assert [r.id for r in db.claim([one])] == [one]  # one row always fits


def test_a_small_list_is_one_page_and_an_offset_skips_rows(db: StoreDB) -> None:
    run(db, "r1", "r2", "r3")
    reply = db.tasks_page("running", 10)
    assert (len(reply.tasks), reply.next_offset) == (3, None)
    assert [r.label for r in db.tasks_page("running", 10, 1).tasks] == ["r2", "r3"]


async def test_the_task_lists_of_a_scheduler_fetch_every_page(tmp_path: Path) -> None:
    latch = Latch()

    async def hold(ctx: TaskContext) -> None:
        await latch.wait(ctx)

    label = "l" * MAX_LABEL_CHARS
    scheduler = await builder(tmp_path, hold=hold).max_concurrency(N).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        store = scheduler.store()
        for i in range(N):
            running = TaskSubmission("hold", key=f"r{i}", label=label).payload(big(i))
            await scheduler.submit(running)
        await events.wait_count("dispatched", N, timeout=30)
        for i in range(N):  # every slot is taken: these wait
            pending = TaskSubmission("hold", key=f"p{i}", label=label).payload(big(i))
            await scheduler.submit(pending)
            later = TaskSubmission("hold", key=f"s{i}", label=label).payload(big(i))
            await scheduler.submit(later.run_after(3600))
        for tasks in (
            await store.running_tasks(),
            await store.pending_tasks(),
            await store.scheduled_tasks(),
        ):
            assert len(tasks) == N
            assert sorted(t.payload[0] for t in tasks if t.payload) == list(range(N))
        assert len(await store.pending_tasks(limit=3)) == 3
        # The Dispatcher's view of them carries the payloads that fit one reply.
        active = await scheduler.active_tasks()
        assert sorted(t.id for t in active) == sorted(t.id for t in await store.running_tasks())
        kept = [t.payload for t in active if t.payload is not None]
        assert 0 < len(kept) < N and all(p == big(p[0]) for p in kept)
        assert len((await scheduler.snapshot()).running) == N
        latch.release()
        await events.close()


async def test_big_tasks_queued_together_all_run(tmp_path: Path) -> None:
    """Twelve 1 MiB tasks and sixteen free slots: one claim cannot carry them all."""

    async def work(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, work=work).max_concurrency(16).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.pause_all()
        for first in range(0, 12, 3):  # a submission of four would not fit a frame either
            batch = [
                TaskSubmission("work", key=f"k{i}").payload(big(i)) for i in range(first, first + 3)
            ]
            await scheduler.submit_batch(batch)
        await scheduler.resume_all()
        await events.wait_count("completed", 12, timeout=30)
        await events.close()
