"""What ``taskmill watch`` and ``taskmill status`` print.

``WatchView`` writes a line per lifecycle event and, on a terminal, keeps a block of progress
bars for the running tasks under them (redrawn in place, at most ten times a second). Off a
terminal it writes the lines only, without colour. ``format_snapshot`` renders a
``SchedulerSnapshot``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from taskmill.events import (
    Cancelled,
    Completed,
    DeadLettered,
    DependencyFailed,
    Dispatched,
    Failed,
    HostResources,
    Paused,
    Preempted,
    Progress,
    RecurringCompleted,
    Resources,
    Resumed,
    SchedulerEvent,
    TaskEvent,
    Waiting,
)
from taskmill.snapshot import SchedulerSnapshot

__all__ = ["WatchView", "bar", "format_snapshot", "transfer"]

_ANSI = re.compile(r"\033\[[0-9;]*[A-Za-z]")
BAR_WIDTH = 24
MAX_BARS = 20
REDRAW_S = 0.1

_MARKS: dict[type[SchedulerEvent], str] = {
    Dispatched: "\033[36m▶\033[0m",
    Completed: "\033[32m✔\033[0m",
    Failed: "\033[31m✘\033[0m",
    DeadLettered: "\033[31m✘\033[0m",
    Preempted: "\033[35m⏸\033[0m",
    Cancelled: "\033[33m■\033[0m",
    Waiting: "\033[34m…\033[0m",
    Paused: "\033[35m⏸\033[0m",
    Resumed: "\033[36m▶\033[0m",
}


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    """``████░░░░  50.0%`` for ``percent`` in 0..1."""
    filled = max(0, min(width, int(percent * width)))
    return "█" * filled + "░" * (width - filled) + f" {percent * 100:5.1f}%"


class ByteReport(Protocol):
    """The byte fields a ``Progress`` event and an ``EstimatedProgress`` share."""

    @property
    def bytes_done(self) -> int | None: ...
    @property
    def bytes_total(self) -> int | None: ...
    @property
    def throughput_bps(self) -> float | None: ...
    @property
    def eta_s(self) -> float | None: ...


def transfer(report: ByteReport) -> str:
    """``3.1/8.0 MB  2.4 MB/s  ETA 2s`` for a task that reported bytes ("" for one that did not):
    what a bar leaves out."""
    done, total = report.bytes_done, report.bytes_total
    if done is None:
        return ""
    text = f"{done / 1e6:.1f}" + ("" if total is None else f"/{total / 1e6:.1f}") + " MB"
    if report.throughput_bps:
        text += f"  {report.throughput_bps / 1e6:.1f} MB/s"
    if report.eta_s is not None:
        text += f"  ETA {report.eta_s:.0f}s"
    return text


def _describe(event: SchedulerEvent) -> str:
    if isinstance(event, TaskEvent):
        text = f"{event.type:<10} #{event.task_id} {event.task_type}  {event.label}"
        if isinstance(event, Failed):
            if event.will_retry:
                later = "" if event.retry_after is None else f" in {event.retry_after:g}s"
                text += f": {event.error} (will retry{later})"
            else:
                text += f": {event.error}"
        elif isinstance(event, DeadLettered):
            text += f": {event.error} (after {event.retry_count} retries)"
        elif isinstance(event, Waiting):
            text += f" ({event.children_count} children)"
        elif isinstance(event, DependencyFailed):
            text += f": dependency #{event.failed_dependency} failed"
        elif isinstance(event, RecurringCompleted):
            following = "none" if event.next_run is None else event.next_run.isoformat()
            text += f" (run {event.execution_count}, next {following})"
        return text
    return event.type


@dataclass
class WatchView:
    """Renders a stream of events to ``out``; ``tty`` enables colour and the bars."""

    out: TextIO
    tty: bool
    bars: dict[int, tuple[str, str, float, str]] = field(default_factory=dict)
    """Running tasks: type, label, fraction done and, for byte reports, the transfer."""
    resources: str = ""
    drawn_lines: int = 0
    last_draw: float = 0.0
    dirty: bool = False

    def apply(self, event: SchedulerEvent) -> None:
        """Take one event into account: a line for lifecycle events, the bars for the rest."""
        if isinstance(event, Resources):  # a sample every interval: the header, not a line
            self.resources = f"cpu {event.cpu:.0%}  pressure {event.pressure:.2f}"
            self.dirty = True
            return
        if isinstance(event, HostResources):  # every heartbeat of every sampling host
            return
        if isinstance(event, Progress):
            moved = transfer(event)
            self.bars[event.task_id] = (event.task_type, event.label, event.percent, moved)
            self.dirty = True
            return
        if isinstance(event, Dispatched):
            self.bars[event.task_id] = (event.task_type, event.label, 0.0, "")
        elif isinstance(event, TaskEvent):
            self.bars.pop(event.task_id, None)
        stamp = time.strftime("%H:%M:%S")
        mark = _MARKS.get(type(event), "·")
        self._line(f"{stamp} {mark} {_describe(event)}")

    def _line(self, line: str) -> None:
        if not self.tty:
            self.out.write(_ANSI.sub("", line) + "\n")
            self.out.flush()
            return
        self._erase()
        self.out.write(line + "\033[K\n")
        self.dirty = True

    def _erase(self) -> None:
        if self.drawn_lines:
            self.out.write(f"\033[{self.drawn_lines}F\033[J")
            self.drawn_lines = 0

    def draw(self, force: bool = False) -> None:
        """Redraw the bars (on a terminal, when something changed, at most every 0.1 s)."""
        if not self.tty or not (self.dirty or force):
            return
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_S and self.drawn_lines:
            return
        self.last_draw = now
        self.dirty = False
        self._erase()
        rows = sorted(self.bars.items())
        lines = [
            f"  {kind:<14.14} {label:<24.24} {bar(pct)}  {moved}".rstrip()
            for _, (kind, label, pct, moved) in rows[:MAX_BARS]
        ]
        if len(rows) > MAX_BARS:
            lines.append(f"  ... and {len(rows) - MAX_BARS} more running")
        lines.insert(0, f"\033[1mrunning {len(rows)}\033[0m  {self.resources}")
        self.out.write("".join(line + "\033[K\n" for line in lines))
        self.out.flush()
        self.drawn_lines = len(lines)


def _resources(readings: dict[str, float]) -> str:
    mb = 1e6
    return (
        f"cpu {readings.get('cpu', 0.0):.0%}   "
        f"disk read {readings.get('disk_read_bps', 0.0) / mb:.1f} MB/s, "
        f"write {readings.get('disk_write_bps', 0.0) / mb:.1f} MB/s   "
        f"net rx {readings.get('net_rx_bps', 0.0) / mb:.1f} MB/s, "
        f"tx {readings.get('net_tx_bps', 0.0) / mb:.1f} MB/s"
    )


def format_snapshot(snapshot: SchedulerSnapshot, colour: bool = False) -> str:
    """The snapshot as a few lines of text (``colour``: ANSI bold headings)."""
    state = "paused" if snapshot.is_paused else "dispatching"
    lines = [
        f"\033[1mtaskmill\033[0m  {state}, max concurrency {snapshot.max_concurrency}",
        f"  running {len(snapshot.running)}   pending {snapshot.pending_count}   "
        f"paused {snapshot.paused_count}   waiting {snapshot.waiting_count}   "
        f"scheduled {snapshot.scheduled_count}   blocked {snapshot.blocked_count}",
    ]
    pressure = f"  pressure {snapshot.pressure:.2f}"
    if snapshot.pressure_breakdown:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in snapshot.pressure_breakdown)
        pressure += f"   ({parts})"
    lines.append(pressure)
    if snapshot.resources:
        lines.append("  " + _resources(snapshot.resources))
    for host, readings in sorted(snapshot.host_resources.items()):
        lines.append(f"  host {host}: " + _resources(readings))
    progress = {p.task_id: p for p in snapshot.progress}
    for task in sorted(snapshot.running, key=lambda t: t.id):
        p = progress.get(task.id)
        percent = 0.0 if p is None else p.percent
        moved = "" if p is None else transfer(p)
        line = f"  #{task.id:<6} {task.task_type:<14.14} {task.label:<24.24} {bar(percent)}"
        lines.append(f"{line}  {moved}".rstrip())
    text = "".join(line + "\n" for line in lines)
    return text if colour else _ANSI.sub("", text)
