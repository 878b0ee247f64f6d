"""Executors and the ``TaskContext`` they receive; the adapter an executor host runs them with."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, overload

from actors.host.actor import RunHandle, Runner
from bus.cancel import CancellationToken
from bus.errors import SerializationError
from taskmill.payload import decode_payload
from taskmill.progress import ProgressReporter
from taskmill.records import SubmitOutcome, TaskRecord
from taskmill.retry import TaskError
from taskmill.task import TaskSubmission, canonical_json
from taskmill.typed import TypedTask

T = TypeVar("T")

__all__ = [
    "TaskContext",
    "TaskExecutor",
    "cancel_hooks",
    "encode_result",
    "make_cancel_hook",
    "make_runner",
]


class TaskContext:
    """What an executor gets for one task: its record, token, progress, payload, IO counters."""

    def __init__(self, handle: RunHandle) -> None:
        self._handle = handle
        self._record: TaskRecord | None = None
        self.token: CancellationToken = handle.token
        """Cancelled when the task is preempted, cancelled or the scheduler shuts down."""
        self.progress = ProgressReporter(handle.progress, handle.byte_progress)
        """``ctx.progress.report(0.5, "resizing")`` or ``ctx.progress.add_bytes(n)``: published
        as ``Progress`` events."""

    @property
    def record(self) -> TaskRecord:
        """The task's ``TaskRecord`` as it was dispatched."""
        if self._record is None:
            self._record = TaskRecord.from_row(self._handle.task)
        return self._record

    @property
    def phase(self) -> str:
        """``"execute"`` or ``"finalize"``."""
        return self._handle.phase

    @overload
    def payload(self, cls: None = None) -> Any: ...
    @overload
    def payload(self, cls: type[T]) -> T: ...
    def payload(self, cls: type[Any] | None = None) -> Any:
        """The JSON payload decoded into ``cls`` (a dataclass), or as dict/list without one."""
        return decode_payload(self._handle.task.payload, cls)

    @property
    def raw_payload(self) -> bytes | None:
        return self._handle.task.payload

    def state(self, cls: type[T]) -> T | None:
        """Shared app state registered by type (``app_state``/``register_state``), or None."""
        return self._handle.state(cls)

    def record_read_bytes(self, n: int) -> None:
        self._handle.add_bytes(0, n)

    def record_write_bytes(self, n: int) -> None:
        self._handle.add_bytes(1, n)

    def record_net_rx_bytes(self, n: int) -> None:
        self._handle.add_bytes(2, n)

    def record_net_tx_bytes(self, n: int) -> None:
        self._handle.add_bytes(3, n)

    async def spawn_child(self, submission: TaskSubmission) -> SubmitOutcome:
        """Submit a child of this task (the parent waits for it before ``finalize``).

        A child takes no priority of its parent's, except what aging added: when this run was
        dispatched at a priority aging raised above the task's own, a child submitted without
        a priority of its own (or a typed task at its type's) starts at the more urgent of the
        two, so that the parent's wait is not lost to its children."""
        return (await self.spawn_children([submission]))[0]

    async def spawn_children(self, submissions: Sequence[TaskSubmission]) -> list[SubmitOutcome]:
        """Submit several children in one transaction (priorities as ``spawn_child``)."""
        parent = self._handle.task
        aged = parent.effective_priority
        if aged is not None and aged >= parent.priority:
            aged = None
        wire = []
        # Children may depend on each other: each is named by its place in this batch.
        positions = {id(submission): i for i, submission in enumerate(submissions)}
        for submission in submissions:
            child = submission.copy()
            child.parent_id = parent.id
            if aged is not None and not child._priority_given and aged < child.priority_level:
                child.priority(aged)
            wire.append(child.to_wire(None, positions))
        return [SubmitOutcome.from_wire(o) for o in await self._handle.submit(wire)]

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome:
        """Submit an independent task (no parent)."""
        outcomes = await self._handle.submit([submission.to_wire()])
        return SubmitOutcome.from_wire(outcomes[0])

    async def submit_typed(self, task: TypedTask) -> SubmitOutcome:
        return await self.submit(task.to_submission())


class TaskExecutor:
    """Base class of executors: implement ``execute``; ``finalize`` runs after all children.

    What either returns is the task's result (a parent's: its ``finalize``'s), kept in its
    history row: ``bytes`` as they are, anything else as JSON (see ``encode_result``).
    """

    async def execute(self, ctx: TaskContext) -> Any:
        raise NotImplementedError

    async def finalize(self, ctx: TaskContext) -> Any:
        """Called once all children spawned by ``execute`` have finished (none failed)."""

    # An executor may also define ``async def on_cancel(self, ctx)``: called once when its
    # running task is cancelled or superseded (not when preempted or stopped by a shutdown),
    # beside the run whose token was cancelled, on a context with a fresh token, within the
    # builder's ``cancel_hook_timeout``. Not defined here, so the host knows who has one.


ExecutorLike = TaskExecutor | Callable[[TaskContext], Any] | Any


def encode_result(value: object) -> bytes | None:
    """An executor's return value as stored: None stays None, bytes stay as they are, anything
    else is JSON (dataclasses as their fields). A value JSON cannot encode is a permanent
    failure of the run (``TaskError``, message ``result: ...``); so is one over 1 MiB, which the
    executor host refuses."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    try:
        return canonical_json(value, "result")
    except SerializationError as exc:
        raise TaskError(f"result: {exc}") from None


def _phase_fn(executor: ExecutorLike, phase: str) -> Callable[[TaskContext], Any] | None:
    if phase == "finalize":
        fn = getattr(executor, "finalize", None)
        return fn if callable(fn) else None
    execute = getattr(executor, "execute", None)
    if callable(execute):
        return execute  # type: ignore[no-any-return]
    if callable(executor):
        return executor
    raise TypeError(f"{executor!r} is neither a TaskExecutor nor a callable")


def make_runner(executor: ExecutorLike) -> Runner:
    """Wrap an executor (a ``TaskExecutor``, an ``async def f(ctx)`` or a plain ``def f(ctx)``)
    as the runner an executor host calls; plain functions run in the host's worker threads."""
    _phase_fn(executor, "execute")  # fail at registration, not at the first task

    async def run(handle: RunHandle) -> bytes | None:
        fn = _phase_fn(executor, handle.phase)
        if fn is None:
            return None
        ctx = TaskContext(handle)
        if inspect.iscoroutinefunction(fn):
            return encode_result(await fn(ctx))
        result = await handle.in_thread(fn, ctx)
        if inspect.isawaitable(result):
            result = await result
        return encode_result(result)

    return run


def cancel_hooks(executors: Mapping[str, ExecutorLike]) -> dict[str, Runner]:
    """The ``on_cancel`` of each task type whose executor has one."""
    hooks = {task_type: make_cancel_hook(e) for task_type, e in executors.items()}
    return {task_type: hook for task_type, hook in hooks.items() if hook is not None}


def make_cancel_hook(executor: ExecutorLike) -> Runner | None:
    """The executor's ``on_cancel`` as the executor host calls it, or None without one."""
    fn = getattr(executor, "on_cancel", None)
    if not callable(fn):
        return None

    async def on_cancel(handle: RunHandle) -> bytes | None:
        ctx = TaskContext(handle)
        if inspect.iscoroutinefunction(fn):
            await fn(ctx)
            return None
        result = await handle.in_thread(fn, ctx)
        if inspect.isawaitable(result):
            await result
        return None

    return on_cancel
