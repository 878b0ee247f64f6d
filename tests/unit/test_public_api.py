"""The public names users rely on: each exported from ``taskmill`` and importable from it.

A pinned name is never renamed or dropped. ``PINNED`` holds the names and ``MEMBERS`` the
methods and fields of the public classes.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest

import taskmill

PINNED = {
    # priorities and submitting
    "Priority", "TaskSubmission", "SubmitOutcome", "OutcomeKind", "TypedTask",
    "generate_dedup_key",
    # executors
    "TaskExecutor", "TaskContext", "TaskError", "CancellationToken", "ProgressReporter",
    # building and running a scheduler
    "Scheduler", "SchedulerBuilder", "ShutdownMode", "SamplerConfig", "ThrottlePolicy",
    "StoreConfig", "RetentionPolicy", "TaskStore", "SchedulerConfig", "GroupLimits",
    # events
    "SchedulerEvent", "EventSubscription", "EventSubscriber", "Dispatched", "Completed",
    "Failed", "Preempted", "Cancelled", "Progress", "Waiting", "Paused", "Resumed",
    "Expired", "DeadLettered",
    # snapshots, backpressure and resources
    "SchedulerSnapshot", "PressureSource", "CompositePressure", "NetworkPressure",
    "ResourceSampler", "ResourceReader", "ResourceSnapshot", "platform_sampler",
    # records and results
    "TaskRecord", "TaskHistoryRecord", "TaskStatus", "HistoryStatus", "TaskMetrics",
    "TypeStats", "TaskLookup", "EstimatedProgress", "ParentResolution",
    # time and failure
    "TtlFrom", "RetryPolicy",
    "RecurringSchedule", "CronSchedule", "RecurringScheduleInfo", "RecurringCompleted",
    # flow control
    "DuplicateStrategy", "Superseded", "RateLimit", "GroupPaused", "GroupResumed",
    "AgingConfig", "GroupAllocationInfo", "GroupWeightChanged", "UnknownEvent",
    # dependencies
    "DependencyFailure", "InvalidDependencyError", "CyclicDependencyError",
    "DependencyFailedError", "Unblocked", "DependencyFailed",
    # errors
    "TaskmillError", "StoreError", "PayloadTooLarge", "SerializationError", "DatabaseError",
    "ActorUnavailable",
    # other processes
    "Client", "AsyncClient",
}  # fmt: skip

MEMBERS = {
    "Priority": "REALTIME HIGH NORMAL BACKGROUND IDLE",
    "TaskSubmission": "key label priority payload_json payload expected_io expected_net_io "
    "group fail_fast run_after run_at ttl timeout retry max_retries recurring cron "
    "on_duplicate tag tags depends_on depends_on_all on_dependency_failure",
    "SubmitOutcome": "kind id is_inserted is_upgraded is_requeued is_duplicate",
    "TaskContext": "payload state record_read_bytes record_write_bytes record_net_rx_bytes "
    "record_net_tx_bytes spawn_child spawn_children submit submit_typed",
    "CancellationToken": "cancel is_cancelled wait child_token",
    "ProgressReporter": "report report_fraction set_bytes_total add_bytes report_bytes",
    "TaskError": "retryable",
    "Scheduler": "builder run submit submit_batch submit_typed submit_typed_at cancel pause_all "
    "resume_all is_paused set_max_concurrency max_concurrency set_group_limit "
    "remove_group_limit set_default_group_concurrency register_state active_tasks "
    "estimated_progress snapshot task_lookup lookup_typed store subscribe retry_dead_letter "
    "wait_result pause_recurring resume_recurring cancel_recurring pause_group resume_group "
    "set_rate_limit set_group_rate_limit set_group_weight cancel_group cancel_type "
    "cancel_by_tag remove_group_weight reset_group_weights set_group_minimum_slots",
    "SchedulerBuilder": "store_path executor typed_executor max_concurrency max_retries "
    "preempt_priority poll_interval shutdown_mode with_resource_monitoring sampler_config "
    "resource_sampler bandwidth_limit pressure_source throttle_policy "
    "default_group_concurrency group_concurrency app_state store_config build default_ttl "
    "task_timeout expiry_sweep_interval retry_policy default_retry_policy disk_bandwidth "
    "rate_limit group_rate_limit aging group_weight default_group_weight group_minimum_slots",
    "TaskStore": "task_by_id task_by_key pending_tasks pending_count running_tasks "
    "running_count paused_tasks paused_count waiting_count history history_by_type "
    "history_by_key failed_tasks history_stats avg_throughput prune_history_by_count "
    "prune_history_by_age dead_letter_tasks recurring_schedules task_ids_by_tags count_by_tag "
    "tag_values task_dependencies task_dependents blocked_tasks blocked_count",
    "Client": "submit submit_batch cancel lookup snapshot history wait_result "
    "set_group_weight remove_group_weight reset_group_weights set_group_minimum_slots",
    "AsyncClient": "submit submit_batch cancel lookup snapshot history wait_result "
    "set_group_weight remove_group_weight reset_group_weights set_group_minimum_slots",
    "SchedulerSnapshot": "rate_limits paused_groups group_allocations aging_config",
    "GroupAllocationInfo": "group weight allocated_slots running pending min_slots cap",
    "ShutdownMode": "graceful HARD",
    "ThrottlePolicy": "default_three_tier",
    "RetryPolicy": "constant linear exponential exponential_jitter none",
    "TaskHistoryRecord": "result result_json",
}


def _has(cls: type, name: str) -> bool:
    """A method, a class attribute, or a dataclass field (which may have no class default)."""
    if hasattr(cls, name):
        return True
    return dataclasses.is_dataclass(cls) and name in {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_pinned_name_is_exported_and_importable(name: str) -> None:
    assert name in taskmill.__all__
    namespace: dict[str, object] = {}
    exec(f"from taskmill import {name}", namespace)
    assert namespace[name] is getattr(taskmill, name)


def test_every_exported_name_is_importable_once() -> None:
    assert len(taskmill.__all__) == len(set(taskmill.__all__))
    module = importlib.import_module("taskmill")
    missing = [name for name in taskmill.__all__ if not hasattr(module, name)]
    assert not missing


@pytest.mark.parametrize("owner", sorted(MEMBERS))
def test_a_pinned_member_exists(owner: str) -> None:
    cls = getattr(taskmill, owner)
    missing = [name for name in MEMBERS[owner].split() if not _has(cls, name)]
    assert not missing, f"{owner} lacks {missing}"
