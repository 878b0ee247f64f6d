"""One actor per process: build an actor from the application and a deployment config, run it.

Each ``build_*`` function builds exactly one actor with the same classes and the same wiring
helpers the embedded ``Scheduler`` uses (``taskmill.wiring``, ``taskmill.monitoring``), on the
deployment's endpoints instead of inproc ones; there is no second implementation. ``serve`` runs
it in the calling thread until SIGTERM or SIGINT, then stops it over its own control endpoint
(the Dispatcher first shuts down per the application's shutdown mode), and tells the caller how
it ended: 0 for a clean stop, 1 when the actor crashed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from actors.dispatcher.actor import Dispatcher
from actors.host.actor import ExecutorHost
from actors.publisher.actor import EventPublisher
from bus.client import RequestClient
from bus.endpoints import EndpointInUse, lock_endpoint, private_dirs
from bus.errors import TaskmillError
from bus.hosting import run_actor
from bus.kinds import Ok, Stop
from bus.kinds_run import Shutdown
from bus.runtime import Actor, SocketSecurity
from bus.security import start_authenticator
from bus.topology import Topology
from taskmill.app import AppSpec
from taskmill.context import cancel_hooks, make_runner
from taskmill.deploy import DeploymentConfig
from taskmill.monitoring import machine_reader, monitor_actor
from taskmill.wiring import dispatcher_settings, host_settings, limiter_actor, store_actor

__all__ = [
    "ACTORS",
    "ActorProcess",
    "app_spec",
    "build",
    "build_dispatcher",
    "build_events",
    "build_limiter",
    "build_monitor",
    "build_store",
    "build_worker",
    "control_endpoint",
    "default_host_id",
    "serve",
]

log = logging.getLogger("taskmill.process")

ACTORS = ("store", "dispatcher", "monitor", "limiter", "worker", "events")
"""Every actor a deployment runs, one process each (``worker`` as many times as wanted)."""

STOP_TIMEOUT_S = 10.0

ClientConfigure = Callable[[str], Callable[[Any], None] | None]
"""Given an endpoint, how to configure a client socket for it (security), or None."""


def _client_configure(security: SocketSecurity | None) -> ClientConfigure:
    def for_endpoint(endpoint: str) -> Callable[[Any], None] | None:
        if security is None:
            return None

        def configure(sock: Any) -> None:
            security.client(sock, endpoint)

        return configure

    return for_endpoint


@dataclass(frozen=True)
class ActorProcess:
    """An actor ready to run in this process: its control endpoint and how it is stopped."""

    name: str
    actor: Actor
    control: str
    topology: Topology
    before_stop: Callable[[zmq.Context[Any], ClientConfigure], None] | None = None
    """Called (in a helper thread) before STOP, e.g. the Dispatcher's shutdown."""


def app_spec(spec: AppSpec, cfg: DeploymentConfig) -> AppSpec:
    """``spec`` with the deployment's overrides applied (database, metrics port)."""
    changes: dict[str, Any] = {}
    if cfg.database is not None:
        changes["store_path"] = cfg.database
    if cfg.metrics_port is not None:
        changes["metrics_port"] = cfg.metrics_port
    return dataclasses.replace(spec, **changes) if changes else spec


def build_store(spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The Store on the database of ``cfg`` (else the application's), creating its directory."""
    topology = cfg.topology()
    spec = app_spec(spec, cfg)
    if cfg.database is not None:  # the deployment's own directory (e.g. .taskmill/): create it
        private_dirs(Path(cfg.database).parent)  # nobody else lists or opens what is in it
    # A Store process may restart alone while hosts still run their tasks: it leaves running
    # rows alone, and the Dispatcher releases those no host reports.
    actor = store_actor(spec, topology, recover_running=False)
    return ActorProcess("store", actor, topology.store_control, topology)


def build_dispatcher(spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The Dispatcher, dispatching from the start; on SIGTERM it first shuts down (draining per
    the application's shutdown mode)."""
    topology = cfg.topology()
    mode = spec.shutdown_mode
    drain = mode.timeout_s if mode.is_graceful else 0.0

    def shutdown(context: zmq.Context[Any], configure: ClientConfigure) -> None:
        # Stop dispatching and drain (or cancel) running tasks before the loop stops, as the
        # embedded scheduler does on close.
        client = RequestClient(
            context, topology.dispatcher, configure=configure(topology.dispatcher)
        )
        try:
            client.call(Shutdown(drain), Ok, timeout=drain + STOP_TIMEOUT_S)
        finally:
            client.close()

    dispatcher = Dispatcher(dispatcher_settings(spec, topology, autostart=True))
    return ActorProcess("dispatcher", dispatcher, topology.dispatcher_control, topology, shutdown)


def build_monitor(spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The ResourceMonitor: the application's sampler and pressure sources."""
    topology = cfg.topology()
    return ActorProcess(
        "monitor", monitor_actor(spec, topology), topology.monitor_control, topology
    )


def build_limiter(spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The GroupLimiter with the application's group limits."""
    topology = cfg.topology()
    return ActorProcess(
        "limiter", limiter_actor(spec, topology), topology.limiter_control, topology
    )


def build_events(spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The EventPublisher, serving Prometheus metrics on ``cfg``'s (else the app's) port."""
    topology = cfg.topology()
    spec = app_spec(spec, cfg)
    publisher = EventPublisher(
        topology.events_in,
        topology.events,
        metrics_port=spec.metrics_port,
        watch=topology,
        metrics_interval_s=spec.metrics_interval,
    )
    return ActorProcess("events", publisher, topology.events_control, topology)


def default_host_id() -> str:
    """A host id unique on this machine: the short host name and the process id."""
    return f"{socket.gethostname().split('.')[0][:24]}-{os.getpid()}"


def build_worker(
    spec: AppSpec,
    cfg: DeploymentConfig,
    *,
    host_id: str | None = None,
    sample_resources: bool | None = None,
) -> ActorProcess:
    """An executor host running every executor of the application.

    Capacity: ``cfg.capacity``, else the application's ``max_concurrency`` (the Dispatcher
    bounds the total across hosts anyway). ``sample_resources``: the host reports its own
    machine's readings, by which the IO budget of the tasks sent to it is judged; None (the
    default) turns it on for a tcp deployment with resource monitoring on, where the host may
    be on another machine than the ResourceMonitor.
    """
    topology = cfg.topology()
    host_id = host_id or default_host_id()
    capacity = cfg.capacity or max(1, spec.max_concurrency)
    runners = {t: make_runner(e) for t, e in spec.executors.items()}
    state = {type(obj): obj for obj in spec.app_state}
    settings = host_settings(spec, topology, capacity, host_id)
    if sample_resources is None:
        sample_resources = cfg.transport == "tcp" and spec.monitoring
    reader = machine_reader(spec.sampler_config, spec.sampler) if sample_resources else None
    hooks = cancel_hooks(spec.executors)
    host = ExecutorHost(runners, settings, state=state, read_machine=reader, cancel_hooks=hooks)
    return ActorProcess("worker", host, control_endpoint(topology, "worker", host_id), topology)


def control_endpoint(topology: Topology, actor: str, host_id: str | None = None) -> str:
    """The control endpoint (ping, stats, stop) of ``actor``; a worker's needs its host id."""
    if actor == "worker":
        if not host_id:
            raise ValueError("a worker's control endpoint needs its host id")
        return topology.host_control(host_id)
    if actor not in ACTORS:
        raise ValueError(f"unknown actor {actor!r} (one of {', '.join(ACTORS)})")
    endpoint: str = getattr(topology, f"{actor}_control")
    return endpoint


_BUILDERS: dict[str, Callable[[AppSpec, DeploymentConfig], ActorProcess]] = {
    "store": build_store,
    "dispatcher": build_dispatcher,
    "monitor": build_monitor,
    "limiter": build_limiter,
    "events": build_events,
    "worker": build_worker,
}


def build(name: str, spec: AppSpec, cfg: DeploymentConfig) -> ActorProcess:
    """The actor ``name`` (one of ``ACTORS``); a worker gets the default host id."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown actor {name!r} (one of {', '.join(ACTORS)})") from None
    return builder(spec, cfg)


class _Stopper:
    """Turns the first SIGTERM/SIGINT into a clean stop; a second one interrupts at once."""

    def __init__(
        self, process: ActorProcess, context: zmq.Context[Any], configure: ClientConfigure
    ) -> None:
        self.process = process
        self.context = context
        self.configure = configure
        self.thread: threading.Thread | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.thread is not None:
            raise KeyboardInterrupt  # asked twice: stop waiting for a clean stop
        log.info("%s: %s received, stopping", self.process.name, signal.Signals(signum).name)
        # The actor's loop runs in this (the main) thread: ask it to stop from another one.
        self.thread = threading.Thread(target=self._stop, name="taskmill-stopper", daemon=True)
        self.thread.start()

    def _stop(self) -> None:
        process = self.process
        if process.before_stop is not None:
            try:
                process.before_stop(self.context, self.configure)
            except TaskmillError as exc:
                log.warning("%s: shutdown failed: %s", process.name, exc)
        client = RequestClient(
            self.context,
            process.control,
            timeout=STOP_TIMEOUT_S,
            configure=self.configure(process.control),
        )
        try:
            client.call(Stop(), Ok)
        except TaskmillError as exc:
            log.warning("%s: STOP failed: %s", process.name, exc)
        finally:
            client.close()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join(STOP_TIMEOUT_S)


def serve(
    process: ActorProcess,
    *,
    security: SocketSecurity | None = None,
    authorized: Path | None = None,
) -> int:
    """Run ``process``'s actor in this thread until SIGTERM/SIGINT; the exit status.

    0: stopped cleanly. 1: the actor crashed (the error is logged). 2: not started, because
    another copy of this actor already runs on the same run directory (its control endpoint is
    locked, ``bus.endpoints.lock_endpoint``): binding would take that copy's sockets, and with
    them the stop meant for it. 130: interrupted by a second signal before it had stopped.
    Must be called from the main thread (signal handlers). ``security`` configures the actor's
    sockets, and those used to stop it (CURVE on tcp); ``authorized`` is the directory of
    client keys its tcp servers accept.
    """
    try:
        lock = lock_endpoint(process.control)
    except EndpointInUse as exc:
        log.error("%s: not started: another %s runs on this run directory: %s",
                  process.name, process.name, exc)  # fmt: skip
        return 2
    try:
        return _serve(process, security, authorized)
    finally:
        if lock is not None:
            os.close(lock)


def _serve(process: ActorProcess, security: SocketSecurity | None, authorized: Path | None) -> int:
    context: zmq.Context[Any] = zmq.Context()
    auth = start_authenticator(context, authorized) if authorized is not None else None
    stopper = _Stopper(process, context, _client_configure(security))
    previous = {
        sig: signal.signal(sig, stopper.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    log.info("%s: starting, control endpoint %s", process.name, process.control)
    try:
        run_actor(process.actor, context, process.control, security=security)
    except KeyboardInterrupt:
        log.warning("%s: interrupted before it stopped cleanly", process.name)
        return 130
    except Exception:
        log.exception("%s: crashed", process.name)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stopper.join()
        if auth is not None:
            auth.stop()
        context.destroy(linger=0)
    log.info("%s: stopped", process.name)
    return 0
