"""``AppSpec``: everything a ``SchedulerBuilder`` collected about an application.

Its own module so that what reads a description (the scheduler, the wiring of each actor, the
Procfile processes, the monitor's setup) depends on the description alone, not on the builder
that writes it: the builder imports the scheduler to ``build()`` one, and the scheduler imports
what reads the description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskmill.config import SamplerConfig, ShutdownMode, StoreConfig
from taskmill.context import ExecutorLike
from taskmill.flow import AgingConfig, RateLimit
from taskmill.priority import Priority
from taskmill.retry import RetryPolicy

__all__ = ["AppSpec"]


@dataclass
class AppSpec:
    """Everything a builder collected (read by the scheduler and the CLI)."""

    store_path: str = "taskmill.db"
    executors: dict[str, ExecutorLike] = field(default_factory=dict)
    max_concurrency: int = 4
    max_retries: int = 3
    preempt_priority: int = int(Priority.REALTIME)
    poll_interval: float = 0.5
    shutdown_mode: ShutdownMode = field(default_factory=lambda: ShutdownMode.HARD)
    monitoring: bool = False
    sampler_config: SamplerConfig = field(default_factory=SamplerConfig)
    sampler: Any = None
    bandwidth_limit: float | None = None
    disk_bandwidth: tuple[float, float] | None = None
    pressure_sources: list[Any] = field(default_factory=list)
    throttle_policy: Any = None
    default_group_concurrency: int = 0
    group_concurrency: dict[str, int] = field(default_factory=dict)
    app_state: list[object] = field(default_factory=list)
    store_config: StoreConfig = field(default_factory=StoreConfig)
    metrics_port: int | None = None
    web_port: int | None = None
    web_host: str = "127.0.0.1"
    web_token: str | None = None
    metrics_interval: float = 5.0
    run_dir: str | None = None
    separate_threads: bool = False
    executor_thread: bool = False
    retry_policies: dict[str, RetryPolicy] = field(default_factory=dict)
    default_retry: RetryPolicy | None = None
    task_timeouts: dict[str, float] = field(default_factory=dict)
    task_ttls: dict[str, float] = field(default_factory=dict)
    default_ttl: float | None = None
    expiry_sweep_s: float | None = 30.0
    cancel_hook_timeout_s: float = 30.0
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    """Scope (``type:<task type>``, ``group:<group>``) → its rate limit."""
    group_weights: dict[str, float] = field(default_factory=dict)
    default_group_weight: float | None = None
    group_minimum_slots: dict[str, int] = field(default_factory=dict)
    aging: AgingConfig | None = None
