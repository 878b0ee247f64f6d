"""A tiny application for the system tests: a no-op executor, a sleepy one, a parent, and one
that returns its payload.

The actor processes load it as ``tests.system_app:app`` (or ``grouped_app``); the database path
comes from the deployment configuration (``TASKMILL_DATABASE``), overriding the default below.
"""

from __future__ import annotations

import asyncio
import contextlib

from taskmill import (
    Scheduler,
    SchedulerBuilder,
    TaskContext,
    TaskError,
    TaskExecutor,
    TaskSubmission,
)


async def noop(ctx: TaskContext) -> None:
    """Does nothing: measures the machinery, not the work."""


async def sleepy(ctx: TaskContext) -> None:
    """Sleeps ``{"seconds": s, "steps": n}`` in n steps (default 4), reporting progress after
    each; stops early (as interrupted) when its token is cancelled."""
    job = ctx.payload()
    seconds, steps = float(job["seconds"]), int(job.get("steps", 4))
    for step in range(steps):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.token.wait(), seconds / steps)
        if ctx.token.is_cancelled():
            raise TaskError("interrupted")
        ctx.progress.report_fraction(step + 1, steps, "sleeping")


async def parent(ctx: TaskContext) -> None:
    """Spawns one ``noop`` child, through the executor host's own connection to the Store."""
    await ctx.spawn_child(TaskSubmission("noop", key=f"child-of-{ctx.record.id}"))


async def echo(ctx: TaskContext) -> object:
    """Returns its payload: the task's result."""
    return ctx.payload()


class Careful(TaskExecutor):
    """Runs until its token is cancelled; when cancelled (not preempted) its ``on_cancel``
    submits a ``noop`` keyed ``cleaned-<id>``, so a test sees the hook ran in the worker."""

    async def execute(self, ctx: TaskContext) -> None:
        await ctx.token.wait()
        raise TaskError("interrupted")

    async def on_cancel(self, ctx: TaskContext) -> None:
        await ctx.submit(TaskSubmission("noop", key=f"cleaned-{ctx.record.id}"))


def app() -> SchedulerBuilder:
    return (
        Scheduler.builder()
        .store_path("system-app.db")
        .executor("noop", noop)
        .executor("sleepy", sleepy)
        .executor("parent", parent)
        .executor("echo", echo)
        .executor("careful", Careful())
        .max_concurrency(16)
    )


PINNED_GROUP = "pg"
"""The group ``grouped_app`` limits to ``PINNED_LIMIT`` running tasks."""

PINNED_LIMIT = 4


def grouped_app() -> SchedulerBuilder:
    """``app`` with one group limited by configuration, so a restarted GroupLimiter knows it."""
    return app().group_concurrency(PINNED_GROUP, PINNED_LIMIT)
