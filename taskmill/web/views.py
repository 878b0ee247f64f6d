"""What the dashboard sends the page: the public records shaped as small JSON documents.

Pure functions of the records (no I/O). Payloads and results are shown as previews, never
whole: a page that lists fifty tasks must not carry fifty megabytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from taskmill.events import (
    DeadLettered,
    Expired,
    Failed,
    SchedulerEvent,
    TaskEvent,
    Waiting,
)
from taskmill.records import (
    QueueDepth,
    TaskHistoryRecord,
    TaskRecord,
)
from taskmill.snapshot import SchedulerSnapshot

__all__ = ["event_view", "history_view", "preview", "state_view", "task_view"]

PREVIEW_CHARS = 2_000
"""How much of a payload or result the task detail shows."""


def preview(data: bytes | None, limit: int = PREVIEW_CHARS) -> dict[str, Any] | None:
    """``{"text", "size", "truncated", "json"}`` of a payload or result: UTF-8 text as text
    (JSON re-indented when it parses), other bytes as hex."""
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
        is_json = True
        try:
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            is_json = False
    except UnicodeDecodeError:
        text, is_json = data[: limit // 2].hex(" "), False
    return {
        "text": text[:limit],
        "size": len(data),
        "truncated": len(text) > limit,
        "json": is_json,
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def task_view(task: TaskRecord) -> dict[str, Any]:
    """An active task without its payload."""
    return {
        "id": task.id,
        "task_type": task.task_type,
        "label": task.label,
        "priority": int(task.priority),
        "status": task.status.value,
        "group": task.group_key,
        "retry_count": task.retry_count,
        "last_error": task.last_error,
        "parent_id": task.parent_id,
        "created_at": _iso(task.created_at),
        "started_at": _iso(task.started_at),
    }


def history_view(row: TaskHistoryRecord) -> dict[str, Any]:
    """A history row without its payload or result."""
    return {
        "history_id": row.id,
        "id": row.task_id,
        "task_type": row.task_type,
        "label": row.label,
        "priority": int(row.priority),
        "status": row.status.value,
        "group": row.group_key,
        "retry_count": row.retry_count,
        "last_error": row.last_error,
        "parent_id": row.parent_id,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "completed_at": _iso(row.completed_at),
        "duration_ms": row.duration_ms,
    }


def state_view(
    snapshot: SchedulerSnapshot, depth: Sequence[QueueDepth], group_controls: bool
) -> dict[str, Any]:
    """The page's picture of the scheduler: what runs, what waits, pressure, hosts."""
    progress = {p.task_id: p for p in snapshot.progress}
    running = []
    for task in sorted(snapshot.running, key=lambda t: t.id):
        view = task_view(task)
        estimate = progress.get(task.id)
        view["percent"] = 0.0 if estimate is None else estimate.percent
        view["reported"] = estimate is not None and estimate.reported_percent is not None
        running.append(view)
    paused_groups = getattr(snapshot, "paused_groups", None)  # once group pause exists
    return {
        "paused": snapshot.is_paused,
        "max_concurrency": snapshot.max_concurrency,
        "counts": {
            "running": len(snapshot.running),
            "pending": snapshot.pending_count,
            "scheduled": snapshot.scheduled_count,
            "paused": snapshot.paused_count,
            "waiting": snapshot.waiting_count,
        },
        "running": running,
        "depth": [{"priority": int(d.priority), "group": d.group, "count": d.count} for d in depth],
        "pressure": snapshot.pressure,
        "breakdown": [[name, value] for name, value in snapshot.pressure_breakdown],
        "resources": snapshot.resources,
        "hosts": [
            {**h.to_dict(), "readings": snapshot.host_resources.get(h.host_id)}
            for h in snapshot.hosts
        ],
        "paused_groups": None if paused_groups is None else sorted(map(str, paused_groups)),
        "controls": {"groups": group_controls},
    }


def event_view(event: SchedulerEvent) -> dict[str, Any]:
    """A lifecycle event as one line of the page's log."""
    view: dict[str, Any] = {"type": event.type, "at": _iso(event.at)}
    if isinstance(event, TaskEvent):
        view.update(id=event.task_id, task_type=event.task_type, label=event.label)
    if isinstance(event, Failed | DeadLettered):
        view["error"] = event.error
    if isinstance(event, Failed):
        view["will_retry"] = event.will_retry
    if isinstance(event, Waiting):
        view["children"] = event.children_count
    if isinstance(event, Expired):
        view["age"] = event.age
    return view
