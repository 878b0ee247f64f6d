"""A scheduler process for the crash tests: runs slow tasks until it is killed.

    python -m tests.crash_app <database> <run dir> [--submit]

It prints ``ready`` once it runs (so the test can subscribe to its events over ipc), then
dispatches forever. With ``--submit`` it also submits tasks one by one (``s0``, ``s1``, …) and
prints ``acked <key> <id>`` as soon as each submission is acknowledged.
"""

from __future__ import annotations

import asyncio
import sys

from taskmill import CancellationToken, Scheduler, TaskContext, TaskSubmission


async def slow(ctx: TaskContext) -> None:
    ctx.progress.report(0.5, "working")
    await asyncio.wait_for(ctx.token.wait(), 0.05 + (ctx.record.id % 5) * 0.02)


async def work(ctx: TaskContext) -> None:
    try:
        await slow(ctx)
    except TimeoutError:
        return  # finished its "work" without being cancelled


async def submit_forever(scheduler: Scheduler) -> None:
    number = 0
    while True:
        key = f"s{number}"
        outcome = await scheduler.submit(TaskSubmission("work", key=key))
        print(f"acked {key} {outcome.id}", flush=True)
        number += 1


async def main(database: str, run_dir: str, submit: bool) -> None:
    scheduler = await (
        Scheduler.builder()
        .store_path(database)
        .run_dir(run_dir)
        .executor("work", work)
        .max_concurrency(4)
        .build()
    )
    token = CancellationToken()
    print("ready", flush=True)
    if submit:
        await asyncio.gather(scheduler.run(token), submit_forever(scheduler))
    else:
        await scheduler.run(token)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--submit" in sys.argv[3:]))
