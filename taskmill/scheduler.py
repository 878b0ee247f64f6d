"""``Scheduler``: the user's door to an embedded deployment (every actor in one thread of this
process, over inproc; ``executor_thread`` and ``separate_threads`` give threads of their own).

It starts the actors; every call is ``AsyncClient``'s, over inproc, so a call behaves alike
embedded and against a deployment. It decides nothing itself: dispatch, preemption, retries and
dedup happen in the actors.

Shutdown order matters: the Dispatcher stops dispatching and drains (or cancels) running tasks
first; the executors whose tokens it cancelled get up to ``STOP_GRACE_S`` to return on their
own; then the actors stop, the executor host first (the coroutines still running are cancelled
and get a short grace to finish cancelling; threads they started are not waited for), the Store
last, so every result reaches the database before it is checkpointed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import zmq

from actors.dispatcher.actor import Dispatcher
from actors.host.actor import STOP_GRACE_S, ExecutorHost
from actors.publisher.actor import EventPublisher
from bus.cancel import CancellationToken
from bus.hosting import ActorThread
from bus.kinds import Ok
from bus.kinds_run import Shutdown, Start
from bus.runtime import Actor
from bus.topology import Topology
from taskmill.app import AppSpec
from taskmill.builder import SchedulerBuilder
from taskmill.client import AsyncClient
from taskmill.context import cancel_hooks, make_runner
from taskmill.monitoring import monitor_actor
from taskmill.wiring import dispatcher_settings, host_settings, limiter_actor, store_actor

if TYPE_CHECKING:
    from taskmill.web.server import DashboardServer

log = logging.getLogger("taskmill.scheduler")

__all__ = ["Scheduler"]


class Scheduler(AsyncClient):
    """An embedded scheduler. Build it with ``await Scheduler.builder()...build()``."""

    def __init__(
        self,
        spec: AppSpec,
        context: zmq.Context[Any],
        topology: Topology,
        threads: dict[str, ActorThread],
        host: ExecutorHost,
    ) -> None:
        super().__init__(topology, context=context)
        self._spec = spec
        self._threads = threads
        self._host = host
        self._closing = asyncio.Event()
        self._running = False
        self._web: DashboardServer | None = None

    @staticmethod
    def builder() -> SchedulerBuilder:
        return SchedulerBuilder()

    @classmethod
    async def start(cls, spec: AppSpec) -> Scheduler:
        """Start every actor (the Dispatcher idle until ``run``); called by ``build()``."""
        context: zmq.Context[Any] = zmq.Context()
        topology = Topology.ipc(spec.run_dir) if spec.run_dir else Topology.inproc()
        threads: dict[str, ActorThread] = {}
        runners = {t: make_runner(e) for t, e in spec.executors.items()}
        state = {type(obj): obj for obj in spec.app_state}
        settings = host_settings(spec, topology, capacity=max(32, spec.max_concurrency))
        host = ExecutorHost(
            runners, settings, state=state, cancel_hooks=cancel_hooks(spec.executors)
        )
        # Set up in this order (the Store first, so it is the last closed).
        actors: list[tuple[str, Actor, str]] = [
            ("store", store_actor(spec, topology), topology.store_control),
            (
                "events",
                EventPublisher(
                    topology.events_in,
                    topology.events,
                    metrics_port=spec.metrics_port,
                    watch=topology,
                    metrics_interval_s=spec.metrics_interval,
                ),
                topology.events_control,
            ),
            ("limiter", limiter_actor(spec, topology), topology.limiter_control),
            ("monitor", monitor_actor(spec, topology), topology.monitor_control),
            (
                "dispatcher",
                Dispatcher(dispatcher_settings(spec, topology, autostart=False)),
                topology.dispatcher_control,
            ),
        ]
        worker = ("worker", host, topology.host_control(host.settings.host_id))
        alone = spec.separate_threads or spec.executor_thread
        if not alone:
            actors.append(worker)  # set up last, so stopped first
        try:
            if spec.separate_threads:
                for name, actor, control in actors:
                    thread = ActorThread(actor, context, control)
                    threads[name] = await asyncio.to_thread(thread.start)
            else:
                # One thread for all the actors: under the GIL, a message between threads costs
                # a wake-up and a GIL hand-off; within one loop it costs neither. Same actors,
                # same sockets: only the scheduling of their handlers changes. With the host in
                # the group, asyncio drives the loop (the executors' coroutines run on it).
                group = ActorThread([(a, c) for _, a, c in actors], context, name="actors")
                threads["actors"] = await asyncio.to_thread(group.start)
            if alone:
                _, host_actor, control = worker
                thread = ActorThread(host_actor, context, control)
                threads["worker"] = await asyncio.to_thread(thread.start)
        except BaseException:
            await asyncio.to_thread(_stop_all, threads)
            context.term()
            raise
        scheduler = cls(spec, context, topology, threads, host)
        if spec.web_port is not None:
            try:
                await scheduler._serve_dashboard()
            except BaseException:
                await scheduler.close()
                raise
        return scheduler

    async def _serve_dashboard(self) -> None:
        from taskmill.web.server import DashboardServer

        assert self._spec.web_port is not None
        topology, context = self.topology, self._context
        server = DashboardServer(
            lambda: AsyncClient(topology, context=context),
            host=self._spec.web_host,
            port=self._spec.web_port,
            token=self._spec.web_token,
        )
        await asyncio.to_thread(server.start)
        self._web = server

    @property
    def web_url(self) -> str | None:
        """Where the dashboard is served (``SchedulerBuilder.web_port``), or None."""
        return None if self._web is None else self._web.url

    # -- running -----------------------------------------------------------------------------

    async def run(self, token: CancellationToken) -> None:
        """Dispatch until ``token`` is cancelled, then shut down per the shutdown mode."""
        await self._start_dispatching()
        try:
            # Ends on the token, or when close() is called from elsewhere (a signal handler).
            stopped = asyncio.ensure_future(token.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            try:
                await asyncio.wait({stopped, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                closing.cancel()
        finally:
            await self.close()

    async def _start_dispatching(self) -> None:
        if self._running:
            raise RuntimeError("this scheduler is already running")
        self._running = True
        await self._dispatcher.call(Start(), Ok)

    async def __aenter__(self) -> Scheduler:
        """Run in the background for the body of ``async with``; shut down on exit."""
        await self._start_dispatching()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Shut down (per the shutdown mode) and close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._web is not None:  # its client's sockets must close before the context does
            await asyncio.to_thread(self._web.stop)
        mode = self._spec.shutdown_mode
        drain = mode.timeout_s if mode.is_graceful else 0.0
        try:
            await self._dispatcher.call(Shutdown(drain), Ok, timeout=drain + 10.0)
        except Exception as exc:  # still stop every actor below
            log.warning("dispatcher shutdown failed: %s", exc)
        else:
            # The Dispatcher has cancelled the tokens of what still ran: let those executors
            # stop on their own before the host's loop stops and cancels their coroutines.
            await asyncio.to_thread(self._host.wait_until_idle, STOP_GRACE_S)
        self._close_requesters()
        errors = await asyncio.to_thread(_stop_all, self._threads)
        # Subscriptions close last: events published while the actors stopped still arrive.
        await self._close_subscriptions()
        # Every actor thread has stopped; destroy closes whatever a caller left open.
        self._context.destroy(linger=0)
        if errors:
            raise errors[0]

    async def register_state(self, obj: object) -> None:
        self._host.register_state(obj)


def _stop_all(threads: dict[str, ActorThread]) -> list[BaseException]:
    errors: list[BaseException] = []
    # The monitor pushes events too: stop it before the publisher.
    for name in ("worker", "dispatcher", "monitor", "limiter", "events", "store", "actors"):
        thread = threads.get(name)
        if thread is None:
            continue
        try:
            thread.stop()
        except BaseException as exc:
            log.error("actor %s failed: %s", name, exc)
            errors.append(exc)
    with contextlib.suppress(Exception):
        threads.clear()
    return errors
