"""Task dependencies in a real embedded scheduler: order, events, queries, the cascade, errors.

Nothing sleeps: the tests wait for events, for ``wait_result`` or for a latch the test releases.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from taskmill import (
    CyclicDependencyError,
    DependencyFailed,
    DependencyFailedError,
    DependencyFailure,
    HistoryStatus,
    InvalidDependencyError,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskmillError,
    TaskStatus,
    TaskSubmission,
    Unblocked,
)
from taskmill.results import TERMINAL_TOPICS
from taskmill.watch import WatchView
from tests.scheduler_support import EventRecorder, Latches, builder


async def test_a_dependent_runs_after_its_dependency(tmp_path: Path) -> None:
    latches = Latches()
    scheduler = await builder(tmp_path, step=latches.run).max_concurrency(4).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        extract = await scheduler.submit(TaskSubmission("step", key="extract"))
        load = await scheduler.submit(
            TaskSubmission("step", key="load")
            .depends_on(extract.id)
            .on_dependency_failure(DependencyFailure.CANCEL)
        )
        store = scheduler.store()
        await events.wait_for(lambda _: bool(events.of("dispatched", extract.id)))
        record = await store.task_by_id(load.id)
        assert record is not None and record.status is TaskStatus.BLOCKED
        assert [r.id for r in await store.blocked_tasks()] == [load.id]
        assert await store.blocked_count() == 1
        assert (await scheduler.snapshot()).blocked_count == 1
        assert await store.task_dependencies(load.id) == [extract.id]
        assert await store.task_dependents(extract.id) == [load.id]
        latches["extract"].release()
        await events.wait_for(lambda _: bool(events.of("dispatched", load.id)))
        assert events.types_for(load.id)[:2] == ["unblocked", "dispatched"]
        assert isinstance(events.of("unblocked", load.id)[0], Unblocked)
        completed = events.of("completed", extract.id)[0]
        assert events.events.index(completed) < events.events.index(
            events.of("dispatched", load.id)[0]
        )
        latches["load"].release()
        record_done = await scheduler.wait_result(load.id, timeout=10.0)
        assert record_done.status is HistoryStatus.COMPLETED
        await events.close()


async def test_a_batch_names_its_members_and_a_failure_cascades(tmp_path: Path) -> None:
    async def fails(ctx: TaskContext) -> None:
        raise TaskError("no source")

    async def never(ctx: TaskContext) -> None:
        raise AssertionError("a dependent of a failed task must not run")

    scheduler = await builder(tmp_path, fails=fails, never=never).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        source = TaskSubmission("fails", key="source")
        transform = TaskSubmission("never", key="transform").depends_on(source)
        report = TaskSubmission("never", key="report").depends_on_all([transform])
        # The dependent comes first in the batch: a member may name a later one.
        outcomes = await scheduler.submit_batch([report, transform, source])
        report_id, transform_id, source_id = (o.id for o in outcomes)
        result = await scheduler.wait_result(report_id, timeout=10.0)
        assert result.status is HistoryStatus.DEPENDENCY_FAILED
        assert result.last_error == f"dependency task {transform_id} failed"
        failed = events.of("dependency_failed")
        assert [(e.task_id, e.failed_dependency) for e in failed] == [
            (transform_id, source_id),
            (report_id, transform_id),
        ]
        assert all(isinstance(e, DependencyFailed) for e in failed)
        assert (await scheduler.store().result(source_id)).status is HistoryStatus.FAILED  # type: ignore[union-attr]
        assert await scheduler.store().blocked_count() == 0
        await events.close()


async def test_bad_dependencies_are_refused_and_nothing_stored(tmp_path: Path) -> None:
    async def ok(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, ok=ok).build()
    async with scheduler:
        with pytest.raises(InvalidDependencyError, match="dependency 4242 is no task"):
            await scheduler.submit(TaskSubmission("ok", key="a").depends_on(4242))
        first = TaskSubmission("ok", key="first")
        second = TaskSubmission("ok", key="second").depends_on(first)
        first.depends_on(second)
        with pytest.raises(CyclicDependencyError, match="closes a cycle"):
            await scheduler.submit_batch([first, second])
        stranger = TaskSubmission("ok", key="stranger")
        with pytest.raises(ValueError, match="not in the same batch"):
            await scheduler.submit(TaskSubmission("ok", key="b").depends_on(stranger))
        cancelled = await scheduler.submit(TaskSubmission("ok", key="gone").run_after(3600.0))
        assert await scheduler.cancel(cancelled.id)
        with pytest.raises(DependencyFailedError, match="already ended as cancelled"):
            await scheduler.submit(TaskSubmission("ok", key="c").depends_on(cancelled.id))
        ignored = await scheduler.submit(
            TaskSubmission("ok", key="c")
            .depends_on(cancelled.id)
            .on_dependency_failure(DependencyFailure.IGNORE)
        )
        assert (await scheduler.wait_result(ignored.id, timeout=10.0)).status == "completed"
        with pytest.raises(ValueError, match="at most 10000"):
            TaskSubmission("ok").depends_on_all([1] * 100_000)
        with pytest.raises(ValueError, match="positive"):
            TaskSubmission("ok").depends_on(0)
        assert issubclass(CyclicDependencyError, TaskmillError)
        counts = await scheduler.store().counts()
        assert (counts.pending, counts.blocked, counts.scheduled) == (0, 0, 0)


async def test_a_waiter_on_the_terminal_topics_hears_a_dependency_failure(tmp_path: Path) -> None:
    """``wait_result`` listens to the events after which a task may have a terminal history
    row: a task failed for its dependency is one of them (else the waiter only polls)."""

    async def ok(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, ok=ok).build()
    async with scheduler:
        terminal = EventRecorder(await scheduler._subscribe(TERMINAL_TOPICS))
        later = await scheduler.submit(TaskSubmission("ok", key="later").run_after(3600.0))
        assert later.id is not None
        waiting = await scheduler.submit(TaskSubmission("ok", key="waiting").depends_on(later.id))
        assert await scheduler.cancel(later.id)
        await terminal.wait_for(lambda _: bool(terminal.of("dependency_failed", waiting.id)))
        await terminal.close()


def test_watch_says_which_dependency_failed() -> None:
    out = io.StringIO()
    view = WatchView(out, tty=False)
    ids = {"task_type": "load", "key": "k" * 64, "label": "day-1"}
    view.apply(Unblocked(task_id=3, **ids))
    view.apply(DependencyFailed(task_id=2, failed_dependency=1, error="x", **ids))
    lines = [line.split(maxsplit=2)[2] for line in out.getvalue().splitlines()]
    assert lines == [
        "unblocked  #3 load  day-1",
        "dependency_failed #2 load  day-1: dependency #1 failed",
    ]


async def test_children_may_depend_on_their_siblings(tmp_path: Path) -> None:
    order: list[str] = []

    class Pipeline(TaskExecutor):
        async def execute(self, ctx: TaskContext) -> None:
            fetch = TaskSubmission("step", key="fetch")
            await ctx.spawn_children([TaskSubmission("step", key="index").depends_on(fetch), fetch])

        async def finalize(self, ctx: TaskContext) -> None:
            order.append("finalize")

    async def step(ctx: TaskContext) -> None:
        order.append(ctx.record.label)

    scheduler = await builder(tmp_path, step=step, pipeline=Pipeline()).max_concurrency(4).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("pipeline"))
        record = await scheduler.wait_result(outcome.id, timeout=10.0)
        assert record.status is HistoryStatus.COMPLETED
        assert order == ["fetch", "index", "finalize"]
