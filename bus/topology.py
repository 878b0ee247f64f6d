"""Where each actor listens: one table of endpoints for a whole deployment.

Embedded mode uses ``Topology.inproc()``; the Procfile deployment ``Topology.ipc(run_dir)`` (or
tcp for hosts on other machines). Who asks whom (acyclic; the Store at the bottom asks nobody):

    clients ──▶ Store, Dispatcher, GroupLimiter    Dispatcher, GroupLimiter ──▶ Store
    executor hosts ──▶ Dispatcher, Store          every actor ──▶ EventPublisher (one-way)
    ResourceMonitor ──▶ Dispatcher (one-way readings)
    EventPublisher ──▶ Store, Dispatcher, control endpoints (metrics, once per interval)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

from bus.endpoints import ensure_run_dir, inproc, ipc, new_namespace, tcp


@dataclass(frozen=True, slots=True)
class Topology:
    store: str
    dispatcher: str
    hosts: str
    events_in: str
    events: str
    readings: str
    pressure: str
    limiter: str
    store_control: str
    dispatcher_control: str
    events_control: str
    monitor_control: str
    limiter_control: str

    @classmethod
    def inproc(cls, namespace: str | None = None) -> Topology:
        ns = namespace or new_namespace()
        return cls(**{f.name: inproc(ns, f.name.replace("_", "-")) for f in fields(cls)})

    @classmethod
    def ipc(cls, run_dir: str | Path) -> Topology:
        ensure_run_dir(run_dir)
        return cls(**{f.name: ipc(run_dir, f.name.replace("_", "-")) for f in fields(cls)})

    @classmethod
    def tcp(cls, host: str = "127.0.0.1", base_port: int = 5550) -> Topology:
        return cls(**{f.name: tcp(host, base_port + i) for i, f in enumerate(fields(cls))})

    def host_control(self, host_id: str) -> str:
        """A control endpoint for one executor host (one per host process), beside the Store's
        (deployments keep control endpoints local: ipc, or inproc embedded)."""
        base = self.store_control.rsplit("store-control", 1)[0]
        if base.startswith("tcp://"):
            raise ValueError("control endpoints are local (ipc or inproc), not tcp")
        return f"{base}worker-{host_id}-control{'.sock' if base.startswith('ipc') else ''}"

    def with_(self, **changes: str) -> Topology:
        return replace(self, **changes)
