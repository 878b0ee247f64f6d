"""Configuration values: defaults, validation, group limits, shutdown modes, retention."""

from __future__ import annotations

import dataclasses

import pytest

from actors.dispatcher.settings import Settings
from taskmill.builder import SchedulerBuilder
from taskmill.config import (
    GroupLimits,
    RetentionPolicy,
    SamplerConfig,
    SchedulerConfig,
    ShutdownMode,
    StoreConfig,
)
from taskmill.priority import Priority


def test_scheduler_config_defaults() -> None:
    config = SchedulerConfig()
    assert config.max_concurrency == 4
    assert config.max_retries == 3
    assert config.preempt_priority is Priority.REALTIME
    assert config.poll_interval == 0.5
    assert config.shutdown_mode == ShutdownMode.HARD
    assert config.default_group_concurrency == 0
    assert config.group_concurrency == {}


def test_scheduler_config_is_frozen_and_copies_its_group_dict() -> None:
    groups = {"s3://hot": 8}
    config = SchedulerConfig(group_concurrency=groups)
    groups["s3://cold"] = 1
    assert config.group_concurrency == {"s3://hot": 8}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_concurrency = 9  # type: ignore[misc]
    assert hash(config) == hash(SchedulerConfig(group_concurrency={"s3://hot": 8}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": -1},
        {"max_retries": -1},
        {"preempt_priority": 256},
        {"poll_interval": 0},
        {"poll_interval": float("nan")},
        {"default_group_concurrency": -2},
        {"group_concurrency": {"g": -1}},
    ],
)
def test_scheduler_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SchedulerConfig(**kwargs)  # type: ignore[arg-type]


def test_scheduler_config_coerces_priority_and_builds_group_limits() -> None:
    config = SchedulerConfig(
        preempt_priority=64,  # type: ignore[arg-type]
        default_group_concurrency=2,
        group_concurrency={"hot": 8},
    )
    assert type(config.preempt_priority) is Priority and config.preempt_priority == 64
    limits = config.group_limits()
    assert (limits.limit_for("hot"), limits.limit_for("other")) == (8, 2)


def test_group_limit_resolution() -> None:
    limits = GroupLimits()
    assert limits.limit_for("any") is None  # no default, no override: unlimited
    limits.set_default(4)
    assert limits.limit_for("any") == 4
    limits.set_limit("hot", 8)
    limits.set_limit("blocked", 0)
    assert limits.limit_for("hot") == 8
    assert limits.limit_for("blocked") == 0  # an override of 0 blocks the group
    limits.remove_limit("hot")
    assert limits.limit_for("hot") == 4  # back to the default
    limits.remove_limit("never-set")
    limits.set_default(0)
    assert limits.limit_for("hot") is None
    assert limits.limit_for("blocked") == 0
    assert limits.limit_for(None) is None  # tasks without a group are not group-limited


def test_group_limits_validation_and_equality() -> None:
    with pytest.raises(ValueError):
        GroupLimits(-1)
    with pytest.raises(ValueError):
        GroupLimits().set_limit("g", -3)
    assert GroupLimits(2, {"a": 1}) == GroupLimits(2, {"a": 1})
    assert GroupLimits(2, {"a": 1}) != GroupLimits(2)
    limits = GroupLimits(0, {"a": 1})
    limits.overrides["a"] = 99  # a copy: changing it changes nothing
    assert limits.limit_for("a") == 1


def test_shutdown_modes() -> None:
    assert ShutdownMode.HARD.kind == "hard" and not ShutdownMode.HARD.is_graceful
    graceful = ShutdownMode.graceful(30)
    assert graceful.kind == "graceful" and graceful.timeout_s == 30.0 and graceful.is_graceful
    assert graceful == ShutdownMode.graceful(30.0) and graceful != ShutdownMode.HARD
    with pytest.raises(ValueError):
        ShutdownMode.graceful(-1)
    with pytest.raises(ValueError):
        ShutdownMode("soft")  # type: ignore[arg-type]


def test_retention_policies() -> None:
    assert RetentionPolicy.max_count() == RetentionPolicy.max_count(10_000)
    assert RetentionPolicy.max_count(50).keep == 50
    assert RetentionPolicy.max_count(50).days is None
    by_age = RetentionPolicy.max_age_days(7)
    assert (by_age.keep, by_age.days) == (None, 7.0)
    assert RetentionPolicy() == RetentionPolicy.max_count(10_000)
    with pytest.raises(ValueError):
        RetentionPolicy.max_count(-1)
    with pytest.raises(ValueError):
        RetentionPolicy(keep=5, days=3)


def test_store_config_defaults() -> None:
    assert StoreConfig().retention_policy == RetentionPolicy.max_count(10_000)
    assert StoreConfig().prune_every == 100
    custom = StoreConfig(retention_policy=RetentionPolicy.max_age_days(30))
    assert custom.retention_policy.days == 30
    with pytest.raises(ValueError):
        StoreConfig(prune_every=0)


def test_sampler_config() -> None:
    assert SamplerConfig() == SamplerConfig(interval=1.0, ewma_alpha=0.3)
    assert SamplerConfig(interval=2, ewma_alpha=1).ewma_alpha == 1.0
    for bad in ({"interval": 0}, {"ewma_alpha": 0}, {"ewma_alpha": 1.5}):
        with pytest.raises(ValueError):
            SamplerConfig(**bad)
    assert SamplerConfig().interfaces is None and SamplerConfig().disks is None  # physical ones
    listed = SamplerConfig(interfaces=["eth0", "wlan*"], disks=["nvme0n1"])  # type: ignore[arg-type]
    assert (listed.interfaces, listed.disks) == (("eth0", "wlan*"), ("nvme0n1",))
    for bad_list in ("eth0", [""], [3]):
        with pytest.raises(ValueError):
            SamplerConfig(interfaces=bad_list)  # type: ignore[arg-type]


def test_capacities_and_the_readings_lifetime_reach_the_dispatcher() -> None:
    from bus.topology import Topology
    from taskmill import Scheduler
    from taskmill.wiring import dispatcher_settings

    def settings(builder: SchedulerBuilder) -> Settings:
        return dispatcher_settings(builder.spec, Topology.inproc())

    plain = settings(Scheduler.builder())
    assert not plain.monitoring and plain.disk_capacity_bps is None
    assert plain.net_capacity_bps is None and plain.readings_expiry_s == 3.0
    disk = settings(Scheduler.builder().disk_bandwidth(1e9, 2e8))
    assert disk.monitoring and disk.disk_capacity_bps == (1e9, 2e8)
    both = Scheduler.builder().disk_bandwidth(1e9, 2e8).bandwidth_limit(5e7)
    assert settings(both).net_capacity_bps == 5e7
    slow = Scheduler.builder().sampler_config(SamplerConfig(interval=0.5))
    assert settings(slow).readings_expiry_s == 1.5
    for read, write in [(0, 1), (1, -1), (float("nan"), 1)]:
        with pytest.raises(ValueError):
            Scheduler.builder().disk_bandwidth(read, write)
