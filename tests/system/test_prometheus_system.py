"""A real Prometheus server scrapes an embedded scheduler; the series are checked through
Prometheus's own HTTP query API."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill import TaskContext, TaskError, TaskSubmission
from tests.scheduler_support import EventRecorder, builder
from tests.system_packages import ensure_binary

pytestmark = pytest.mark.system


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
