"""``SchedulerBuilder``: the one description of an application.

The embedded mode builds every actor from it; each Procfile process builds only its own actor from
the same object. Nothing here schedules: it only collects settings.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmill.app import AppSpec
from taskmill.config import SamplerConfig, SchedulerConfig, ShutdownMode, StoreConfig
from taskmill.context import ExecutorLike
from taskmill.flow import AgingConfig, RateLimit, check_minimum_slots, check_weight
from taskmill.priority import Priority
from taskmill.retry import RetryPolicy, seconds
from taskmill.typed import TypedTask

if TYPE_CHECKING:
    from taskmill.scheduler import Scheduler


def _policy(policy: RetryPolicy) -> RetryPolicy:
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"expected a RetryPolicy, got {policy!r}")
    return policy


def _name(what: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} must be a non-empty string, got {name!r}")
    return name


def _rate(limit: RateLimit) -> RateLimit:
    if not isinstance(limit, RateLimit):
        raise TypeError(f"expected a RateLimit, got {limit!r}")
    return limit


class SchedulerBuilder:
    """Fluent configuration of a scheduler; ``await builder.build()`` opens the store."""

    def __init__(self) -> None:
        self.spec = AppSpec()

    def store_path(self, path: str | Path) -> SchedulerBuilder:
        self.spec.store_path = str(path)
        return self

    def executor(self, task_type: str, executor: ExecutorLike) -> SchedulerBuilder:
        from taskmill.context import make_runner

        make_runner(executor)  # validates the executor's shape now
        self.spec.executors[task_type] = executor
        return self

    def typed_executor(self, task: type[TypedTask], executor: ExecutorLike) -> SchedulerBuilder:
        return self.executor(task.TASK_TYPE, executor)

    def max_concurrency(self, n: int) -> SchedulerBuilder:
        if n < 0:
            raise ValueError("max_concurrency must be >= 0")
        self.spec.max_concurrency = n
        return self

    def max_retries(self, n: int) -> SchedulerBuilder:
        if n < 0:
            raise ValueError("max_retries must be >= 0")
        self.spec.max_retries = n
        return self

    def retry_policy(self, task_type: str, policy: RetryPolicy) -> SchedulerBuilder:
        """The retry policy of ``task_type``'s tasks (a submission's own ``retry`` wins)."""
        self.spec.retry_policies[task_type] = _policy(policy)
        return self

    def default_retry_policy(self, policy: RetryPolicy) -> SchedulerBuilder:
        """The retry policy of task types without their own. Without one, a task is retried at
        once, up to ``max_retries`` times."""
        self.spec.default_retry = _policy(policy)
        return self

    def task_timeout(self, task_type: str, limit: float | timedelta) -> SchedulerBuilder:
        """The longest one run of ``task_type`` may take (a submission's ``timeout`` wins): past
        it the run's token is cancelled, and the run counts as a retryable failure."""
        self.spec.task_timeouts[task_type] = seconds("task timeout", limit, positive=True)
        return self

    def task_ttl(self, task_type: str, ttl: float | timedelta) -> SchedulerBuilder:
        """The TTL of ``task_type``'s submissions that give none (counted from submission)."""
        self.spec.task_ttls[task_type] = seconds("task ttl", ttl, positive=True)
        return self

    def default_ttl(self, ttl: float | timedelta | None) -> SchedulerBuilder:
        """The TTL of submissions whose type has none (None: no TTL)."""
        self.spec.default_ttl = None if ttl is None else seconds("default ttl", ttl, positive=True)
        return self

    def cancel_hook_timeout(self, limit: float | timedelta) -> SchedulerBuilder:
        """How long an executor's ``on_cancel`` may run (30 s) before it is cancelled in turn."""
        self.spec.cancel_hook_timeout_s = seconds("cancel hook timeout", limit, positive=True)
        return self

    def expiry_sweep_interval(self, interval: float | timedelta | None) -> SchedulerBuilder:
        """How often tasks past their TTL are looked for besides at each claim (30 s; None:
        only at claims)."""
        self.spec.expiry_sweep_s = (
            None if interval is None else seconds("expiry sweep interval", interval, positive=True)
        )
        return self

    def preempt_priority(self, priority: int) -> SchedulerBuilder:
        self.spec.preempt_priority = int(Priority(priority))
        return self

    def poll_interval(self, seconds: float) -> SchedulerBuilder:
        if seconds <= 0:
            raise ValueError("poll_interval must be > 0")
        self.spec.poll_interval = float(seconds)
        return self

    def scheduler_config(self, config: SchedulerConfig) -> SchedulerBuilder:
        """Every setting ``config`` carries at once: concurrency, retries, preemption priority,
        poll interval, shutdown mode and the group limits (its overrides replace any set
        before). A later call of one of the single-setting methods changes that setting again."""
        self.spec.max_concurrency = config.max_concurrency
        self.spec.max_retries = config.max_retries
        self.spec.preempt_priority = int(config.preempt_priority)
        self.spec.poll_interval = config.poll_interval
        self.spec.shutdown_mode = config.shutdown_mode
        self.spec.default_group_concurrency = config.default_group_concurrency
        self.spec.group_concurrency = dict(config.group_concurrency)
        return self

    def shutdown_mode(self, mode: ShutdownMode) -> SchedulerBuilder:
        self.spec.shutdown_mode = mode
        return self

    def with_resource_monitoring(self) -> SchedulerBuilder:
        self.spec.monitoring = True
        return self

    def sampler_config(self, config: SamplerConfig) -> SchedulerBuilder:
        self.spec.sampler_config = config
        return self

    def resource_sampler(self, sampler: Any) -> SchedulerBuilder:
        self.spec.sampler = sampler
        self.spec.monitoring = True
        return self

    def bandwidth_limit(self, bytes_per_sec: float) -> SchedulerBuilder:
        """The network's capacity (bytes/s), of receive and of send each: network pressure is
        the traffic over it, and the IO budget admits network work into 2 s of what it has to
        spare. Turns resource monitoring on."""
        if bytes_per_sec <= 0:
            raise ValueError("bandwidth limit must be > 0 bytes/s")
        self.spec.bandwidth_limit = float(bytes_per_sec)
        self.spec.monitoring = True
        return self

    def disk_bandwidth(self, read_bps: float, write_bps: float) -> SchedulerBuilder:
        """The disk's read and write capacity (bytes/s), for the IO budget: a task is admitted
        while the running tasks' expected bytes and its own fit in 2 s of what the disk has to
        spare. Without it the capacity is the highest rate seen in the last hour. Turns the
        budget (resource monitoring) on."""
        if not (read_bps > 0 and write_bps > 0):
            raise ValueError("disk bandwidth must be > 0 bytes/s for read and for write")
        self.spec.disk_bandwidth = (float(read_bps), float(write_bps))
        self.spec.monitoring = True
        return self

    def pressure_source(self, source: Any) -> SchedulerBuilder:
        self.spec.pressure_sources.append(source)
        return self

    def throttle_policy(self, policy: Any) -> SchedulerBuilder:
        """Replace the default tiers (``ThrottlePolicy.default_three_tier()``) by ``policy``;
        ``ThrottlePolicy([])`` holds nothing back, however high the pressure."""
        self.spec.throttle_policy = policy
        return self

    def default_group_concurrency(self, n: int) -> SchedulerBuilder:
        self.spec.default_group_concurrency = n
        return self

    def group_concurrency(self, group: str, n: int) -> SchedulerBuilder:
        self.spec.group_concurrency[group] = n
        return self

    def rate_limit(self, task_type: str, limit: RateLimit) -> SchedulerBuilder:
        """At most ``limit`` tasks of ``task_type`` start (a token bucket, full at start)."""
        self.spec.rate_limits["type:" + _name("task type", task_type)] = _rate(limit)
        return self

    def group_rate_limit(self, group: str, limit: RateLimit) -> SchedulerBuilder:
        """At most ``limit`` tasks of ``group`` start (a token bucket, full at start)."""
        self.spec.rate_limits["group:" + _name("group", group)] = _rate(limit)
        return self

    def group_weight(self, group: str, weight: float) -> SchedulerBuilder:
        """``group``'s share of the slots, relative to the other groups' weights (> 0)."""
        self.spec.group_weights[_name("group", group)] = check_weight(weight)
        return self

    def default_group_weight(self, weight: float) -> SchedulerBuilder:
        """The weight of groups without their own, and of the ungrouped tasks (1)."""
        self.spec.default_group_weight = check_weight(weight)
        return self

    def group_minimum_slots(self, group: str, n: int) -> SchedulerBuilder:
        """Slots ``group`` gets before the weights share the rest (when it has work)."""
        self.spec.group_minimum_slots[_name("group", group)] = check_minimum_slots(n)
        return self

    def aging(self, config: AgingConfig) -> SchedulerBuilder:
        """Priority aging (see ``AgingConfig``)."""
        if not isinstance(config, AgingConfig):
            raise TypeError(f"expected an AgingConfig, got {config!r}")
        self.spec.aging = config
        return self

    def app_state(self, obj: object) -> SchedulerBuilder:
        self.spec.app_state.append(obj)
        return self

    def store_config(self, config: StoreConfig) -> SchedulerBuilder:
        """How much history the Store keeps, and how often it drops the rest: every
        ``prune_every`` tasks that finish (completed, failed or cancelled)."""
        self.spec.store_config = config
        return self

    def run_dir(self, path: str | Path) -> SchedulerBuilder:
        """Embedded, but over ipc sockets in ``path`` (created 0700) instead of inproc, so that
        other processes can submit, subscribe and publish pressure to this scheduler."""
        self.spec.run_dir = str(path)
        return self

    def separate_threads(self, separate: bool = True) -> SchedulerBuilder:
        """Embedded: one thread per actor, the executor host included, instead of one thread
        shared by all (slower under the GIL; for comparison and debugging)."""
        self.spec.separate_threads = separate
        return self

    def executor_thread(self, separate: bool = True) -> SchedulerBuilder:
        """Embedded: run the executor host (the event loop of ``async def`` executors) in a
        thread of its own instead of the one the Store and Dispatcher share.

        By default they share one thread: a message between them then costs no thread switch,
        which makes short tasks markedly faster. The price is that an ``async def`` executor
        that blocks (a synchronous call inside a coroutine) stalls the whole scheduler, not only
        the other executors; the host logs a warning when that happens. Blocking work belongs
        in a plain ``def`` executor, which runs in a worker thread either way.
        """
        self.spec.executor_thread = separate
        return self

    def metrics_port(self, port: int) -> SchedulerBuilder:
        """Serve Prometheus metrics from the EventPublisher on this port (0 picks one)."""
        self.spec.metrics_port = port
        return self

    def web_port(
        self, port: int, *, host: str = "127.0.0.1", token: str | None = None
    ) -> SchedulerBuilder:
        """Serve the web dashboard on ``host:port`` (0 picks a free port; ``Scheduler.web_url``
        says where) while the scheduler is open. Any address but the loopback interface needs
        a ``token``, which every request must then show."""
        from taskmill.web.access import check_bind

        check_bind(host, token)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"the dashboard port must be in 0..65535, got {port!r}")
        self.spec.web_port = port
        self.spec.web_host = host
        self.spec.web_token = token
        return self

    def metrics_interval(self, seconds: float) -> SchedulerBuilder:
        """How often the metrics endpoint reads the queue, the hosts and the actors' heartbeats
        (default 5 s: once per scrape of the shipped Prometheus configuration). Each read is
        one aggregate query of the Store, whatever the queue's depth."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"metrics_interval must be a number of seconds > 0, got {seconds!r}")
        self.spec.metrics_interval = float(seconds)
        return self

    async def build(self) -> Scheduler:
        from taskmill.scheduler import Scheduler

        return await Scheduler.start(self.spec)
