"""The Dispatcher's configuration: one frozen object, passed down."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the Dispatcher is configured with (one frozen object, passed down)."""

    control_endpoint: str
    hosts_endpoint: str
    store_endpoint: str
    events_endpoint: str
    readings_endpoint: str | None = None
    max_concurrency: int = 4
    max_retries: int = 3
    preempt_priority: int = 0
    poll_interval: float = 0.5
    heartbeat_s: float = 1.0
    throttle: tuple[tuple[int, float], ...] = ((192, 0.50), (128, 0.75))
    monitoring: bool = False
    disk_capacity_bps: tuple[float, float] | None = None
    """Configured disk (read, write) capacity for the IO budget; None: learned from the peaks."""
    net_capacity_bps: float | None = None
    """Configured network capacity, of rx and of tx each; None: learned from the peaks."""
    store_timeout: float = 5.0
    orphan_grace_s: float = 5.0
    """A ``running`` row no host reports for this long is released (claim reply lost, host or
    Dispatcher restarted)."""
    learn_interval_s: float = 5.0
    """The learned IO of types that have some is refreshed at most this often."""
    expiry_sweep_s: float | None = 30.0
    """How often tasks past their TTL are looked for besides at each claim (None: never)."""
    readings_expiry_s: float = 3.0
    """A reading of the monitor received longer ago than this counts as none (pressure 0, rates
    unknown): three of its sampling intervals, like a pressure reading pushed over the bus."""
    event_queue: int = 100_000
    dispatcher_id: str = "dispatcher"
    autostart: bool = True
