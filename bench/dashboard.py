"""Does the dashboard keep up with a fast drain, and what does it cost the drain?

``python bench/dashboard.py [--tasks 20000] [--rounds 3]``

Each round drains ``--tasks`` queued no-op tasks through an embedded scheduler (``bench.app``,
concurrency 4, on ipc sockets) three times: with nobody watching; with a bare subscriber process
(it reads every event and does nothing else: any second subscriber changes this drain's pace on
its own); and watched: the dashboard (``taskmill web``, its own process, as the Procfile runs
it; with ``--embedded``, the scheduler's own process, ``SchedulerBuilder.web_port``) with one
page's event stream open (a reader process standing in for the browser: it reads every
server-sent event). The three runs alternate, so drift of the machine falls on all. It prints
each drain's rate, the ratios watched/unwatched and watched/bare subscriber (medians of the
rounds), and whether the page kept up: the completions its batches counted against the tasks,
and how long after the drain ended the page had seen the last of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app import builder
from bench.common import REPO, EventPump
from taskmill import Scheduler, TaskSubmission

SETTLE_S = 3.0

SUBSCRIBER = r"""
import sys
from taskmill import DeploymentConfig
from taskmill.subscription import EventSubscriber
run_dir, expected = sys.argv[1], int(sys.argv[2])
with EventSubscriber(DeploymentConfig(run_dir=run_dir).topology().events) as events:
    print("ready", flush=True)
    completed = 0
    while completed < expected:
        event = events.recv(1.0)
        completed += event is not None and event.type == "completed"
"""

READER = r"""
import json, sys, time
import httpx2 as httpx
url, expected = sys.argv[1], int(sys.argv[2])
completed = batches = missed = 0
with httpx.Client(timeout=None) as http, http.stream("GET", url + "api/events") as stream:
    name = None
    for line in stream.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
            if name == "state" and batches == 0:
                print("ready", flush=True)
            if name == "events":
                batches += 1
                completed += data["counts"].get("completed", 0)
                missed = data["missed"]
                if completed >= expected:
                    break
print(json.dumps({"done_at": time.time(), "completed": completed, "batches": batches,
                  "missed": missed}), flush=True)
"""


def _start_dashboard(run_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    web = subprocess.Popen(
        [sys.executable, "-m", "taskmill", "web", "--run-dir", str(run_dir), "--web-port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert web.stdout is not None
    line = web.stdout.readline()  # "taskmill web: serving http://127.0.0.1:PORT/"
    if "serving" not in line:
        web.kill()
        raise RuntimeError(f"taskmill web did not start: {line!r}")
    return web, line.split("serving ", 1)[1].strip()


async def _ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    ready = await asyncio.to_thread(process.stdout.readline)
    assert ready.strip() == "ready", ready


async def drain(tasks: int, watched: bool, embedded: bool, bare: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="tm-dash-") as work_dir:
        work = Path(work_dir)
        app = builder(4).store_path(work / "bench.db").run_dir(work / "run")
        if watched and embedded:
            app.web_port(0)
        scheduler = await app.build()
        web = reader = None
        try:
            subs = [TaskSubmission("noop", key=f"d-{i}") for i in range(tasks)]
            for at in range(0, tasks, 1000):
                await scheduler.submit_batch(subs[at : at + 1000])
            pump = EventPump(await scheduler.subscribe())
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            if bare:
                reader = subprocess.Popen(
                    [sys.executable, "-c", SUBSCRIBER, str(work / "run"), str(tasks)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                await _ready(reader)
            if watched:
                if embedded:
                    assert scheduler.web_url is not None
                    url = scheduler.web_url
                else:
                    web, url = _start_dashboard(work / "run", env)
                reader = subprocess.Popen(
                    [sys.executable, "-c", READER, url, str(tasks)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                await _ready(reader)
            # The Store settles after taking the queue (its WAL checkpoint), and the dashboard's
            # start takes about as long: both drains start from a quiet Store.
            await asyncio.sleep(SETTLE_S)
            start = time.perf_counter()
            await scheduler.__aenter__()
            await pump.wait(lambda p: p.counts["completed"] >= tasks, 600.0)
            end = time.perf_counter()
            ended_at = time.time()
            result = {"per_s": tasks / (end - start), "missed_by_bench": float(pump.missed)}
            await pump.close()
            if watched:
                assert reader is not None and reader.stdout is not None
                seen = json.loads(await asyncio.to_thread(reader.stdout.readline))
                result.update(
                    page_completed=float(seen["completed"]),
                    page_batches=float(seen["batches"]),
                    page_missed=float(seen["missed"]),
                    page_lag_s=max(0.0, seen["done_at"] - ended_at),
                )
            return result
        finally:
            for process in (reader, web):
                if process is not None:
                    process.terminate()
                    process.wait(10)
            await Scheduler.close(scheduler)


async def main(tasks: int, rounds: int, embedded: bool) -> None:
    ratios: list[float] = []
    bare_ratios: list[float] = []
    where = "served by the scheduler's process" if embedded else "served by `taskmill web`"
    print(f"the dashboard {where}; {tasks:,} no-op tasks a drain")
    for n in range(rounds):
        plain = await drain(tasks, watched=False, embedded=embedded, bare=False)
        bare = await drain(tasks, watched=False, embedded=embedded, bare=True)
        seen = await drain(tasks, watched=True, embedded=embedded, bare=False)
        ratio = seen["per_s"] / plain["per_s"]
        ratios.append(ratio)
        bare_ratios.append(seen["per_s"] / bare["per_s"])
        print(
            f"round {n + 1}: unwatched {plain['per_s']:,.0f} tasks/s, with a bare subscriber "
            f"{bare['per_s']:,.0f}, watched {seen['per_s']:,.0f} (ratio {ratio:.3f}, "
            f"{bare_ratios[-1]:.3f} to the bare subscriber); the page counted "
            f"{seen['page_completed']:,.0f}/{tasks:,} completions in {seen['page_batches']:.0f} "
            f"batches, {seen['page_missed']:.0f} events missed, the last "
            f"{seen['page_lag_s'] * 1000:.0f} ms after the drain ended",
            flush=True,
        )
    print(f"watched/unwatched drain rate, median of {rounds}: {statistics.median(ratios):.3f}")
    print(
        f"watched/bare-subscriber drain rate, median of {rounds}: "
        f"{statistics.median(bare_ratios):.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="serve the dashboard from the scheduler's process (SchedulerBuilder.web_port)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.tasks, args.rounds, args.embedded))
