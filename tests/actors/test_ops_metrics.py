"""The metrics endpoint shows the deployment's state: the queue by status, tier and type, the
oldest ready task's age, running tasks per group, executor hosts and their free slots, each
actor's heartbeat age, the Store's transaction latencies, and counters of what happened."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.publisher.labels import LabelCap
from actors.publisher.operations import OperationsCollector
from actors.publisher.registry import PlainRegistry
from bus.clock import FakeClock
from bus.kinds import QueueCount, StoreMetrics
from bus.kinds_run import HostInfo, HostsReply
from taskmill import Priority, TaskContext, TaskSubmission
from tests.procfile_support import free_port
from tests.scheduler_support import EventRecorder, builder
from tests.store_support import insert, open_db, row, run

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return text, parse(text)


async def scrape_until(port: int, check: Callable[[Samples], bool]) -> tuple[str, Samples]:
    """Scrape until ``check`` holds: the endpoint reads the actors on its own interval, so the
    test asks again, as Prometheus would, within a bound."""
    for _ in range(200):
        text, samples = await asyncio.to_thread(scrape, port)
        if check(samples):
            return text, samples
        await asyncio.to_thread(threading.Event().wait, 0.05)
    raise AssertionError(f"metrics never showed the expected state:\n{text}")


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.mark.timeout(60)
async def test_endpoint_shows_queue_hosts_groups_and_heartbeats(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def work(ctx: TaskContext) -> None:
        await release.wait()

    port = free_port()
    scheduler = await (
        builder(tmp_path, work=work)
        .metrics_port(port)
        .metrics_interval(0.1)
        .group_concurrency("g", 1)
        .build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch(
            [TaskSubmission("work", key=f"g{i}", group="g") for i in range(3)]
            + [TaskSubmission("work", key="later").run_after(3600)]
        )
        await events.wait_for(lambda evs: len(events.of("dispatched")) >= 1)

        def settled(s: Samples) -> bool:
            return (
                value(s, "taskmill_tasks", status="pending", tier="normal") == 2
                and value(s, "taskmill_group_running_tasks", group="g") == 1
            )

        text, samples = await scrape_until(port, settled)
        assert "_created" not in text
        s = samples
        assert value(s, "taskmill_tasks", status="running", tier="normal") == 1
        assert value(s, "taskmill_tasks_by_type", status="pending", task_type="work") == 2
        assert value(s, "taskmill_tasks_by_type", status="scheduled", task_type="work") == 1
        assert value(s, "taskmill_tasks_waiting", reason="scheduled") == 1
        assert value(s, "taskmill_tasks_submitted_total") == 4
        age = value(s, "taskmill_oldest_ready_age_seconds", tier="normal")
        assert age is not None and age >= 0
        assert value(s, "taskmill_oldest_ready_age_seconds", tier="high") == 0
        assert value(s, "taskmill_hosts") == 1
        assert value(s, "taskmill_scheduler_paused") == 0
        [free] = [v for k, v in s.items() if k[0] == "taskmill_host_free_slots"]
        [capacity] = [v for k, v in s.items() if k[0] == "taskmill_host_capacity"]
        assert free == capacity - 1
        for actor in ("store", "dispatcher", "limiter", "monitor"):
            heard = value(s, "taskmill_actor_heartbeat_age_seconds", actor=actor)
            assert heard is not None and heard < 10
        assert (value(s, "taskmill_store_transaction_seconds_count") or 0) > 0
        assert value(s, "taskmill_tasks_dispatched_total", task_type="work") == 1

        [pending, *_] = await scheduler.store().pending_tasks()
        assert await scheduler.cancel(pending.id)
        release.set()
        await events.wait_for(lambda evs: len(events.of("completed")) >= 2)

        def finished(s: Samples) -> bool:
            return value(s, "taskmill_task_wait_seconds_count", tier="normal") == 2

        _, samples = await scrape_until(port, finished)
        assert value(samples, "taskmill_tasks_cancelled_total", task_type="work") == 1
        assert value(samples, "taskmill_tasks_dispatched_total", task_type="work") == 2
        await events.close()


def test_actor_silence_grows_until_it_answers_again() -> None:
    clock = FakeClock()
    collector = OperationsCollector(clock, LabelCap(), ("store", "limiter"))
    clock.advance(30)
    collector.heard("store")
    clock.advance(2)
    ages = _collected(collector)
    assert value(ages, "taskmill_actor_heartbeat_age_seconds", actor="store") == 2
    assert value(ages, "taskmill_actor_heartbeat_age_seconds", actor="limiter") == 32


def test_labels_past_their_cap_add_up_in_other() -> None:
    clock = FakeClock()
    collector = OperationsCollector(clock, LabelCap(limit=1), ())
    collector.groups = LabelCap(limit=1)
    collector.hosts = LabelCap(limit=1)
    ready_ms = int(clock.time() * 1000)
    collector.store_answered(
        StoreMetrics(
            [
                QueueCount("pending", "high", "a", 2, ready_ms),
                QueueCount("pending", "high", "b", 3, ready_ms - 4000),
                QueueCount("pending", "high", "c", 5, ready_ms),
            ],
            {"g1": 1, "g2": 2, "g3": 4},
        )
    )
    collector.dispatcher_answered(
        HostsReply([HostInfo("h1", ["a"], 4, 1, 0.5), HostInfo("h2", ["a"], 2, 2, 1.0)])
    )
    clock.advance(1)
    s = _collected(collector)
    assert value(s, "taskmill_tasks", status="pending", tier="high") == 10
    assert value(s, "taskmill_tasks_by_type", status="pending", task_type="a") == 2
    assert value(s, "taskmill_tasks_by_type", status="pending", task_type="other") == 8
    assert value(s, "taskmill_oldest_ready_age_seconds", tier="high") == 5
    assert value(s, "taskmill_group_running_tasks", group="g1") == 1
    assert value(s, "taskmill_group_running_tasks", group="other") == 6
    assert value(s, "taskmill_host_free_slots", host="h1") == 3
    assert value(s, "taskmill_host_free_slots", host="other") == 0
    assert value(s, "taskmill_host_heartbeat_age_seconds", host="h1") == 1.5
    assert value(s, "taskmill_hosts") == 2


def test_an_actor_that_stops_answering_loses_its_series() -> None:
    collector = OperationsCollector(FakeClock(), LabelCap(), ())
    collector.store_answered(StoreMetrics([QueueCount("pending", "idle", "a", 1, 0)]))
    collector.dispatcher_answered(HostsReply([]))
    assert value(_collected(collector), "taskmill_hosts") == 0
    collector.store_answered(None)
    collector.dispatcher_answered(None)
    names = {name for name, _ in _collected(collector)}
    assert names == set()  # no actor watched, nothing answered: nothing stale is shown


def _collected(collector: OperationsCollector) -> Samples:
    registry = PlainRegistry()
    registry.register(collector)
    from prometheus_client import generate_latest

    return parse(generate_latest(registry).decode())


def test_priority_tiers_label_the_wait() -> None:
    from bus.tiers import tier_of

    assert [tier_of(p) for p in (Priority.REALTIME, 63, Priority.HIGH, Priority.NORMAL)] == [
        "realtime",
        "realtime",
        "high",
        "normal",
    ]
    assert [tier_of(p) for p in (191, Priority.BACKGROUND, 254, Priority.IDLE)] == [
        "normal",
        "background",
        "background",
        "idle",
    ]


def test_the_store_counts_by_tier_and_splits_by_type_while_the_queue_is_shallow(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    db = open_db(tmp_path, clock)
    try:
        first_ms = int(clock.time() * 1000)
        insert(db, "a1", priority=10, task_type="a")
        [running] = run(db, "b1", priority=100, task_type="b")
        clock.advance(5)
        insert(db, "a2", priority=20, task_type="a", group_key="g")
        insert(db, "later", priority=100, task_type="b", due_at_ms=first_ms + 3_600_000)
        assert db.queue_counts() == [
            QueueCount("pending", "realtime", "a", 2, first_ms),
            QueueCount("running", "high", "b", 1),
            QueueCount("scheduled", "high", "b", 1),
        ]
        assert db.queue_counts(type_split_limit=1)[0] == QueueCount(
            "pending", "realtime", None, 2, first_ms
        )
        assert db.running_by_group() == {}
        assert row(db, running).status == "running"
    finally:
        db.close()
