"""Records: wire conversion, UTC datetimes, lookups, outcomes, statistics, snapshots."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bus.kinds import CountsReply, HistoryRow, LookupReply, Outcome, TaskRow, TypeStatsReply
from bus.kinds_run import DispatcherState
from taskmill.flow import AgingConfig, GroupAllocationInfo
from taskmill.priority import Priority
from taskmill.records import (
    EstimatedProgress,
    HistoryStatus,
    HostSummary,
    OutcomeKind,
    ParentResolution,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskMetrics,
    TaskRecord,
    TaskStatus,
    TypeStats,
    datetime_to_ms,
    ms_to_datetime,
)
from taskmill.snapshot import SchedulerSnapshot

KEY = "a" * 64
T0_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def task_row(**over: object) -> TaskRow:
    fields: dict[str, object] = dict(
        id=7, task_type="thumb", key=KEY, label="lbl", priority=64, status="running",
        payload=b"\x01\x02", expected_read_bytes=1, expected_write_bytes=2,
        expected_net_rx_bytes=3, expected_net_tx_bytes=4, retry_count=2, last_error="boom",
        created_at_ms=T0_MS, started_at_ms=T0_MS + 1_500, requeue=True, requeue_priority=0,
        parent_id=3, fail_fast=False, group_key="g", phase="execute", due_at_ms=T0_MS + 60_000,
    )  # fmt: skip
    fields.update(over)
    return TaskRow(**fields)  # type: ignore[arg-type]


def history_row(**over: object) -> HistoryRow:
    fields: dict[str, object] = dict(
        id=11, task_id=7, task_type="thumb", key=KEY, label="lbl", priority=192,
        status="failed", payload=None, expected_read_bytes=1, expected_write_bytes=2,
        expected_net_rx_bytes=3, expected_net_tx_bytes=4, actual_read_bytes=10,
        actual_write_bytes=20, actual_net_rx_bytes=30, actual_net_tx_bytes=40, retry_count=3,
        last_error="bad", created_at_ms=T0_MS, started_at_ms=None,
        completed_at_ms=T0_MS + 2_000, duration_ms=250, parent_id=None, fail_fast=True,
        group_key=None,
    )  # fmt: skip
    fields.update(over)
    return HistoryRow(**fields)  # type: ignore[arg-type]


def test_task_record_has_exactly_the_pinned_fields() -> None:
    assert [f.name for f in dataclasses.fields(TaskRecord)] == [
        "id", "task_type", "key", "label", "priority", "status", "payload",
        "expected_read_bytes", "expected_write_bytes", "expected_net_rx_bytes",
        "expected_net_tx_bytes", "retry_count", "last_error", "created_at", "started_at",
        "requeue", "requeue_priority", "parent_id", "fail_fast", "group_key", "tags", "run_after",
    ]  # fmt: skip


def test_history_record_has_task_fields_plus_actuals() -> None:
    names = {f.name for f in dataclasses.fields(TaskHistoryRecord)}
    task_names = {f.name for f in dataclasses.fields(TaskRecord)}
    assert names - task_names == {
        "task_id", "actual_read_bytes", "actual_write_bytes", "actual_net_rx_bytes",
        "actual_net_tx_bytes", "completed_at", "duration_ms", "result",
    }  # fmt: skip
    assert task_names - {"run_after"} <= names  # a finished run has no due time


def test_task_record_from_row_converts_every_field() -> None:
    rec = TaskRecord.from_row(task_row())
    assert rec == TaskRecord(
        id=7, task_type="thumb", key=KEY, label="lbl", priority=Priority.HIGH,
        status=TaskStatus.RUNNING, payload=b"\x01\x02", expected_read_bytes=1,
        expected_write_bytes=2, expected_net_rx_bytes=3, expected_net_tx_bytes=4, retry_count=2,
        last_error="boom", created_at=datetime(2023, 11, 14, 22, 13, 20, 123_000, tzinfo=UTC),
        started_at=datetime(2023, 11, 14, 22, 13, 21, 623_000, tzinfo=UTC), requeue=True,
        requeue_priority=Priority.REALTIME, parent_id=3, fail_fast=False, group_key="g",
        run_after=datetime(2023, 11, 14, 22, 14, 20, 123_000, tzinfo=UTC),
    )  # fmt: skip
    assert type(rec.priority) is Priority and type(rec.requeue_priority) is Priority
    assert rec.status == "running" and isinstance(rec.status, TaskStatus)


def test_record_times_are_aware_utc() -> None:
    rec = TaskRecord.from_row(task_row())
    assert rec.created_at.tzinfo is not None
    assert rec.created_at.utcoffset() == timedelta(0)
    assert datetime_to_ms(rec.created_at) == T0_MS


def test_optional_fields_stay_none() -> None:
    rec = TaskRecord.from_row(task_row(started_at_ms=None, requeue_priority=None, payload=None))
    assert rec.started_at is None and rec.requeue_priority is None and rec.payload is None


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError):
        TaskRecord.from_row(task_row(status="exploded"))


def test_history_record_from_row() -> None:
    rec = TaskHistoryRecord.from_row(history_row())
    assert (rec.id, rec.task_id) == (11, 7)
    assert rec.status is HistoryStatus.FAILED
    assert rec.status == "failed"  # type: ignore[comparison-overlap]
    assert rec.priority == Priority.BACKGROUND and type(rec.priority) is Priority
    assert rec.completed_at == ms_to_datetime(T0_MS) + timedelta(seconds=2)
    assert rec.started_at is None and rec.duration_ms == 250
    assert rec.last_error == "bad" and rec.retry_count == 3
    assert rec.metrics == TaskMetrics(10, 20, 30, 40)
    assert rec.requeue is False and rec.requeue_priority is None


def test_status_enums_compare_equal_to_their_values() -> None:
    assert [s.value for s in TaskStatus] == ["pending", "running", "paused", "waiting", "blocked"]
    assert [s.value for s in HistoryStatus] == [
        "completed",
        "failed",
        "cancelled",
        "dead_letter",
        "expired",
        "superseded",
        "dependency_failed",
    ]
    assert TaskStatus.PAUSED == "paused"  # type: ignore[comparison-overlap]
    assert HistoryStatus("cancelled") is HistoryStatus.CANCELLED


def test_records_are_frozen() -> None:
    rec = TaskRecord.from_row(task_row())
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.label = "x"  # type: ignore[misc]


def test_ms_datetime_conversions_are_exact() -> None:
    for ms in (0, 1, 999, T0_MS, 4_102_444_800_001):
        assert datetime_to_ms(ms_to_datetime(ms)) == ms
    plus_two = datetime(2023, 11, 15, 0, 13, 20, 123_000, tzinfo=timezone(timedelta(hours=2)))
    assert datetime_to_ms(plus_two) == T0_MS
    with pytest.raises(ValueError):
        datetime_to_ms(datetime(2023, 1, 1))


def test_task_lookup_from_reply() -> None:
    active = TaskLookup.from_reply(LookupReply("active", task=task_row()))
    assert active.location == "active" and isinstance(active.record, TaskRecord)
    assert active.record.id == 7 and active.found
    history = TaskLookup.from_reply(LookupReply("history", history=history_row()))
    assert history.location == "history" and isinstance(history.record, TaskHistoryRecord)
    missing = TaskLookup.from_reply(LookupReply("not_found"))
    assert missing.location == "not_found" and missing.record is None and not missing.found
    with pytest.raises(ValueError):
        TaskLookup.from_reply(LookupReply("active"))


@pytest.mark.parametrize(
    ("kind", "wire_id", "expected_id", "check"),
    [
        ("inserted", 5, 5, SubmitOutcome.is_inserted),
        ("upgraded", 6, 6, SubmitOutcome.is_upgraded),
        ("requeued", 7, 7, SubmitOutcome.is_requeued),
        ("duplicate", None, None, SubmitOutcome.is_duplicate),
        ("duplicate", 8, None, SubmitOutcome.is_duplicate),  # a duplicate never carries an id
    ],
)
def test_submit_outcome_from_wire(
    kind: str, wire_id: int | None, expected_id: int | None, check: object
) -> None:
    outcome = SubmitOutcome.from_wire(Outcome(kind, wire_id))
    assert outcome.kind == kind and isinstance(outcome.kind, OutcomeKind)
    assert outcome.id == expected_id
    assert check(outcome)  # type: ignore[operator]
    predicates = [
        outcome.is_inserted(), outcome.is_upgraded(), outcome.is_requeued(),
        outcome.is_duplicate(),
    ]  # fmt: skip
    assert predicates.count(True) == 1


def test_submit_outcome_needs_id_exactly_when_not_duplicate() -> None:
    with pytest.raises(ValueError):
        SubmitOutcome(OutcomeKind.INSERTED, None)
    with pytest.raises(ValueError):
        SubmitOutcome.from_wire(Outcome("bogus", 1))
    assert SubmitOutcome("inserted", 1).kind is OutcomeKind.INSERTED  # type: ignore[arg-type]


def test_type_stats_from_reply() -> None:
    stats = TypeStats.from_reply(TypeStatsReply(4, 1500.0, 10.5, 0, 0.25))
    assert stats == TypeStats(4, 1500.0, 10.5, 0.0, 0.25)
    assert isinstance(stats.avg_write_bytes, float)


def test_parent_resolution_values() -> None:
    assert {r.value for r in ParentResolution} == {"waiting", "finalize", "failed"}


def test_snapshot_to_dict_is_json_serialisable() -> None:
    snapshot = SchedulerSnapshot(
        running=[TaskRecord.from_row(task_row())],
        pending_count=3,
        paused_count=1,
        waiting_count=2,
        progress=[EstimatedProgress(7, "thumb", KEY, "lbl", 0.5, None, 0.5)],
        pressure=0.4,
        pressure_breakdown=[("api", 0.4), ("network", 0.1)],
        max_concurrency=4,
        is_paused=False,
        hosts=[HostSummary("w1", ["thumb"], 8, 1)],
        group_allocations=[GroupAllocationInfo("t", 2.0, 0, 1, 5, None, 4)],
        aging_config=AgingConfig(grace_period=300.0, interval=60.0),
    )
    data = json.loads(json.dumps(snapshot.to_dict()))
    assert data["pending_count"] == 3 and data["max_concurrency"] == 4
    assert data["pressure_breakdown"] == [["api", 0.4], ["network", 0.1]]
    running = data["running"][0]
    assert running["priority"] == 64 and running["status"] == "running"
    assert running["payload"] == "AQI="  # base64 of b"\x01\x02"
    assert datetime.fromisoformat(running["created_at"]) == ms_to_datetime(T0_MS)
    assert data["progress"][0] == {
        "task_id": 7, "task_type": "thumb", "key": KEY, "label": "lbl",
        "reported_percent": 0.5, "extrapolated_percent": None, "percent": 0.5,
        "bytes_done": None, "bytes_total": None, "throughput_bps": None, "eta_s": None,
    }  # fmt: skip
    assert set(data) == {
        "running", "pending_count", "paused_count", "waiting_count", "scheduled_count",
        "blocked_count",
        "progress", "pressure", "pressure_breakdown", "max_concurrency", "is_paused",
        "resources", "host_resources", "hosts", "rate_limits", "paused_groups",
        "group_allocations", "aging_config",
    }  # fmt: skip
    assert data["group_allocations"] == [{
        "group": "t", "weight": 2.0, "allocated_slots": 0, "running": 1, "pending": 5,
        "min_slots": None, "cap": 4,
    }]  # fmt: skip
    assert data["aging_config"] == {
        "grace_period": 300.0, "interval": 60.0, "max_effective_priority": 64,
        "urgent_threshold": None,
    }  # fmt: skip
    assert data["hosts"] == [
        {"host_id": "w1", "task_types": ["thumb"], "capacity": 8, "running": 1}
    ]


def test_history_record_to_dict_is_json_serialisable() -> None:
    data = json.loads(json.dumps(TaskHistoryRecord.from_row(history_row()).to_dict()))
    assert data["status"] == "failed" and data["payload"] is None and data["started_at"] is None


def test_a_task_not_due_yet_shows_as_pending() -> None:
    record = TaskRecord.from_row(task_row(status="scheduled", due_at_ms=T0_MS + 60_000))
    assert record.status is TaskStatus.PENDING


def test_a_history_record_carries_the_result() -> None:
    record = TaskHistoryRecord.from_row(history_row(status="completed", result=b'{"n":1}'))
    assert record.result == b'{"n":1}'
    assert record.result_json() == {"n": 1}
    assert TaskHistoryRecord.from_row(history_row()).result_json() is None
    raw = TaskHistoryRecord.from_row(history_row(result=b"\xff"))
    with pytest.raises(ValueError):
        raw.result_json()
    assert json.loads(json.dumps(record.to_dict()))["result"] == "eyJuIjoxfQ=="


def test_dead_letter_is_a_history_status() -> None:
    record = TaskHistoryRecord.from_row(history_row(status="dead_letter"))
    assert record.status is HistoryStatus.DEAD_LETTER == "dead_letter"


def test_the_snapshot_counts_scheduled_tasks_apart() -> None:
    counts = CountsReply(pending=2, running=1, paused=0, waiting=0, scheduled=5)
    state = DispatcherState(running=[], is_paused=False, max_concurrency=4)
    snapshot = SchedulerSnapshot.from_state(state, counts, [])
    assert (snapshot.pending_count, snapshot.scheduled_count) == (2, 5)
