"""Running actors: in threads of this process (embedded) or in the calling thread (a process).

``ActorThread`` runs one actor, or a group of actors sharing one loop and thread, in a daemon
thread. Actors that only exchange messages with each other gain nothing from threads of their
own under the GIL: every message between threads costs a wake-up and a GIL hand-off, so the
embedded scheduler runs its actors as one group (the same classes and real ZeroMQ sockets; only
the scheduling of their handlers changes). When a member uses asyncio (an executor host), asyncio
drives the group's loop, so the host's coroutines and the other actors' handlers share it.

An actor's crash is never swallowed: ``ActorThread.stop`` re-raises it; ``run_actor`` lets it
propagate (a non-zero exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import zmq

from bus.clock import Clock
from bus.errors import ActorUnavailable
from bus.kinds import Stop
from bus.runtime import Actor, ActorLoop, SocketSecurity, run_in_asyncio

log = logging.getLogger("taskmill.bus")

STOP_SLICE_S = 0.2
"""How long ``ActorThread.stop`` waits for a reply before checking whether the thread died."""


class ActorThread:
    """Runs an actor (or several sharing one loop) in a daemon thread; ``stop`` asks it to stop
    over its (first) control endpoint."""

    def __init__(
        self,
        actor: Actor | Sequence[tuple[Actor, str]],
        context: zmq.Context[Any],
        control_endpoint: str | None = None,
        *,
        clock: Clock | None = None,
        security: SocketSecurity | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(actor, Actor):
            if control_endpoint is None:
                raise ValueError("an actor needs its control endpoint")
            members = [(actor, control_endpoint)]
        else:
            members = list(actor)
        if not members:
            raise ValueError("no actor to run")
        self.members = members
        self.uses_asyncio = any(a.uses_asyncio for a, _ in members)
        self.actor = members[0][0]
        self.name = name or self.actor.name
        self.security = security
        self.context = context
        self.control_endpoint = members[0][1]
        self.clock = clock
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"taskmill-{self.name}", daemon=True
        )

    def start(self, timeout: float = 10.0) -> ActorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise ActorUnavailable(f"actor {self.name} did not start within {timeout}s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        from bus.server import serve_control

        loop = ActorLoop(self.context, self.name, clock=self.clock, security=self.security)
        started: list[Actor] = []
        try:
            for actor, control in self.members:
                serve_control(loop, actor, control)
                actor.setup(loop)
                started.append(actor)
        except BaseException as exc:
            self._error = exc
            loop.close()
            self._stop_all(started)
            self._ready.set()
            return
        self._ready.set()
        try:
            if self.uses_asyncio:
                run_in_asyncio(loop)
            else:
                loop.run()
        except BaseException as exc:
            log.exception("actor %s crashed", self.name)
            self._error = exc
        finally:
            self._stop_all(started)

    def _stop_all(self, started: list[Actor]) -> None:
        for actor in reversed(started):  # the first set up (the Store) is the last closed
            try:
                actor.on_stop()
            except BaseException as exc:
                self._error = self._error or exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the actor(s) and wait for the thread; re-raise what it died of, if anything."""
        if self._thread.is_alive():
            from bus.client import RequestClient

            security, endpoint = self.security, self.control_endpoint

            def configure(sock: zmq.Socket[Any]) -> None:
                if security is not None:
                    security.client(sock, endpoint)

            client = RequestClient(self.context, endpoint, timeout=timeout, configure=configure)
            deadline = time.monotonic() + timeout
            try:
                # Ask in short slices: a thread that dies meanwhile (a crash) never answers.
                while self._thread.is_alive() and time.monotonic() < deadline:
                    try:
                        client.request(Stop(), timeout=STOP_SLICE_S)
                        break
                    except ActorUnavailable:
                        continue
            finally:
                client.close()
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def run_actor(
    actor: Actor,
    context: zmq.Context[Any],
    control_endpoint: str,
    *,
    security: SocketSecurity | None = None,
) -> ActorLoop:
    """Run ``actor`` in this thread until it is stopped (one process per actor)."""
    from bus.server import serve_control

    loop = ActorLoop(context, actor.name, security=security)
    try:
        serve_control(loop, actor, control_endpoint)
        actor.setup(loop)
    except BaseException:
        loop.close()
        actor.on_stop()
        raise
    try:
        if actor.uses_asyncio:
            run_in_asyncio(loop)
        else:
            loop.run()
    finally:
        actor.on_stop()
    return loop
