"""Supersede, reject, tags, bulk cancel and cancel hooks in a real embedded scheduler."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from taskmill import (
    DuplicateStrategy,
    HistoryStatus,
    OutcomeKind,
    Priority,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskSubmission,
)
from tests.scheduler_support import EventRecorder, Latches, builder


class Hooked(TaskExecutor):
    """Runs until its latch is released or its token is cancelled; records its cancel hooks."""

    def __init__(self) -> None:
        self.latches = Latches()
        self.hooked: list[tuple[int, bytes | None]] = []
        self.hook_called = threading.Event()
        self.changed = threading.Event()

    async def execute(self, ctx: TaskContext) -> object:
        if not await self.latches[ctx.record.label].wait(ctx):
            raise TaskError("interrupted")
        return ctx.payload()

    async def on_cancel(self, ctx: TaskContext) -> None:
        self.hooked.append((ctx.record.id, ctx.raw_payload))
        assert not ctx.token.is_cancelled()  # a token of its own
        self.hook_called.set()
        self.changed.set()

    async def hooks(self, n: int) -> None:
        """Wait until ``n`` hooks ran (they run on the host's loop, maybe another thread's)."""
        while len(self.hooked) < n:
            await asyncio.to_thread(self.changed.wait, 10)
            self.changed.clear()


def job(label: str, version: int, **fields: object) -> TaskSubmission:
    return TaskSubmission("job", key=label, label=label, **fields).payload_json({"v": version})  # type: ignore[arg-type]


async def test_superseding_a_running_task_cancels_it_and_runs_the_new_version(
    tmp_path: Path,
) -> None:
    executor = Hooked()
    scheduler = await builder(tmp_path, job=executor).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        first = await scheduler.submit(job("a", 1, tags={"tenant": "acme"}))
        await events.wait_for(lambda _: bool(events.of("dispatched", first.id)))
        second = await scheduler.submit(job("a", 2).on_duplicate(DuplicateStrategy.SUPERSEDE))
        assert second.kind is OutcomeKind.SUPERSEDED and second.is_superseded()
        assert second.replaced_id == first.id and second.id not in (None, first.id)
        assert second.id is not None and first.id is not None
        await events.wait_for(lambda _: bool(events.of("dispatched", second.id)))
        executor.latches["a"].release()
        done = await scheduler.wait_result(second.id, timeout=10)
        assert done.status is HistoryStatus.COMPLETED and done.result_json() == {"v": 2}
        old = await scheduler.wait_result(first.id, timeout=10)
        assert old.status is HistoryStatus.SUPERSEDED and old.tags == {"tenant": "acme"}
        assert await asyncio.to_thread(executor.hook_called.wait, 10)
        assert executor.hooked == [(first.id, b'{"v":1}')]
        [superseded] = events.of("superseded", first.id)
        assert superseded.new_task_id == second.id and superseded.tags == {"tenant": "acme"}
        assert events.types_for(first.id) == ["dispatched", "cancelled", "superseded"]
        await events.close()


async def test_superseding_a_pending_task_keeps_its_id_and_reject_changes_nothing(
    tmp_path: Path,
) -> None:
    executor = Hooked()
    scheduler = await builder(tmp_path, job=executor).build()  # not running: all stay pending
    first = await scheduler.submit(job("a", 1))
    second = await scheduler.submit(job("a", 2, on_duplicate="supersede"))
    assert (second.kind, second.id, second.replaced_id) == ("superseded", first.id, first.id)
    rejected = await scheduler.submit(job("a", 3, on_duplicate=DuplicateStrategy.REJECT))
    assert (rejected.kind, rejected.id, rejected.is_rejected()) == ("rejected", None, True)
    assert first.id is not None
    record = await scheduler.store().task_by_id(first.id)
    assert record is not None and record.payload == b'{"v":2}'
    [old] = await scheduler.store().history()
    assert (old.task_id, old.status, old.payload) == (first.id, "superseded", b'{"v":1}')
    await scheduler.close()
    assert executor.hooked == []


async def test_tags_reach_records_events_children_and_the_queries(tmp_path: Path) -> None:
    async def parent(ctx: TaskContext) -> None:
        await ctx.spawn_child(TaskSubmission("child").tag("step", "2"))

    async def child(ctx: TaskContext) -> None:
        return None

    scheduler = await builder(tmp_path, parent=parent, child=child).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        sub = TaskSubmission("parent").tag("tenant", "acme").tags({"step": "1", "env": "prod"})
        outcome = await scheduler.submit(sub)
        await events.wait_for(lambda _: len(events.of("completed")) == 2)
        [child_done] = [e for e in events.of("completed") if e.task_type == "child"]
        assert child_done.tags == {"tenant": "acme", "step": "2", "env": "prod"}
        parents = [e.type for e in events.events if getattr(e, "tags", {}).get("step") == "1"]
        assert parents[0] == "dispatched" and parents[-1] == "completed"
        assert outcome.id is not None
        record = await scheduler.wait_result(outcome.id, timeout=10)
        assert record.tags == {"tenant": "acme", "step": "1", "env": "prod"}
        await events.close()
    # The queries see the active tasks only.
    scheduler = await builder(tmp_path, parent=parent, child=child).build()
    try:
        a = await scheduler.submit(TaskSubmission("child", key="a", tags={"tenant": "acme"}))
        b = await scheduler.submit(TaskSubmission("child", key="b").tag("tenant", "acme"))
        c = await scheduler.submit(TaskSubmission("child", key="c").tag("tenant", "other"))
        await scheduler.submit(TaskSubmission("child", key="d"))
        assert await scheduler.task_ids_by_tags({"tenant": "acme"}) == [a.id, b.id]
        assert await scheduler.task_ids_by_tags({"tenant": "acme"}, status="running") == []
        assert await scheduler.count_by_tag("tenant") == {"acme": 2, "other": 1}
        assert await scheduler.tag_values("tenant") == ["acme", "other"]
        record = await scheduler.store().task_by_id(c.id or 0)
        assert record is not None and record.tags == {"tenant": "other"}
    finally:
        await scheduler.close()


async def test_bulk_cancel_by_group_type_and_tag_calls_the_running_tasks_hooks(
    tmp_path: Path,
) -> None:
    executor = Hooked()
    scheduler = await builder(tmp_path, job=executor).max_concurrency(2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        running = await scheduler.submit(job("r", 1, group="g", tags={"t": "x"}))
        second = await scheduler.submit(job("s", 2, group="g"))
        await events.wait_for(lambda _: len(events.of("dispatched")) == 2)
        queued = await scheduler.submit(job("q", 3, group="g", priority=Priority.BACKGROUND))
        other = await scheduler.submit(job("o", 1, group="h", run_after=3600.0))
        cancelled = await scheduler.cancel_group("g")
        assert cancelled == [running.id, second.id, queued.id]
        await events.wait_for(lambda _: len(events.of("cancelled")) == 3)
        assert await asyncio.to_thread(executor.hook_called.wait, 10)
        await executor.hooks(2)  # the two running ones: the queued one never ran
        assert sorted(executor.hooked) == [(running.id, b'{"v":1}'), (second.id, b'{"v":2}')]
        assert running.id is not None and queued.id is not None
        for task_id in (running.id, queued.id):
            done = await scheduler.wait_result(task_id, timeout=10)
            assert done.status is HistoryStatus.CANCELLED
        assert await scheduler.cancel_group("g") == []
        tagged = await scheduler.submit(job("t", 1, tags={"t": "y"}, run_after=3600.0))
        assert await scheduler.cancel_by_tag("t", "y") == [tagged.id]
        assert await scheduler.cancel_type("job") == [other.id]
        await events.wait_for(lambda _: len(events.of("cancelled")) == 5)
        await events.close()


async def test_preemption_does_not_call_the_cancel_hook_but_a_cancel_does(tmp_path: Path) -> None:
    executor = Hooked()
    urgent_done = threading.Event()

    async def urgent(ctx: TaskContext) -> None:
        urgent_done.set()

    scheduler = await builder(tmp_path, job=executor, urgent=urgent).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        victim = await scheduler.submit(job("v", 1, priority=Priority.BACKGROUND))
        await events.wait_for(lambda _: bool(events.of("dispatched", victim.id)))
        await scheduler.submit(TaskSubmission("urgent", priority=Priority.REALTIME))
        await events.wait_for(lambda _: bool(events.of("preempted", victim.id)))
        await events.wait_for(lambda _: len(events.of("dispatched", victim.id)) == 2)
        assert urgent_done.is_set() and executor.hooked == []  # preempted: no hook
        assert victim.id is not None and await scheduler.cancel(victim.id)
        assert await asyncio.to_thread(executor.hook_called.wait, 10)
        assert executor.hooked == [(victim.id, b'{"v":1}')]
        await events.close()


async def test_a_cancel_hook_that_overruns_its_timeout_is_cancelled(tmp_path: Path) -> None:
    stopped = threading.Event()
    started = threading.Event()

    class Stubborn(TaskExecutor):
        async def execute(self, ctx: TaskContext) -> None:
            started.set()
            await ctx.token.wait()

        async def on_cancel(self, ctx: TaskContext) -> None:
            try:
                await asyncio.Event().wait()  # never ends by itself
            finally:
                stopped.set()

    scheduler = await builder(tmp_path, job=Stubborn()).cancel_hook_timeout(0.2).build()
    async with scheduler:
        outcome = await scheduler.submit(TaskSubmission("job"))
        assert await asyncio.to_thread(started.wait, 10)
        assert outcome.id is not None and await scheduler.cancel(outcome.id)
        assert await asyncio.to_thread(stopped.wait, 10)


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: s.tag("k" * 65, "v"), "the limit is 64"),
        (lambda s: s.tag("k", "é" * 129), "the limit is 256"),
        (lambda s: s.tags({f"k{i}": "v" for i in range(32)}), "33 tags; the limit is 32"),
        (lambda s: s.on_duplicate("replace"), "unknown duplicate strategy 'replace'"),
    ],
)
def test_bad_flow_control_input_is_a_clear_error_and_keeps_the_submission(
    build: object, message: str
) -> None:
    sub = TaskSubmission("t").tag("kept", "yes")
    with pytest.raises(ValueError, match=message):
        build(sub)  # type: ignore[operator]
    assert sub.tag_map == {"kept": "yes"} and sub.duplicate_strategy is DuplicateStrategy.SKIP


def test_the_constructor_takes_the_same_fields() -> None:
    sub = TaskSubmission("t", tags={"a": "1"}, on_duplicate="supersede")
    assert sub == TaskSubmission("t").tag("a", "1").on_duplicate(DuplicateStrategy.SUPERSEDE)
    wire = sub.to_wire()
    assert (wire.tags, wire.on_duplicate) == ({"a": "1"}, "supersede")
    assert TaskSubmission("t").to_wire().tags is None
    with pytest.raises(ValueError, match="32"):
        TaskSubmission("t", tags={str(i): "" for i in range(33)})


async def test_a_bad_tag_sent_over_the_bus_is_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    from bus.errors import InvalidRequest
    from bus.kinds import Submit, SubmitReply

    scheduler = await builder(tmp_path).build()
    try:
        good = TaskSubmission("t", key="good").to_wire()
        bad = TaskSubmission("t", key="bad").to_wire()
        bad = type(bad)(**{**{f: getattr(bad, f) for f in bad.__slots__}, "tags": {"k" * 65: ""}})
        with pytest.raises(InvalidRequest, match="the limit is 64"):
            await scheduler._store.call(Submit([good, bad]), SubmitReply)
        assert await scheduler.store().pending_count() == 0
    finally:
        await scheduler.close()


def test_the_cancel_command_needs_one_bulk_option_and_a_well_formed_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from taskmill.cli import main

    run_dir = str(tmp_path / "run")
    assert main(["cancel", "--run-dir", run_dir]) == 2
    assert "give task ids, or one of --group, --type, --tag" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["cancel", "--tag", "no-value", "--run-dir", run_dir])
    assert exit_.value.code == 2
    assert "a tag is KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cancel", "--group", "g", "--type", "t", "--run-dir", run_dir])
