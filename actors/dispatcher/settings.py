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
    store_timeout: float = 5.0
    orphan_grace_s: float = 5.0
    learn_interval_s: float = 5.0
    """A ``running`` row no host reports for this long is released (claim reply lost, host or
    Dispatcher restarted)."""
    event_queue: int = 100_000
    dispatcher_id: str = "dispatcher"
    autostart: bool = True
