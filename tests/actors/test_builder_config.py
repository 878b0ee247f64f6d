"""``SchedulerConfig`` and ``StoreConfig`` given to the builder reach the actors that apply them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bus.topology import Topology
from taskmill import (
    GroupLimits,
    HistoryStatus,
    Priority,
    RetentionPolicy,
    RetryPolicy,
    SchedulerConfig,
    ShutdownMode,
    StoreConfig,
    TaskContext,
    TaskError,
    TaskSubmission,
)
from taskmill.wiring import dispatcher_settings, host_settings, limiter_actor, store_actor
from tests.scheduler_support import EventRecorder, builder

CONFIG = SchedulerConfig(
    max_concurrency=7,
    max_retries=1,
    preempt_priority=Priority.HIGH,
    poll_interval=0.25,
    shutdown_mode=ShutdownMode.graceful(3.0),
    default_group_concurrency=2,
    group_concurrency={"s3://hot": 5},
)


def test_every_field_of_a_scheduler_config_reaches_the_actors_settings(tmp_path: Path) -> None:
    spec = builder(tmp_path).group_concurrency("old", 1).scheduler_config(CONFIG).spec
    topology = Topology.inproc()
    settings = dispatcher_settings(spec, topology)
    assert settings.max_concurrency == 7
    assert settings.max_retries == 1
    assert settings.preempt_priority == Priority.HIGH
    assert settings.poll_interval == 0.25
    limiter = limiter_actor(spec, topology).settings
    assert limiter.default_group_concurrency == 2
    assert dict(limiter.group_concurrency) == {"s3://hot": 5}  # the config's limits replace "old"
    assert spec.shutdown_mode == ShutdownMode.graceful(3.0)


def test_a_single_setting_after_the_config_changes_that_setting_again(tmp_path: Path) -> None:
    spec = builder(tmp_path).scheduler_config(CONFIG).max_concurrency(3).spec
    settings = dispatcher_settings(spec, Topology.inproc())
    assert (settings.max_concurrency, settings.max_retries) == (3, 1)


async def test_a_scheduler_built_from_a_config_runs_by_it(tmp_path: Path) -> None:
    runs: list[int] = []

    async def flaky(ctx: TaskContext) -> None:
        runs.append(ctx.record.id)
        raise TaskError("try again", retryable=True)

    config = SchedulerConfig(
        max_concurrency=3, max_retries=0, default_group_concurrency=2, group_concurrency={"a": 5}
    )
    scheduler = await builder(tmp_path, flaky=flaky).scheduler_config(config).build()
    assert await scheduler.max_concurrency() == 3
    assert await scheduler.group_limits() == GroupLimits(2, {"a": 5})
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        outcome = await scheduler.submit(TaskSubmission("flaky", key="x"))
        [failed] = await events.wait_count("failed", 1)
        assert not failed.will_retry  # max_retries 0: the first retryable error is final
        await events.close()
    assert runs == [outcome.id]


async def test_history_is_pruned_every_prune_every_finished_tasks(tmp_path: Path) -> None:
    async def noop(ctx: TaskContext) -> None:
        return None

    keep_one = StoreConfig(retention_policy=RetentionPolicy.max_count(1), prune_every=2)
    scheduler = await builder(tmp_path, work=noop).store_config(keep_one).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([TaskSubmission("work", key=k) for k in "abc"])
        await events.wait_count("completed", 3)
        await events.close()
        history = await scheduler.store().history()
    # Pruned to one row when the second task finished; the third's row came after (every
    # 100, nothing would have gone yet; every 1, one row would be left).
    assert len(history) == 2
    assert {h.status for h in history} == {HistoryStatus.COMPLETED}


def test_retry_policies_reach_the_store_and_time_limits_the_hosts(tmp_path: Path) -> None:
    upload = RetryPolicy.exponential(1.0, max=60.0)
    default = RetryPolicy.constant(0.5, max_retries=2)
    spec = (
        builder(tmp_path)
        .retry_policy("upload", upload)
        .default_retry_policy(default)
        .task_timeout("render", 30)
        .task_timeout("fetch", timedelta(minutes=2))
        .spec
    )
    topology = Topology.inproc()
    db = store_actor(spec, topology, path=str(tmp_path / "t.db"))._db_factory()
    try:
        assert (db.retry_policies, db.default_retry) == (
            {"upload": upload.to_wire()}, default.to_wire(),
        )  # fmt: skip
    finally:
        db.close()
    settings = host_settings(spec, topology, capacity=4, host_id="h1")
    assert (settings.task_timeouts, settings.host_id) == ({"render": 30.0, "fetch": 120.0}, "h1")


@pytest.mark.parametrize(
    ("configure", "error"),
    [
        (lambda b: b.retry_policy("t", 3), TypeError),
        (lambda b: b.default_retry_policy(None), TypeError),
        (lambda b: b.task_timeout("t", 0), ValueError),
        (lambda b: b.task_timeout("t", float("nan")), ValueError),
    ],
)
def test_bad_retry_and_timeout_settings_are_refused(
    tmp_path: Path, configure: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        configure(builder(tmp_path))
