"""taskmill: an adaptive priority work scheduler — persistent, resource-aware, observable.

An actor system on ZeroMQ: this package is the user's door (``Scheduler``, ``Client``, the
records and events); the scheduling itself happens in the actors.
"""

from actors.monitor.pressure import (
    CompositePressure,
    NetworkPressure,
    PressureSource,
    ResourceReader,
    ThrottlePolicy,
)
from actors.monitor.sampler import ResourceSampler, ResourceSnapshot, platform_sampler
from bus.cancel import CancellationToken
from bus.errors import (
    ActorUnavailable,
    CyclicDependencyError,
    DatabaseError,
    DependencyFailedError,
    InvalidDependencyError,
    PayloadTooLarge,
    SerializationError,
    StoreError,
    TaskmillError,
)
from taskmill.builder import SchedulerBuilder
from taskmill.client import AsyncClient
from taskmill.config import (
    GroupLimits,
    RetentionPolicy,
    SamplerConfig,
    SchedulerConfig,
    ShutdownMode,
    StoreConfig,
)
from taskmill.context import TaskContext, TaskExecutor
from taskmill.deploy import ConfigError, DeploymentConfig, load_app
from taskmill.events import (
    Cancelled,
    Completed,
    DeadLettered,
    DependencyFailed,
    Dispatched,
    Expired,
    Failed,
    GroupPaused,
    GroupResumed,
    GroupWeightChanged,
    HostResources,
    Paused,
    Preempted,
    Progress,
    RecurringCompleted,
    Resources,
    Resumed,
    SchedulerEvent,
    Superseded,
    Unblocked,
    UnknownEvent,
    Waiting,
)
from taskmill.flow import (
    AgingConfig,
    GroupAllocationInfo,
    PausedGroupInfo,
    RateLimit,
    RateLimitInfo,
)
from taskmill.monitoring import PressurePublisher, publish_pressure
from taskmill.priority import Priority
from taskmill.progress import ProgressReporter
from taskmill.records import (
    EstimatedProgress,
    HistoryStatus,
    HostSummary,
    OutcomeKind,
    ParentResolution,
    QueueDepth,
    RecurringScheduleInfo,
    SubmitOutcome,
    TaskHistoryRecord,
    TaskLookup,
    TaskMetrics,
    TaskRecord,
    TaskStatus,
    TypeStats,
)
from taskmill.retry import RetryPolicy, TaskError
from taskmill.scheduler import Scheduler
from taskmill.schedules import CronSchedule, RecurringSchedule
from taskmill.snapshot import SchedulerSnapshot
from taskmill.store import TaskStore
from taskmill.subscription import EventSubscriber, EventSubscription
from taskmill.sync_client import Client
from taskmill.task import (
    DependencyFailure,
    DuplicateStrategy,
    TaskSubmission,
    TtlFrom,
    generate_dedup_key,
)
from taskmill.typed import TypedTask

__all__ = [
    "ActorUnavailable",
    "AgingConfig",
    "AsyncClient",
    "CancellationToken",
    "Cancelled",
    "Client",
    "Completed",
    "CompositePressure",
    "ConfigError",
    "CronSchedule",
    "CyclicDependencyError",
    "DatabaseError",
    "DeadLettered",
    "DependencyFailed",
    "DependencyFailedError",
    "DependencyFailure",
    "DeploymentConfig",
    "Dispatched",
    "DuplicateStrategy",
    "EstimatedProgress",
    "EventSubscriber",
    "EventSubscription",
    "Expired",
    "Failed",
    "GroupAllocationInfo",
    "GroupLimits",
    "GroupPaused",
    "GroupResumed",
    "GroupWeightChanged",
    "HistoryStatus",
    "HostResources",
    "HostSummary",
    "InvalidDependencyError",
    "NetworkPressure",
    "OutcomeKind",
    "ParentResolution",
    "Paused",
    "PausedGroupInfo",
    "PayloadTooLarge",
    "Preempted",
    "PressurePublisher",
    "PressureSource",
    "Priority",
    "Progress",
    "ProgressReporter",
    "QueueDepth",
    "RateLimit",
    "RateLimitInfo",
    "RecurringCompleted",
    "RecurringSchedule",
    "RecurringScheduleInfo",
    "ResourceReader",
    "ResourceSampler",
    "ResourceSnapshot",
    "Resources",
    "Resumed",
    "RetentionPolicy",
    "RetryPolicy",
    "SamplerConfig",
    "Scheduler",
    "SchedulerBuilder",
    "SchedulerConfig",
    "SchedulerEvent",
    "SchedulerSnapshot",
    "SerializationError",
    "ShutdownMode",
    "StoreConfig",
    "StoreError",
    "SubmitOutcome",
    "Superseded",
    "TaskContext",
    "TaskError",
    "TaskExecutor",
    "TaskHistoryRecord",
    "TaskLookup",
    "TaskMetrics",
    "TaskRecord",
    "TaskStatus",
    "TaskStore",
    "TaskSubmission",
    "TaskmillError",
    "ThrottlePolicy",
    "TtlFrom",
    "TypeStats",
    "TypedTask",
    "Unblocked",
    "UnknownEvent",
    "Waiting",
    "generate_dedup_key",
    "load_app",
    "platform_sampler",
    "publish_pressure",
]
