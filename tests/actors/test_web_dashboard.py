"""The web dashboard's HTTP side, against a real embedded scheduler: what the page is shown, what
its actions do, and who may use it (Starlette's TestClient, and a real server for the stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from scheduler_support import EventRecorder, Latches, builder
from starlette.testclient import TestClient

from taskmill import (
    AsyncClient,
    Priority,
    RetryPolicy,
    Scheduler,
    TaskContext,
    TaskError,
    TaskSubmission,
)
from taskmill.web import DashboardServer, check_bind, dashboard_app

ACT = {"X-Taskmill": "1"}


def client_of(scheduler: Scheduler) -> AsyncClient:
    """A client of the embedded scheduler over its inproc endpoints (same zmq context)."""
    return AsyncClient(scheduler.topology, context=scheduler._context)


@pytest.fixture
async def scheduler(tmp_path: Path, latches: Latches) -> AsyncIterator[Scheduler]:
    async def boom(ctx: TaskContext) -> None:
        raise TaskError("upstream said 503", retryable=True)

    async def parent(ctx: TaskContext) -> None:
        await ctx.spawn_child(TaskSubmission("hold", key="child-1"))

    b = builder(tmp_path, hold=latches.run, boom=boom, parent=parent).max_concurrency(4)
    b.retry_policy("boom", RetryPolicy.constant(0.0, max_retries=0))
    async with await b.build() as s:
        yield s


@pytest.fixture
def http(scheduler: Scheduler) -> Iterator[TestClient]:
    app = dashboard_app(lambda: client_of(scheduler))
    with TestClient(app, base_url="http://localhost") as client:
        yield client


async def call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking TestClient call, off the loop the scheduler's executors report to."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def running(recorder: EventRecorder, task_id: int) -> None:
    await recorder.wait_for(lambda _: bool(recorder.of("dispatched", task_id)))


async def test_the_page_and_its_files_are_served(http: TestClient) -> None:
    page = await call(http.get, "/")
    assert page.status_code == 200 and "<title>taskmill</title>" in page.text
    weight = len(page.content)
    for name in ("app.js", "style.css"):
        reply = await call(http.get, f"/static/{name}")
        assert reply.status_code == 200
        weight += len(reply.content)
    assert weight < 200_000  # the whole page, uncompressed


async def test_the_state_shows_running_tasks_queue_depth_and_hosts(
    scheduler: Scheduler, http: TestClient, latches: Latches
) -> None:
    recorder = await EventRecorder.start(scheduler)
    await scheduler.pause_all()  # nothing starts: the queue keeps what is submitted
    await scheduler.submit_batch(
        [
            TaskSubmission("hold", key="a", group="s3").priority(Priority.HIGH),
            TaskSubmission("hold", key="b", group="s3").priority(Priority.HIGH),
            TaskSubmission("hold", key="c").priority(Priority.HIGH),
            TaskSubmission("hold", key="d", group="gcs"),
        ]
    )
    state = (await call(http.get, "/api/state")).json()
    assert state["paused"] is True
    assert state["counts"]["pending"] == 4
    assert state["depth"] == [
        {"priority": int(Priority.HIGH), "group": None, "count": 1},
        {"priority": int(Priority.HIGH), "group": "s3", "count": 2},
        {"priority": int(Priority.NORMAL), "group": "gcs", "count": 1},
    ]
    [host] = state["hosts"]
    assert set(host["task_types"]) == {"hold", "boom", "parent"} and host["running"] == 0
    assert state["controls"] == {"groups": True}  # the client pauses groups: the page offers it

    outcome = await scheduler.submit(TaskSubmission("hold", key="now").priority(Priority.HIGH))
    await scheduler.resume_all()
    await recorder.wait_count("dispatched", 4)
    state = (await call(http.get, "/api/state")).json()
    assert outcome.id in [t["id"] for t in state["running"]]
    assert state["hosts"][0]["running"] == 4 and state["counts"]["running"] == 4
    await recorder.close()


async def test_cancel_from_the_dashboard_cancels_the_task(
    scheduler: Scheduler, http: TestClient
) -> None:
    recorder = await EventRecorder.start(scheduler)
    outcome = await scheduler.submit(TaskSubmission("hold", key="long"))
    assert outcome.id is not None
    await running(recorder, outcome.id)
    refused = await call(http.post, f"/api/tasks/{outcome.id}/cancel")  # no action header
    assert refused.status_code == 403
    assert [t.id for t in await scheduler.active_tasks()] == [outcome.id]
    reply = await call(http.post, f"/api/tasks/{outcome.id}/cancel", headers=ACT)
    assert reply.json() == {"cancelled": True}
    record = await scheduler.wait_result(outcome.id, timeout=10)
    assert record.status == "cancelled"
    again = await call(http.post, f"/api/tasks/{outcome.id}/cancel", headers=ACT)
    assert again.json() == {"cancelled": False}
    await recorder.close()


async def test_pause_and_resume_all(scheduler: Scheduler, http: TestClient) -> None:
    assert (await call(http.post, "/api/pause", headers=ACT)).json() == {"paused": True}
    assert await scheduler.is_paused()
    assert (await call(http.get, "/api/state")).json()["paused"] is True
    assert (await call(http.post, "/api/resume", headers=ACT)).json() == {"paused": False}
    assert not await scheduler.is_paused()


async def test_history_filters_and_a_dead_letter_retry(
    scheduler: Scheduler, http: TestClient
) -> None:
    recorder = await EventRecorder.start(scheduler)
    failed = await scheduler.submit(TaskSubmission("boom", key="x").payload_json({"n": 1}))
    await recorder.wait_count("dead_lettered", 1)
    held = await scheduler.submit(TaskSubmission("hold", key="gone"))
    assert held.id is not None
    await running(recorder, held.id)
    await scheduler.cancel(held.id)
    await scheduler.wait_result(held.id, timeout=10)

    everything = (await call(http.get, "/api/history")).json()["rows"]
    assert [r["status"] for r in everything] == ["cancelled", "dead_letter"]
    dead = (await call(http.get, "/api/history?status=dead_letter")).json()["rows"]
    assert [(r["id"], r["last_error"]) for r in dead] == [(failed.id, "upstream said 503")]
    by_type = (await call(http.get, "/api/history?type=hold")).json()["rows"]
    assert [r["id"] for r in by_type] == [held.id]
    both = (await call(http.get, "/api/history?type=hold&status=dead_letter")).json()["rows"]
    assert both == []
    bad = await call(http.get, "/api/history?status=exploded")
    assert bad.status_code == 400 and "unknown status 'exploded'" in bad.json()["error"]
    assert (await call(http.get, "/api/history?limit=-1")).status_code == 400

    retried = await call(http.post, f"/api/dead-letters/{dead[0]['history_id']}/retry", headers=ACT)
    assert retried.json()["kind"] == "inserted"
    await recorder.wait_count("dead_lettered", 2)  # it ran (and failed) again
    refused = await call(http.post, "/api/dead-letters/999999/retry", headers=ACT)
    assert refused.status_code == 409 and "no dead-letter task" in refused.json()["error"]
    await recorder.close()


async def test_a_task_detail_shows_payload_error_and_children(
    scheduler: Scheduler, http: TestClient
) -> None:
    recorder = await EventRecorder.start(scheduler)
    parent = await scheduler.submit(
        TaskSubmission("parent", key="p").payload_json({"bucket": "photos", "n": 3})
    )
    await recorder.wait_count("waiting", 1)
    detail = (await call(http.get, f"/api/tasks/{parent.id}")).json()
    assert detail["active"]["status"] == "waiting"
    assert json.loads(detail["payload"]["text"]) == {"bucket": "photos", "n": 3}
    assert [(c["task_type"], c["label"]) for c in detail["children"]] == [("hold", "child-1")]

    failed = await scheduler.submit(TaskSubmission("boom", key="y"))
    await recorder.wait_count("dead_lettered", 1)
    detail = (await call(http.get, f"/api/tasks/{failed.id}")).json()
    assert detail["active"] is None
    assert detail["history"]["status"] == "dead_letter"
    assert detail["history"]["last_error"] == "upstream said 503"
    assert (await call(http.get, "/api/tasks/424242")).status_code == 404
    assert (await call(http.get, "/api/tasks/abc")).status_code == 400
    await recorder.close()


async def test_a_group_paused_and_resumed_from_the_page(scheduler: Scheduler) -> None:
    app = dashboard_app(lambda: client_of(scheduler))
    with TestClient(app, base_url="http://localhost") as http:
        assert (await call(http.get, "/api/state")).json()["controls"] == {"groups": True}
        reply = await call(http.post, "/api/groups/pause", json={"group": "s3://b"}, headers=ACT)
        assert reply.status_code == 200
        assert [p.group for p in (await scheduler.snapshot()).paused_groups] == ["s3://b"]
        reply = await call(http.post, "/api/groups/resume", json={"group": "s3://b"}, headers=ACT)
        assert reply.status_code == 200
        assert (await scheduler.snapshot()).paused_groups == []
        bad = await call(http.post, "/api/groups/pause", json={"group": ""}, headers=ACT)
        assert bad.status_code == 400


def test_any_address_but_loopback_needs_a_token() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    with pytest.raises(ValueError, match="only with a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ValueError, match="only with a token"):
        Scheduler.builder().web_port(8765, host="192.0.2.1")
    with pytest.raises(ValueError, match="letters, digits"):
        check_bind("0.0.0.0", "has space")
    check_bind("0.0.0.0", "s3cret-token")


async def test_a_token_is_checked_on_every_request(scheduler: Scheduler) -> None:
    app = dashboard_app(lambda: client_of(scheduler), token="s3cret")
    with TestClient(app, base_url="http://dash.example") as http:
        for path in ("/", "/static/app.js", "/api/state", "/api/events", "/api/history"):
            assert (await call(http.get, path)).status_code == 401, path
        wrong = await call(http.get, "/api/state", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await call(http.get, "/api/state", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        page = await call(http.get, "/?token=s3cret")
        assert page.status_code == 200 and "taskmill_token=s3cret" in page.headers["set-cookie"]
        # The cookie now carries it: the page's own requests need nothing else.
        assert (await call(http.get, "/static/app.js")).status_code == 200
        assert (await call(http.post, "/api/pause", headers=ACT)).status_code == 200
    assert await scheduler.is_paused()


async def test_without_a_token_only_a_loopback_host_name_is_answered(
    scheduler: Scheduler,
) -> None:
    app = dashboard_app(lambda: client_of(scheduler))
    with TestClient(app, base_url="http://rebound.example") as http:
        assert (await call(http.get, "/api/state")).status_code == 421


async def test_the_event_stream_is_live_and_shared(tmp_path: Path, latches: Latches) -> None:
    b = builder(tmp_path, hold=latches.run).web_port(0)
    async with await b.build() as scheduler:
        assert scheduler.web_url is not None
        async with httpx.AsyncClient(base_url=scheduler.web_url, timeout=10) as http:
            async with http.stream("GET", "/api/events") as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == ": live"
                first = await next_event(lines)
                assert first[0] == "state" and first[1]["running"] == []
                outcome = await scheduler.submit(TaskSubmission("hold", key="t"))
                _, batch = await next_event(lines, "events")
                while not any(e["type"] == "dispatched" for e in batch["recent"]):
                    _, batch = await next_event(lines, "events")
                [dispatched] = [e for e in batch["recent"] if e["type"] == "dispatched"]
                assert dispatched["id"] == outcome.id and dispatched["task_type"] == "hold"
                latches["t"].release()
                while not any(e["type"] == "completed" for e in batch["recent"]):
                    _, batch = await next_event(lines, "events")
            refused = await http.get("/api/events", headers={"Host": "evil.example"})
            assert refused.status_code == 421


async def next_event(lines: AsyncIterator[str], kind: str | None = None) -> tuple[str, Any]:
    """The next server-sent event (of ``kind``, when given): its name and its data."""
    while True:
        name = data = None
        async for line in lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and name is not None:
                break
        assert name is not None, "the stream ended"
        if kind is None or name == kind:
            return name, data


async def test_a_dashboard_on_a_taken_port_fails_to_build(tmp_path: Path) -> None:
    first = await builder(tmp_path).web_port(0).build()
    try:
        assert first.web_url is not None
        port = int(first.web_url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(OSError):
            DashboardServer(lambda: client_of(first), port=port)
    finally:
        await first.close()
