"""``taskmill demo``: an embedded scheduler on a small photo-library workload, drawn live.

Thumbnails (NORMAL) and uploads (BACKGROUND, some failing and retrying) share four slots; a
REALTIME "open photo" request arrives midway and preempts background work; a summary read from the
history ends the run. Everything is real: the SQLite file, the actors, the ZeroMQ sockets.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bus.errors import TaskError
from taskmill.context import TaskContext
from taskmill.events import (
    Cancelled,
    Completed,
    Dispatched,
    Failed,
    Preempted,
    Progress,
    SchedulerEvent,
)
from taskmill.priority import Priority
from taskmill.scheduler import Scheduler
from taskmill.task import TaskSubmission
from taskmill.watch import transfer

TIERS = {"thumbnail": "NORMAL", "upload": "BACKGROUND", "open-photo": "REALTIME"}
_ANSI = re.compile(r"\033\[[0-9;]*[A-Za-z]")
PHOTOS = [f"IMG_{4100 + i}.jpg" for i in range(14)]


async def _work(
    ctx: TaskContext, seconds: float, steps: int, what: str, total_bytes: int | None = None
) -> None:
    """Simulated work in steps; a cancelled token (preemption, shutdown) interrupts it. With
    ``total_bytes`` each step reports its share of them (bytes, rate and ETA on the bar)."""
    if total_bytes is not None:
        ctx.progress.set_bytes_total(total_bytes)
    for step in range(steps):
        if ctx.token.is_cancelled():
            raise TaskError("interrupted")  # not a failure: the scheduler told it to stop
        await asyncio.sleep(seconds / steps)
        if total_bytes is None:
            ctx.progress.report_fraction(step + 1, steps, what)
        else:
            ctx.progress.report_bytes(total_bytes * (step + 1) // steps)


async def thumbnail(ctx: TaskContext) -> None:
    photo = ctx.payload()
    ctx.record_read_bytes(photo["bytes"])
    await _work(ctx, photo["seconds"], 8, "resizing")
    ctx.record_write_bytes(photo["bytes"] // 20)


async def upload(ctx: TaskContext) -> None:
    photo = ctx.payload()
    await _work(ctx, photo["seconds"], 10, "uploading", total_bytes=photo["bytes"])
    if photo["flaky"] and ctx.record.retry_count < 1:
        raise TaskError.retryable("connection reset by peer")
    ctx.record_net_tx_bytes(photo["bytes"])


async def open_photo(ctx: TaskContext) -> None:
    await _work(ctx, 0.8, 4, "decoding full size")


@dataclass
class View:
    """What the terminal shows: running bars, a log of notable events, counters."""

    out: TextIO
    tty: bool
    bars: dict[int, tuple[str, str, float, str]] = field(default_factory=dict)
    """Running tasks: type, label, fraction done and, for uploads, bytes, rate and ETA."""
    paused: dict[int, tuple[str, str, float, str]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    drawn_lines: int = 0
    started: float = field(default_factory=time.monotonic)

    def note(self, line: str) -> None:
        if not self.tty:
            self.out.write(_ANSI.sub("", line) + "\n")
            return
        self.log.append(line)
        self.log = self.log[-7:]

    def apply(self, event: SchedulerEvent) -> None:
        self.counts[event.type] += 1
        if isinstance(event, Dispatched):
            self.paused.pop(event.task_id, None)
            self.bars[event.task_id] = (event.task_type, event.label, 0.0, "")
        elif isinstance(event, Progress):
            if event.task_id in self.bars:
                kind, label, _, _ = self.bars[event.task_id]
                self.bars[event.task_id] = (kind, label, event.percent, transfer(event))
        elif isinstance(event, Completed):
            self.bars.pop(event.task_id, None)
            self.note(f"  \033[32m✔\033[0m {event.task_type:<10} {event.label}")
        elif isinstance(event, Failed):
            self.bars.pop(event.task_id, None)
            tag = "retrying" if event.will_retry else "failed"
            self.note(
                f"  \033[33m↻\033[0m {event.task_type:<10} {event.label}: {event.error} ({tag})"
            )
        elif isinstance(event, Preempted):
            bar = self.bars.pop(event.task_id, None)
            if bar is not None:
                self.paused[event.task_id] = bar
            self.note(f"  \033[35m⏸\033[0m {event.task_type:<10} {event.label} preempted")
        elif isinstance(event, Cancelled):
            self.bars.pop(event.task_id, None)

    def draw(self, pending: int) -> None:
        if not self.tty:
            return
        width = 28
        lines = [
            f"\033[1mtaskmill demo\033[0m  {time.monotonic() - self.started:5.1f}s   "
            f"running {len(self.bars)}  pending {pending}  "
            f"done {self.counts['completed']}  retries {self.counts['failed']}  "
            f"preempted {self.counts['preempted']}",
        ]
        lines.append(
            "\033[2m  4 slots · thumbnails NORMAL · uploads BACKGROUND · "
            "a REALTIME request arrives midway\033[0m"
        )
        for kind, label, pct, moved in sorted(self.bars.values()):
            filled = int(pct * width)
            bar = "█" * filled + "░" * (width - filled)
            colour = "\033[31m" if kind == "open-photo" else "\033[36m"
            tier = TIERS.get(kind, "")
            name = f"{colour}{kind:<10}\033[0m"
            lines.append(
                f"  {name} {label:<14} {bar} {pct * 100:5.1f}%  \033[2m{tier}\033[0m  {moved}"
            )
        for kind, label, pct, _ in sorted(self.paused.values()):
            filled = int(pct * width)
            bar = "▒" * filled + "░" * (width - filled)
            lines.append(
                f"  \033[2m{kind:<10} {label:<14} {bar} {pct * 100:5.1f}%  preempted: "
                "waits for the urgent task, then a slot\033[0m"
            )
        lines += ["", *self.log]
        up = f"\033[{self.drawn_lines}F" if self.drawn_lines else ""
        self.out.write(up + "".join(line + "\033[K\n" for line in lines) + "\033[J")
        self.out.flush()
        self.drawn_lines = len(lines)


async def run_demo(db: Path | None = None, out: TextIO = sys.stdout, seed: int = 7) -> int:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="taskmill-demo-")) if db is None else None
    path = db or (workdir / "demo.db")  # type: ignore[operator]
    scheduler = await (
        Scheduler.builder()
        .store_path(path)
        .executor("thumbnail", thumbnail)
        .executor("upload", upload)
        .executor("open-photo", open_photo)
        .max_concurrency(4)
        .build()
    )
    view = View(out, out.isatty())
    out.write(f"taskmill demo — database {path}\n\n")
    try:
        async with scheduler, await scheduler.subscribe() as events:
            subs = []
            for name in PHOTOS:
                size = rng.randint(2, 9) * 1_000_000
                subs.append(
                    TaskSubmission("thumbnail", key=name, label=name, priority=Priority.NORMAL)
                    .payload_json({"bytes": size, "seconds": rng.uniform(0.6, 1.6)})
                    .expected_io(size, size // 20)
                )
                subs.append(
                    TaskSubmission("upload", key=name, label=name, priority=Priority.BACKGROUND)
                    .payload_json(
                        {
                            "bytes": size,
                            "seconds": rng.uniform(1.0, 2.2),
                            "flaky": rng.random() < 0.3,
                        }
                    )
                    .expected_net_io(0, size)
                )
            await scheduler.submit_batch(subs)
            total = len(subs) + 1
            finished = 0
            urgent_sent = uploading = False
            loop = asyncio.get_running_loop()
            next_draw = 0.0
            while finished < total:
                try:
                    event = await asyncio.wait_for(events.recv(), 0.1)
                except TimeoutError:
                    event = None
                if event is not None:
                    view.apply(event)
                    uploading = uploading or (
                        isinstance(event, Progress)
                        and event.task_type == "upload"
                        and event.percent >= 0.3
                    )
                    if isinstance(event, Completed) or (
                        isinstance(event, Failed) and not event.will_retry
                    ):
                        finished += 1
                if not urgent_sent and uploading:
                    urgent_sent = True
                    view.note("  \033[31m⚡\033[0m user opened IMG_4107.jpg: REALTIME request")
                    await scheduler.submit(
                        TaskSubmission(
                            "open-photo",
                            key="IMG_4107.jpg",
                            label="IMG_4107.jpg",
                            priority=Priority.REALTIME,
                        )
                    )
                if loop.time() >= next_draw:
                    next_draw = loop.time() + 0.1
                    view.draw(await scheduler.store().pending_count())
            view.draw(0)
            await _summary(scheduler, view, out)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def _summary(scheduler: Scheduler, view: View, out: TextIO) -> None:
    store = scheduler.store()
    history = await store.history(limit=1000)
    title = "\n\033[1mSummary (from the history table)\033[0m\n"
    out.write(title if view.tty else _ANSI.sub("", title))
    for task_type in ("open-photo", "thumbnail", "upload"):
        stats = await store.history_stats(task_type)
        runs = [h for h in history if h.task_type == task_type]
        retried = sum(1 for h in runs if h.retry_count > 0)
        out.write(
            f"  {task_type:<10} {stats.count:3d} runs   mean {stats.avg_duration_ms / 1000:4.2f}s"
            f"   failure rate {stats.failure_rate:4.0%}   retried {retried}\n"
        )
    tx = sum(h.actual_net_tx_bytes for h in history)
    read = sum(h.actual_read_bytes for h in history)
    out.write(
        f"  preempted {view.counts['preempted']} time(s); read {read / 1e6:.0f} MB, "
        f"uploaded {tx / 1e6:.0f} MB\n"
    )


def main(db: str | None = None) -> int:
    return asyncio.run(run_demo(Path(db) if db else None))
