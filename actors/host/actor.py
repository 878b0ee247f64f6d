"""The executor host actor: runs tasks the Dispatcher sends it, with the executors it hosts.

Owns: an asyncio event loop (async executors run on it), a thread pool (plain functions run in
it), a cancellation token per running task, and the byte counters executors record.

Sockets:
* DEALER to the Dispatcher's hosts ROUTER: ``host.hello`` at start, ``host.heartbeat`` every
  ``heartbeat_s`` (with this machine's readings when it samples), ``host.results`` and
  ``host.progress`` batched once per loop turn; receives ``host.welcome``, ``host.run`` and
  ``host.cancel``.
* DEALER to the Store (an ``AsyncRequester``), for tasks that submit work (children).

Many tasks are in flight at once; results that finish in the same loop turn go back in one
message. An executor that ignores its token is cancelled outright ``cancel_grace_s`` later.
A run with a time limit (the task's ``timeout_s``, else its type's in ``task_timeouts``) has its
token cancelled at the deadline and is abandoned after the same grace; it reports a retryable
error whatever the executor did after the deadline. A run's return value (bytes, encoded by
the runner) travels in its result, up to ``MAX_RESULT_BYTES``.
A scheduler that shuts down waits (``wait_until_idle``) up to ``STOP_GRACE_S`` for the runs it
cancelled before it stops the host, since stopping the loop cancels every coroutine at once.
A ``host.cancel`` with ``hook`` (the task was cancelled or superseded, not preempted) also starts
the executor's ``on_cancel`` (``cancel_hooks``), on a handle of its own, bounded by
``cancel_hook_timeout_s``; nobody waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import zmq

from actors.host.lag import LagWatch
from actors.host.progress import ReportedProgress
from bus.cancel import CancellationToken
from bus.client import AsyncRequester
from bus.clock import Clock, SystemClock, now_ms
from bus.errors import ActorUnavailable, ProtocolError, TaskError
from bus.kinds import Outcome, Submission, Submit, SubmitReply, TaskResult, TaskRow
from bus.kinds_run import (
    AckResults,
    CancelRuns,
    HostHeartbeat,
    HostHello,
    HostWelcome,
    RunProgress,
    RunResults,
    RunTasks,
)
from bus.limits import MAX_ERROR_CHARS, MAX_PAYLOAD_BYTES, cut_text
from bus.protocol import Message, decode, encode, send_frames
from bus.runtime import Actor, ActorLoop, Timer
from bus.server import MalformedLog

log = logging.getLogger("taskmill.worker")

SUBMIT_ATTEMPTS = 5
MAX_BYTES = 2**63 - 1
STOP_GRACE_S = 1.0
"""How long a scheduler that shuts down waits for the runs whose tokens it cancelled to end on
their own before it stops the host, whose loop then cancels what is left outright. An executor
that watches its token gets the time to stop cleanly; one that ignores it holds the shutdown
up by no more than this."""

MAX_RESULT_BYTES = MAX_PAYLOAD_BYTES
"""The largest result a run may return (1 MiB, as a payload); a larger one fails the run."""

T = TypeVar("T")
Runner = Callable[["RunHandle"], Awaitable[bytes | None]]
"""Runs one task (both phases): returns its encoded result (or None), or raises ``TaskError``
(whose ``retry_after``, when it has one, is the delay it asks for) / any exception."""
ReadMachine = Callable[[], Mapping[str, float]]
"""Samples this host's machine: its smoothed readings by name (``host.heartbeat`` ``readings``).
Called on the host's loop once per heartbeat, so it must return promptly."""


@dataclass(frozen=True, slots=True)
class HostSettings:
    hosts_endpoint: str
    store_endpoint: str
    capacity: int = 4
    host_id: str = field(default_factory=lambda: f"host-{uuid.uuid4().hex[:8]}")
    heartbeat_s: float = 1.0
    liveness: int = 3
    """Heartbeat intervals without a word from the Dispatcher before it is taken for lost."""
    reconnect_max_s: float = 32.0
    cancel_grace_s: float = 5.0
    store_timeout: float = 10.0
    threads: int | None = None
    machine: str = field(default_factory=socket.gethostname)
    """The machine this host runs on, named in the readings it reports (when it samples)."""
    task_timeouts: Mapping[str, float] = field(default_factory=dict)
    """The time limit of one run per task type (a task's own ``timeout_s`` wins)."""
    cancel_hook_timeout_s: float = 30.0
    """How long an executor's ``on_cancel`` may run before it is cancelled in turn."""


class RunHandle:
    """One task's run as the executor sees it; thread-safe where a worker thread may call."""

    def __init__(self, host: ExecutorHost, task: TaskRow, run_id: int) -> None:
        self.task = task
        self.run_id = run_id
        self.token = CancellationToken()
        self.loop = asyncio.get_running_loop()
        self._host = host
        self._lock = threading.Lock()
        self.bytes = [0, 0, 0, 0]
        self.reported = ReportedProgress()
        """What the run reported (on the host's thread only): sent once per loop turn."""
        self.deadline: Timer | None = None
        self.timed_out: float | None = None
        """The time limit the run exceeded (its token was cancelled for it), or None."""

    @property
    def phase(self) -> str:
        return self.task.phase

    def progress(self, percent: float, message: str | None) -> None:
        if threading.get_ident() == self._host.thread_id:
            self._host.report_progress(self, percent, message)
        else:
            self.loop.call_soon_threadsafe(self._host.report_progress, self, percent, message)

    def byte_progress(self, done: int, total: int | None) -> None:
        """Bytes done so far and, when known, in all (the reporter checked them)."""
        if threading.get_ident() == self._host.thread_id:
            self._host.report_bytes(self, done, total)
        else:
            self.loop.call_soon_threadsafe(self._host.report_bytes, self, done, total)

    def add_bytes(self, index: int, n: int) -> None:
        with self._lock:
            # Clamped to what SQLite's integers hold: a runaway counter must not poison results.
            self.bytes[index] = max(0, min(MAX_BYTES, self.bytes[index] + int(n)))

    async def submit(self, submissions: list[Submission]) -> list[Outcome]:
        """Submit (children) to the Store; retried with the same request id while the Store is
        unreachable (a restart), which the Store applies at most once."""
        request = Submit(submissions, request_id=uuid.uuid4().hex)
        delay = 0.1
        for attempt in range(SUBMIT_ATTEMPTS):
            try:
                reply = await self._host.store().call(request, SubmitReply)
                return reply.outcomes
            except ActorUnavailable as exc:
                if attempt == SUBMIT_ATTEMPTS - 1:
                    log.warning(
                        "host %s: task %d could not submit to the Store: %s",
                        self._host.settings.host_id,
                        self.task.id,
                        exc,
                    )
                    raise
                await asyncio.sleep(delay)  # back off before asking a restarting Store again
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def submit_from_thread(self, submissions: list[Submission]) -> list[Outcome]:
        """``submit`` for a plain-function executor running in a worker thread."""
        return asyncio.run_coroutine_threadsafe(self.submit(submissions), self.loop).result()

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.loop.run_in_executor(self._host.pool, fn, *args)

    def state(self, cls: type[T]) -> T | None:
        value = self._host.state.get(cls)
        return value if isinstance(value, cls) else None


def _canceller(task: asyncio.Task[None]) -> Callable[[], None]:
    def cancel() -> None:
        task.cancel()  # the executor ignored its token for the whole grace period

    return cancel


class ExecutorHost(Actor):
    name = "worker"
    uses_asyncio = True

    def __init__(
        self,
        runners: Mapping[str, Runner],
        settings: HostSettings,
        *,
        state: dict[type, object] | None = None,
        clock: Clock | None = None,
        read_machine: ReadMachine | None = None,
        cancel_hooks: Mapping[str, Runner] | None = None,
    ) -> None:
        self.runners = dict(runners)
        self.cancel_hooks = dict(cancel_hooks or {})
        """Per task type, the executor's ``on_cancel``: run when a run of that type is
        cancelled or superseded (``host.cancel`` with ``hook``)."""
        self._hooks: set[asyncio.Task[None]] = set()
        self.read_machine = read_machine
        """Set when this host reports its own machine's readings (on another machine than the
        ResourceMonitor's), so its tasks' IO budgets are judged by them."""
        self._sampling_failed = False
        self.settings = settings
        self.state: dict[type, object] = state if state is not None else {}
        self.clock = clock or SystemClock()
        self.pool = ThreadPoolExecutor(
            max_workers=settings.threads or max(1, settings.capacity),
            thread_name_prefix=f"taskmill-{settings.host_id}",
        )
        self.thread_id = 0
        self._runs: dict[int, tuple[RunHandle, asyncio.Task[None]]] = {}
        """Live runs by run id (a task preempted and resumed may briefly have two)."""
        self._idle = threading.Event()
        """Set while no run is live: another thread waits on it (``wait_until_idle``)."""
        self._idle.set()
        self._results: list[TaskResult] = []
        self._unacked: dict[int, TaskResult] = {}
        """Results sent but not yet committed by the Dispatcher: sent again after a reconnect."""
        self._progress: dict[int, RunHandle] = {}
        """Runs that reported progress this loop turn."""
        self._flush_scheduled = False
        self._store: AsyncRequester | None = None
        self._malformed = MalformedLog(f"host {settings.host_id}: from the Dispatcher")
        self.lag = LagWatch(self.clock)
        """Warns when a blocking call in an async executor holds the event loop."""
        self.counters = {
            "started": 0,
            "ok": 0,
            "errors": 0,
            "cancelled": 0,
            "malformed": 0,
            "reconnects": 0,
            "sampler_errors": 0,
            "timeouts": 0,
            "cancel_hooks": 0,
            "cancel_hook_failures": 0,
        }

    def register_state(self, obj: object) -> None:
        self.state[type(obj)] = obj

    def setup(self, loop: ActorLoop) -> None:
        self.loop = loop
        self.thread_id = threading.get_ident()
        self._backoff = self.settings.heartbeat_s
        self._connect()
        loop.call_every(self.settings.heartbeat_s, self._heartbeat)
        self.lag.clock = loop.clock  # the clock the loop's timers run on
        self.lag.start(loop)

    def _connect(self) -> None:
        """A fresh DEALER to the Dispatcher, then hello (Paranoid Pirate: a new socket drops
        whatever was queued for a Dispatcher that is gone)."""
        s = self.settings
        sock = self.loop.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, s.host_id.encode())
        sock.setsockopt(zmq.RECONNECT_IVL, int(s.heartbeat_s * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(s.reconnect_max_s * 1000))
        self.loop.connect(sock, s.hosts_endpoint)
        self.sock = sock
        self.loop.add_reader(sock, self._on_frames)
        self._last_heard = self.loop.clock.monotonic()
        self._hello()

    def _hello(self) -> None:
        s = self.settings
        runs = [(h.task.id, run_id) for run_id, (h, _) in self._runs.items()]
        self._send(
            HostHello(
                s.host_id,
                sorted(self.runners),
                s.capacity,
                [task_id for task_id, _ in runs],
                [run_id for _, run_id in runs],
            )
        )
        if self._unacked:  # a new Dispatcher (or connection) may never have seen these
            self._send(RunResults(s.host_id, list(self._unacked.values())))

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "running": len(self._runs),
            "unacknowledged": len(self._unacked),
            "loop_blocked": self.lag.blocked,
            "loop_blocked_longest_s": round(self.lag.longest_s, 3),
            "types": sorted(self.runners),
        }

    def on_stop(self) -> None:
        for handle, _ in self._runs.values():
            handle.token.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.close()

    def wait_until_idle(self, timeout: float) -> bool:
        """Block the calling thread (not the host's) until no run is live, or ``timeout``
        seconds: whether none is."""
        return self._idle.wait(timeout)

    def store(self) -> AsyncRequester:
        if self._store is None:
            endpoint = self.settings.store_endpoint
            self._store = AsyncRequester(
                self.loop.context,
                endpoint,
                timeout=self.settings.store_timeout,
                configure=self.loop.client_security(endpoint),  # CURVE on tcp, as every socket
            )
        return self._store

    # -- messages ----------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        if self.sock.closed:
            return  # stopping: the loop closed the socket before a scheduled flush ran
        try:
            send_frames(self.sock, encode(message))
        except zmq.Again:
            log.warning("dispatcher not reading; %s dropped", message.KIND)
        self.loop.poke()  # sent from a coroutine maybe: make sure no arrival goes unnoticed

    def _heartbeat(self) -> None:
        s = self.settings
        silent = self.loop.clock.monotonic() - self._last_heard
        if silent > max(s.liveness * s.heartbeat_s, self._backoff):
            # The Dispatcher is gone (or unreachable): reconnect, backing off 1 s doubling to 32 s.
            log.warning("dispatcher silent for %.1fs; reconnecting", silent)
            self.counters["reconnects"] += 1
            self._backoff = min(self._backoff * 2, s.reconnect_max_s)
            self.loop.remove_reader(self.sock)
            self.loop.close_socket(self.sock)
            self._connect()
            return
        running = sorted({handle.task.id for handle, _ in self._runs.values()})
        self._send(HostHeartbeat(s.host_id, running, self._readings(), s.machine))

    def _readings(self) -> dict[str, float]:
        """This machine's readings for the heartbeat; none when the host does not sample, or
        when sampling failed (the Dispatcher then lets them expire)."""
        if self.read_machine is None:
            return {}
        try:
            readings = dict(self.read_machine())
        except Exception:  # the first failure in a row with its traceback, then quietly
            self.counters["sampler_errors"] += 1
            level = logging.DEBUG if self._sampling_failed else logging.WARNING
            log.log(level, "sampling this machine failed", exc_info=True)
            self._sampling_failed = True
            return {}
        self._sampling_failed = False
        return readings

    def _on_frames(self, batch: list[list[bytes]]) -> None:
        self._last_heard = self.loop.clock.monotonic()
        self._backoff = self.settings.heartbeat_s
        for frames in batch:
            try:
                message, _ = decode(frames)
            except ProtocolError as exc:
                self.counters["malformed"] += 1
                self._malformed.note(exc, self.loop.clock.monotonic())
                continue
            if isinstance(message, RunTasks):
                run_ids = message.run_ids or [0] * len(message.tasks)
                for task, run_id in zip(message.tasks, run_ids, strict=False):
                    self._start(task, run_id)
            elif isinstance(message, CancelRuns):
                for task_id in message.ids:
                    self._cancel(task_id, hook=message.hook is True)
            elif isinstance(message, AckResults):
                for run_id in message.run_ids:
                    self._unacked.pop(run_id, None)
            elif isinstance(message, HostWelcome):
                if not message.known:
                    self._hello()  # a restarted Dispatcher learns what this host runs
            else:
                self.counters["malformed"] += 1
                self._malformed.note(f"a {message.KIND} message", self.loop.clock.monotonic())

    # -- running -----------------------------------------------------------------------------

    def _start(self, task: TaskRow, run_id: int) -> None:
        if run_id in self._runs:
            return  # a duplicate delivery: that run is already under way
        handle = RunHandle(self, task, run_id)
        runner = asyncio.ensure_future(self._run(handle))
        self._runs[run_id] = (handle, runner)
        self._idle.clear()
        self.counters["started"] += 1
        limit = task.timeout_s or self.settings.task_timeouts.get(task.task_type)
        if limit:
            handle.deadline = self.loop.call_later(limit, self._time_out(handle, runner, limit))

    def _time_out(
        self, handle: RunHandle, runner: asyncio.Task[None], limit: float
    ) -> Callable[[], None]:
        def time_out() -> None:
            if self._runs.get(handle.run_id, (None,))[0] is not handle:
                return  # the run ended just before its deadline
            if handle.token.is_cancelled():
                return  # already told to stop (preempted, cancelled): that is how it ends
            log.info("task %d timed out after %gs; cancelling it", handle.task.id, limit)
            self.counters["timeouts"] += 1
            handle.timed_out = limit
            handle.token.cancel()
            self.loop.call_later(self.settings.cancel_grace_s, _canceller(runner))

        return time_out

    def _cancel(self, task_id: int, hook: bool = False) -> None:
        for handle, runner in list(self._runs.values()):
            if handle.task.id == task_id and not handle.token.is_cancelled():
                handle.token.cancel()
                self.loop.call_later(self.settings.cancel_grace_s, _canceller(runner))
                on_cancel = self.cancel_hooks.get(handle.task.task_type) if hook else None
                if on_cancel is not None:  # once: a run's token is cancelled only once
                    hooked = asyncio.ensure_future(self._run_hook(on_cancel, handle))
                    self._hooks.add(hooked)
                    hooked.add_done_callback(self._hooks.discard)

    async def _run_hook(self, on_cancel: Runner, cancelled: RunHandle) -> None:
        """Run an executor's ``on_cancel`` beside the cancelled run, on a handle of its own
        (a fresh token, cancelled with the hook when it overruns ``cancel_hook_timeout_s``).
        Nobody waits for it: what it raises is logged and counted."""
        handle = RunHandle(self, cancelled.task, cancelled.run_id)
        self.counters["cancel_hooks"] += 1
        try:
            await asyncio.wait_for(on_cancel(handle), self.settings.cancel_hook_timeout_s)
        except TimeoutError:
            handle.token.cancel()
            self.counters["cancel_hook_failures"] += 1
            log.warning(
                "task %d: on_cancel still running after %gs; cancelled",
                cancelled.task.id,
                self.settings.cancel_hook_timeout_s,
            )
        except Exception:
            self.counters["cancel_hook_failures"] += 1
            log.exception("task %d: on_cancel failed", cancelled.task.id)

    async def _run(self, handle: RunHandle) -> None:
        task = handle.task
        runner = self.runners.get(task.task_type)
        outcome, error, retryable = "ok", None, False
        result: bytes | None = None
        retry_after: float | None = None
        try:
            if runner is None:
                raise TaskError(f"no executor registered for type '{task.task_type}'")
            result = await runner(handle)
            if result is not None and len(result) > MAX_RESULT_BYTES:
                raise TaskError(
                    f"result: {len(result)} bytes exceeds the {MAX_RESULT_BYTES}-byte limit"
                )
        except asyncio.CancelledError:
            outcome = "cancelled"
        except TaskError as exc:
            outcome, error, retryable = "error", exc.message, bool(exc.retryable)
            # A ``taskmill.TaskError`` may carry the delay it asks for before the retry.
            retry_after = getattr(exc, "retry_after", None) if retryable else None
        except BaseException as exc:  # SystemExit from user code must not kill the host
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
        if handle.deadline is not None:
            handle.deadline.cancel()
        if handle.timed_out is not None:
            # Whatever the executor did once its deadline passed, the run took too long.
            outcome, error, retryable = "error", f"timed out after {handle.timed_out:g}s", True
            retry_after = None
        elif outcome == "error" and handle.token.is_cancelled():
            outcome = "cancelled"  # raised because it was told to stop: not a failure
        if outcome != "ok":
            result = None
        if error is not None:  # a megabyte message would not fit the host's result batch
            error = cut_text(error, MAX_ERROR_CHARS)
        self.counters[{"ok": "ok", "error": "errors", "cancelled": "cancelled"}[outcome]] += 1
        self._runs.pop(handle.run_id, None)
        if not self._runs:
            self._idle.set()
        r, w, rx, tx = handle.bytes
        self._results.append(
            TaskResult(
                task.id,
                outcome,
                error,
                retryable,
                task.phase,
                r,
                w,
                rx,
                tx,
                now_ms(self.clock),
                handle.run_id,
                retry_after,
                result,
            )
        )
        self._schedule_flush()

    def report_progress(self, handle: RunHandle, percent: float, message: str | None) -> None:
        if handle.run_id in self._runs:
            handle.reported.fraction(percent, message, now_ms(self.clock))
            self._progress[handle.run_id] = handle
            self._schedule_flush()

    def report_bytes(self, handle: RunHandle, done: int, total: int | None) -> None:
        if handle.run_id in self._runs:
            handle.reported.bytes(done, total, now_ms(self.clock))
            self._progress[handle.run_id] = handle
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._progress:
            handles, self._progress = list(self._progress.values()), {}
            now = self.clock.monotonic()
            items = [h.reported.row(h.task.id, h.run_id, now) for h in handles]
            self._send(RunProgress(self.settings.host_id, items))
        if self._results:
            results, self._results = self._results, []
            for result in results:
                self._unacked[result.run_id] = result
            self._send(RunResults(self.settings.host_id, results))
