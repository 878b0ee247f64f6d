"""Building actors from an application description (shared by embedded mode and the CLI)."""

from __future__ import annotations

import dataclasses

from actors.dispatcher.state import Settings
from actors.host.actor import HostSettings
from actors.limiter.actor import GroupLimiter, LimiterSettings
from actors.monitor.actor import MonitorSettings
from actors.monitor.pressure import ThrottlePolicy
from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from actors.store.flow import Aging
from bus.clock import SystemClock
from bus.topology import Topology
from taskmill.app import AppSpec


def store_actor(
    spec: AppSpec, topology: Topology, *, path: str | None = None, recover_running: bool = True
) -> StoreActor:
    """The Store actor of ``spec``. ``recover_running``: True when the whole scheduler starts
    (embedded); False for a Store process of a deployment, which may restart alone while hosts
    still run their tasks (the Dispatcher releases the running rows nobody reports)."""
    config = spec.store_config
    policy = config.retention_policy
    db_path = path or spec.store_path

    def open_db() -> StoreDB:
        return StoreDB(
            db_path,
            clock=SystemClock(),
            retention_max_count=policy.keep,
            retention_max_age_days=policy.days,
            prune_every=config.prune_every,
            recover_running=recover_running,
            retry_policies={t: p.to_wire() for t, p in spec.retry_policies.items()},
            default_retry=None if spec.default_retry is None else spec.default_retry.to_wire(),
            ttls=dict(spec.task_ttls),
            default_ttl=spec.default_ttl,
            group_limits=(spec.default_group_concurrency, dict(spec.group_concurrency)),
            flow_policy=(
                {scope: limit.to_wire() for scope, limit in spec.rate_limits.items()},
                dict(spec.group_weights),
                dict(spec.group_minimum_slots),
                spec.default_group_weight,
            ),
            aging=None if spec.aging is None else Aging(*spec.aging.to_wire()),
        )

    return StoreActor(open_db, topology.store, urgent_priority=spec.preempt_priority)


def limiter_actor(spec: AppSpec, topology: Topology) -> GroupLimiter:
    return GroupLimiter(
        LimiterSettings(
            topology.limiter,
            topology.store,
            default_group_concurrency=spec.default_group_concurrency,
            group_concurrency=tuple(spec.group_concurrency.items()),
            events_endpoint=topology.events_in,
            rate_limits=tuple((s, limit.to_wire()) for s, limit in spec.rate_limits.items()),
            group_weights=tuple(spec.group_weights.items()),
            default_group_weight=spec.default_group_weight,
            group_minimum_slots=tuple(spec.group_minimum_slots.items()),
        )
    )


def dispatcher_settings(spec: AppSpec, topology: Topology, *, autostart: bool = True) -> Settings:
    # None means no policy was given (the default tiers); an empty policy never holds anything.
    given = spec.throttle_policy
    policy = ThrottlePolicy.default_three_tier() if given is None else ThrottlePolicy(given)
    tiers = tuple((int(floor), float(limit)) for floor, limit in policy.tiers)
    # The monitor's readings live as long as a pressure reading pushed to it over the bus.
    sampling = MonitorSettings(
        topology.readings, topology.pressure, None, spec.sampler_config.interval
    )
    return Settings(
        control_endpoint=topology.dispatcher,
        hosts_endpoint=topology.hosts,
        store_endpoint=topology.store,
        events_endpoint=topology.events_in,
        readings_endpoint=topology.readings,
        max_concurrency=spec.max_concurrency,
        max_retries=spec.max_retries,
        preempt_priority=spec.preempt_priority,
        poll_interval=spec.poll_interval,
        throttle=tiers,
        monitoring=spec.monitoring,
        disk_capacity_bps=spec.disk_bandwidth,
        net_capacity_bps=spec.bandwidth_limit,
        readings_expiry_s=sampling.expiry_s,
        expiry_sweep_s=spec.expiry_sweep_s,
        autostart=autostart,
    )


def host_settings(
    spec: AppSpec, topology: Topology, capacity: int, host_id: str | None = None
) -> HostSettings:
    """The settings of an executor host running ``spec``'s executors."""
    settings = HostSettings(
        topology.hosts,
        topology.store,
        capacity=capacity,
        task_timeouts=dict(spec.task_timeouts),
        cancel_hook_timeout_s=spec.cancel_hook_timeout_s,
    )
    return settings if host_id is None else dataclasses.replace(settings, host_id=host_id)
