"""The actor runtime: one loop per actor that owns its sockets, its poller and its timers.

An actor is set up once (``Actor.setup``: bind and connect sockets, register handlers and timers),
then its loop runs until STOP: poll with a timeout taken from the nearest timer (never infinite),
drain every ready socket in a batch (so a handler sees everything that arrived together: that is
what makes the Store's group commit possible), run due timers, repeat. Handlers never block.

``bus.hosting`` runs loops: ``ActorThread`` in a thread (embedded mode), ``run_actor`` in the
calling thread (one process per actor).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from bus.clock import Clock, SystemClock
from bus.protocol import limit_inbound, recv_ready

SPIN_POLLS = 4
"""Polls without waiting that a loop makes after its last message, before it sleeps. On a busy
scheduler the next message (a producer's next submit) usually arrives within them, and then costs
no sleep and wake-up of the thread, which speeds up awaited submits and the drain alike. Many more
spins cost more than they save. Idle, it is one burst of four polls after each timer.

A loop built in a thread that may run on one CPU only (``taskset -c 0``, a cpuset) does not
spin. The threads that feed it then usually need that very CPU: every thread of its process
inherits the set (ZeroMQ's I/O threads too, which deliver every ipc and tcp message), and so does
an application thread that was confined before it built the scheduler. Spinning only keeps them
off the CPU. A sender confined to another CPU merely finds the loop asleep, as
it would after the spin."""


def usable_cpus() -> int:
    """How many CPUs the calling thread may run on (its affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this OS (macOS), or a sandbox refused
        return os.cpu_count() or 1


log = logging.getLogger("taskmill.bus")

BatchHandler = Callable[[list[list[bytes]]], None]


class SocketSecurity(Protocol):
    """Configures a socket before it binds (server) or connects (client) to an endpoint."""

    def server(self, sock: zmq.Socket[Any], endpoint: str) -> None: ...

    def client(self, sock: zmq.Socket[Any], endpoint: str) -> None: ...


def _fd(sock: zmq.Socket[Any]) -> int:
    fd = sock.getsockopt(zmq.FD)
    assert isinstance(fd, int)
    return fd


class Timer:
    """A scheduled callback; ``cancel()`` it to drop it."""

    __slots__ = ("callback", "cancelled", "due", "interval")

    def __init__(self, due: float, callback: Callable[[], None], interval: float | None) -> None:
        self.due = due
        self.callback = callback
        self.interval = interval
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ActorLoop:
    """The event loop of one actor. Not thread-safe: only the actor's own thread touches it."""

    def __init__(
        self,
        context: zmq.Context[Any],
        name: str,
        *,
        clock: Clock | None = None,
        max_batch: int = 4096,
        security: SocketSecurity | None = None,
    ) -> None:
        self.context = context
        self.security = security
        self.name = name
        self.clock = clock or SystemClock()
        self.max_batch = max_batch
        self.spin_polls = SPIN_POLLS if usable_cpus() > 1 else 0
        """Polls without waiting after the last message (``SPIN_POLLS``; 0 on one CPU)."""
        self._poller = zmq.Poller()
        self._handlers: dict[zmq.Socket[Any], BatchHandler] = {}
        self._sockets: list[zmq.Socket[Any]] = []
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._after_stop: list[Callable[[], None]] = []
        self._aio_loop: asyncio.AbstractEventLoop | None = None
        self._aio_done: asyncio.Future[None] | None = None
        self._aio_scheduled = False
        self._aio_timer: asyncio.TimerHandle | None = None
        self._aio_timer_due = 0.0

    # -- sockets -----------------------------------------------------------------------------

    def socket(self, kind: int, *, linger: int = 0, hwm: int = 100_000) -> zmq.Socket[Any]:
        """A new socket owned (and closed) by this loop, reading no message larger than the
        protocol allows (``bus.protocol.limit_inbound``)."""
        sock: zmq.Socket[Any] = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, linger)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        limit_inbound(sock)
        self._sockets.append(sock)
        return sock

    def own(self, sock: zmq.Socket[Any]) -> None:
        """Close ``sock`` (made elsewhere, e.g. a socket's monitor) with this loop's sockets."""
        self._sockets.append(sock)

    def add_reader(self, sock: zmq.Socket[Any], handler: BatchHandler) -> None:
        """Call ``handler`` with every batch of multipart messages ``sock`` receives."""
        self._handlers[sock] = handler
        self._poller.register(sock, zmq.POLLIN)
        if self._aio_loop is not None:
            self._aio_loop.add_reader(_fd(sock), self._on_readable)

    def remove_reader(self, sock: zmq.Socket[Any]) -> None:
        if self._handlers.pop(sock, None) is not None:
            self._poller.unregister(sock)
            if self._aio_loop is not None:
                self._aio_loop.remove_reader(_fd(sock))

    def close_socket(self, sock: zmq.Socket[Any]) -> None:
        """Close one of this loop's sockets before the loop ends (a reconnect)."""
        self.remove_reader(sock)
        if sock in self._sockets:
            self._sockets.remove(sock)
        sock.close(linger=0)

    def bind(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Bind, as a server: with CURVE on tcp when the loop has security configured."""
        if self.security is not None:
            self.security.server(sock, endpoint)
        sock.bind(endpoint)

    def connect(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        """Connect, as a client: with CURVE on tcp when the loop has security configured."""
        if self.security is not None:
            self.security.client(sock, endpoint)
        sock.connect(endpoint)

    def client_security(self, endpoint: str) -> Callable[[zmq.Socket[Any]], None] | None:
        """How to configure a client socket this loop does not own (an asyncio requester's)
        for ``endpoint``, as ``connect`` configures the loop's own: None without security."""
        security = self.security
        if security is None:
            return None

        def configure(sock: zmq.Socket[Any]) -> None:
            security.client(sock, endpoint)

        return configure

    # -- timers ------------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock.monotonic() + max(0.0, delay), callback, None)
        heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
        if self._aio_loop is not None:
            self._arm_timer()
        return timer

    def call_every(self, interval: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.clock.monotonic() + interval, callback, interval)
        heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
        if self._aio_loop is not None:
            self._arm_timer()
        return timer

    def after_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the loop has stopped, before the sockets close."""
        self._after_stop.append(callback)

    # -- running -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self.poke()

    def poke(self) -> None:
        """Under asyncio: look at the sockets soon. Call it after sending from code that is not
        a handler of this loop (a coroutine): a send may consume the edge of an (edge-triggered)
        zmq descriptor, and then only a poll notices the messages that arrived."""
        loop = self._aio_loop
        if loop is not None and not self._aio_scheduled:
            self._aio_scheduled = True
            loop.call_soon(self._aio_service)

    async def run_async(self) -> None:
        """Drive this loop from asyncio (an actor that also runs coroutines, e.g. a host).

        Each socket's descriptor calls ``_aio_service`` when it signals; that polls every socket
        with a zero timeout until none is ready (the descriptors are edge-triggered), runs due
        timers, and schedules itself for the nearest timer. Messages are handled in the
        descriptor's callback itself: no task switch between a message and its handler.
        """
        loop = asyncio.get_running_loop()
        self._aio_loop = loop
        self._aio_done = loop.create_future()
        for sock in self._handlers:
            loop.add_reader(_fd(sock), self._on_readable)
        self.poke()
        crashed = True
        try:
            await self._aio_done
            crashed = False
        finally:
            for sock in self._handlers:
                loop.remove_reader(_fd(sock))
            if self._aio_timer is not None:
                self._aio_timer.cancel()
            self._aio_loop = None
            try:
                if not crashed:
                    self.run_once(0)  # what had already arrived when STOP came is still handled
            finally:
                self._stopped()

    def _on_readable(self) -> None:
        """A socket's descriptor signalled: serve the sockets now (this is a loop callback)."""
        if not self._aio_scheduled:
            self._aio_service()

    def _aio_service(self) -> None:
        self._aio_scheduled = False
        try:
            while not self._stopping:
                ready = self._poller.poll(0)
                if ready:
                    self._dispatch(ready)
                    continue
                self._run_timers()
                if not self._spin():
                    break
        except Exception as exc:
            # A handler's bug ends the actor as it does under run(): asyncio would only log an
            # exception raised in its callback and carry on, with this loop's timers unarmed.
            self._stopping = True
            if self._aio_done is not None and not self._aio_done.done():
                self._aio_done.set_exception(exc)
            return
        if self._stopping:
            if self._aio_done is not None and not self._aio_done.done():
                self._aio_done.set_result(None)
            return
        self._arm_timer()

    def _arm_timer(self) -> None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers or self._aio_loop is None:
            return
        due = self._timers[0][0]
        if self._aio_timer is not None:
            if self._aio_timer_due <= due:
                return
            self._aio_timer.cancel()
        delay = max(0.0, due - self.clock.monotonic())
        self._aio_timer_due = due
        self._aio_timer = self._aio_loop.call_later(delay, self._on_aio_timer)

    def _on_aio_timer(self) -> None:
        self._aio_timer = None
        self._aio_service()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _next_timeout_ms(self) -> int:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return 1000
        delay = self._timers[0][0] - self.clock.monotonic()
        return max(0, min(1000, int(delay * 1000) + 1))

    def _run_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.due = now + timer.interval
                heapq.heappush(self._timers, (timer.due, next(self._seq), timer))
            timer.callback()

    def _spin(self) -> bool:
        """Whether a message arrived within ``spin_polls`` more polls (the loop found nothing)."""
        poll = self._poller.poll
        return any(poll(0) for _ in range(self.spin_polls))

    def run_once(self, timeout_ms: int | None = None) -> bool:
        """One poll-dispatch-timers turn (tests drive a loop with this); whether a socket had
        messages."""
        if timeout_ms is None:
            timeout_ms = self._next_timeout_ms()
        ready = self._poller.poll(timeout_ms)
        self._dispatch(ready)
        self._run_timers()
        return bool(ready)

    def _dispatch(self, ready: list[tuple[Any, int]]) -> None:
        for sock, _ in ready:
            handler = self._handlers.get(sock)
            if handler is None:
                continue
            batch = recv_ready(sock, self.max_batch)
            if batch:
                handler(batch)

    def run(self) -> None:
        try:
            idle_polls = spin_polls = self.spin_polls
            while not self._stopping:
                # After work, a few polls that do not wait before one that sleeps.
                busy = self.run_once(0 if idle_polls < spin_polls else None)
                idle_polls = 0 if busy else idle_polls + 1
            self.run_once(0)  # what had already arrived when STOP came is still handled
        finally:
            self._stopped()

    def _stopped(self) -> None:
        """The loop ended (stopped or crashed): the after-stop callbacks, then the sockets."""
        for callback in self._after_stop:
            callback()
        self.close()

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        self._handlers.clear()


def run_in_asyncio(loop: ActorLoop, cancel_grace_s: float = 2.0) -> None:
    """``asyncio.run(loop.run_async())``, but a shutdown that cannot hang on user code: the
    coroutines still running when the loop stops get ``cancel_grace_s`` to finish cancelling, and
    threads started with ``asyncio.to_thread`` are not waited for (``asyncio.run`` waits for
    them without limit, holding up every actor's ``on_stop`` behind a blocking call)."""
    aio = asyncio.new_event_loop()
    asyncio.set_event_loop(aio)
    try:
        aio.run_until_complete(loop.run_async())
    finally:
        try:
            pending = [task for task in asyncio.all_tasks(aio) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                aio.run_until_complete(asyncio.wait(pending, timeout=cancel_grace_s))
            aio.run_until_complete(aio.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            aio.close()  # the default executor is shut down without waiting


class Actor:
    """Base of every actor: ``setup`` wires sockets on the loop; ``stats`` explains the actor.

    An actor with ``uses_asyncio = True`` has its loop driven by asyncio (``run_async``), so its
    handlers may start coroutines on the running event loop.
    """

    name = "actor"
    uses_asyncio = False

    def setup(self, loop: ActorLoop) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}

    def on_stop(self) -> None:
        """Called in the actor's thread after the loop stopped; release resources here."""
