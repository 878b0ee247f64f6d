"""A real Prometheus server scrapes an embedded scheduler; the series are checked through
Prometheus's own HTTP query API."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, TaskError, TaskSubmission
from tests.procfile_support import free_port
from tests.scheduler_support import EventRecorder, builder
from tests.system_packages import ensure_binary

pytestmark = pytest.mark.system


def poll_until(check: Callable[[], Any], timeout: float, every: float = 0.25) -> Any:
    """Ask ``check`` until it returns something truthy: Prometheus scrapes on its own clock and
    pushes nothing, so the test polls its API (bounded)."""
    pause = threading.Event()
    deadline = timeout / every
    for _ in range(int(deadline) + 1):
        result = check()
        if result:
            return result
        pause.wait(every)
    raise TimeoutError(f"condition not met within {timeout}s")


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    binary = ensure_binary("prometheus", "prometheus")
    target_port, web_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: taskmill\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{web_port}", target_port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.timeout(90)
async def test_prometheus_scrapes_task_and_pressure_series(
    tmp_path: Path, prometheus: tuple[str, int]
) -> None:
    base, port = prometheus

    async def work(ctx: TaskContext) -> None:
        if ctx.payload()["fail"]:
            raise TaskError("no")

    class Load:
        def pressure(self) -> float:
            return 0.25

        def name(self) -> str:
            return "api-load"

    scheduler = await (
        builder(tmp_path, work=work).metrics_port(port).pressure_source(Load()).build()
    )
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch(
            [
                TaskSubmission("work", key=str(i)).payload_json({"fail": i % 4 == 0})
                for i in range(12)
            ]
        )
        await events.wait_for(
            lambda evs: len(events.of("completed")) + len(events.of("failed")) >= 12
        )

        def scraped() -> list[dict[str, Any]]:
            try:  # Prometheus answers 503, or not at all, until it is ready
                return query(base, 'taskmill_tasks_completed_total{task_type="work"}')
            except OSError:
                return []

        [completed] = poll_until(scraped, timeout=60)
        assert float(completed["value"][1]) == 9
        [failed] = query(base, 'taskmill_tasks_failed_total{task_type="work"}')
        assert float(failed["value"][1]) == 3
        [load] = poll_until(
            lambda: query(base, 'taskmill_pressure_source{source="api-load"}'), timeout=30
        )
        assert float(load["value"][1]) == 0.25
        [count] = query(base, 'taskmill_task_duration_seconds_count{task_type="work"}')
        assert float(count["value"][1]) == 9
        await events.close()


MONITORING = Path(__file__).resolve().parents[2] / "monitoring"

QUIET = {
    "sum(rate(taskmill_tasks_preempted_total[1m]))": "no task is preempted here",
}
"""Dashboard queries that may rightly return nothing in the deployment below, and why."""


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana" / "taskmill-dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def alert_queries() -> list[tuple[str, str]]:
    """(alert, expr) of monitoring/alerts.yml, whose exprs are one line or a ``|`` block."""
    out: list[tuple[str, str]] = []
    lines = (MONITORING / "alerts.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- alert:"):
            out.append((line.split(":", 1)[1].strip(), ""))
        elif line.strip().startswith("expr:"):
            expr = line.split(":", 1)[1].strip()
            if expr == "|":
                margin = " " * (len(lines[i + 1]) - len(lines[i + 1].lstrip()))
                block = []
                for text in lines[i + 1 :]:
                    if not text.startswith(margin):
                        break
                    block.append(text.strip())
                expr = "\n".join(block)
            out[-1] = (out[-1][0], expr)
    return out


@pytest.mark.timeout(150)
async def test_every_dashboard_query_returns_data_from_a_running_deployment(
    tmp_path: Path, prometheus: tuple[str, int]
) -> None:
    """A deployment that completes, fails, retries, dead-letters, expires, cancels, schedules
    and holds tasks in a group: every panel's query parses and, against what Prometheus scraped,
    returns series; every alert's query parses."""
    base, port = prometheus
    release = asyncio.Event()

    async def work(ctx: TaskContext) -> None:
        mode = ctx.payload()["mode"]
        if mode == "fail":
            raise TaskError("no")
        if mode == "flaky":
            raise TaskError("flaky", retryable=True)
        if mode == "hold":
            await release.wait()

    class Load:
        def pressure(self) -> float:
            return 0.25

        def name(self) -> str:
            return "api-load"

    scheduler = await (
        builder(tmp_path, work=work)
        .metrics_port(port)
        .metrics_interval(0.2)
        .pressure_source(Load())
        .group_concurrency("g", 1)
        .expiry_sweep_interval(0.2)
        .build()
    )

    def task(key: str, mode: str, **group: str) -> TaskSubmission:
        return TaskSubmission("work", key=key, **group).payload_json({"mode": mode})

    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch(
            [task(f"ok{i}", "ok") for i in range(6)]
            + [task("fail", "fail"), task("flaky", "flaky").max_retries(1)]
            + [task("hold", "hold", group="g")]
            + [task("later", "ok").run_after(3600)]
        )
        await events.wait_for(lambda evs: len(events.of("dispatched")) >= 9)
        await scheduler.submit_batch(
            [task("expires", "ok", group="g").ttl(0.3), task("cancel-me", "ok", group="g")]
        )
        await events.wait_for(lambda evs: bool(events.of("expired") and events.of("dead_lettered")))
        [waiting] = await scheduler.store().pending_tasks()
        assert await scheduler.cancel(waiting.id)

        for _, expr in alert_queries():
            query(base, expr)  # parses and evaluates (raises otherwise)

        missing: dict[str, str] = {}
        for title, expr in panel_queries():
            if expr in QUIET:
                query(base, expr)
                continue

            def answered(expr: str = expr) -> list[dict[str, Any]]:
                try:
                    return query(base, expr)
                except OSError:  # Prometheus not ready yet
                    return []

            try:
                poll_until(answered, timeout=30)
            except TimeoutError:
                missing[expr] = title
        assert missing == {}, "dashboard queries without data"
        release.set()
        await events.close()
