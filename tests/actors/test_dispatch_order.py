"""The order in which waiting work starts, in a real embedded scheduler.

* Groups never invert priorities: when a full group gets room, its next task competes by priority
  with everything else waiting, so a HIGH task of that group starts before a BACKGROUND one.
* Resuming after preemption: while a task at or above the preemption threshold runs, nothing less
  urgent starts; once none runs, the preempted tasks compete by priority again, ahead of pending
  tasks of the same priority.

Each executor blocks on a latch of its own that the test releases, so the order is decided by the
scheduler alone, never by how long a task happens to take.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from taskmill import Priority, Scheduler, TaskContext, TaskError, TaskSubmission
from tests.scheduler_support import EventRecorder, Latch, builder


class Gates:
    """One latch per task label, and who has stopped after a preemption (by label)."""

    def __init__(self) -> None:
        self.latches: defaultdict[str, Latch] = defaultdict(Latch)
        self.interrupted: list[str] = []
        self._stopped = threading.Condition()

    def release(self, *labels: str) -> None:
        for label in labels:
            self.latches[label].release()

    async def run(self, ctx: TaskContext) -> None:
        """The executor: report, then wait for this label's release or the task's token."""
        label = ctx.record.label
        ctx.progress.report(0.0, "started")
        if not await self.latches[label].wait(ctx):
            with self._stopped:
                self.interrupted.append(label)
                self._stopped.notify_all()
            raise TaskError("interrupted")  # preempted: comes back later, not failed

    def wait_interrupted(self, n: int, timeout: float = 10.0) -> bool:
        """Until ``n`` runs have stopped on their token (called in a thread)."""
        with self._stopped:
            return self._stopped.wait_for(lambda: len(self.interrupted) >= n, timeout)


def task(label: str, priority: Priority, group: str | None = None) -> TaskSubmission:
    return TaskSubmission("gated", key=label, priority=priority, group=group)


def started(events: EventRecorder) -> list[str]:
    """Labels in the order their tasks were dispatched (a resumed task appears again)."""
    return [e.label for e in events.of("dispatched")]


async def test_a_full_group_s_next_task_starts_by_priority_when_the_group_gets_room(
    tmp_path: Path,
) -> None:
    gates = Gates()
    scheduler = await (
        builder(tmp_path, gated=gates.run).max_concurrency(2).group_concurrency("g", 1).build()
    )
    await scheduler.submit_batch(
        [
            task("a", Priority.HIGH, "g"),
            task("b", Priority.HIGH, "g"),
            task("c", Priority.NORMAL),
            task("d", Priority.BACKGROUND),
        ]
    )
    events = await EventRecorder.start(scheduler)  # live before dispatching starts
    async with scheduler:
        await events.wait_count("progress", 2)
        # g admits one task: a takes it, and the other slot goes to the most urgent of the rest.
        assert sorted(started(events)) == ["a", "c"]
        gates.release("a")
        await events.wait_count("dispatched", 3)
        # a's slot and g's room free together: b (HIGH) outranks d (BACKGROUND).
        assert started(events)[2] == "b"
        gates.release("b", "c", "d")
        await events.wait_count("completed", 4)
        assert started(events)[3] == "d"
        await events.close()


async def running_labels(scheduler: Scheduler) -> set[str]:
    return {t.label for t in (await scheduler.snapshot()).running}


@pytest.mark.parametrize(
    "waiting",
    [
        [("bg0", Priority.BACKGROUND), ("bg1", Priority.BACKGROUND), ("bg2", Priority.BACKGROUND)],
        [("n3", Priority.NORMAL), ("bg", Priority.BACKGROUND)],  # paused first at equal priority
    ],
    ids=["background-waits", "paused-before-pending"],
)
async def test_preempted_tasks_resume_first_once_the_urgent_task_ends(
    tmp_path: Path, waiting: list[tuple[str, Priority]]
) -> None:
    gates = Gates()
    scheduler = await builder(tmp_path, gated=gates.run).max_concurrency(2).build()
    async with scheduler:
        events = await EventRecorder.start(scheduler)
        await scheduler.submit_batch([task("n1", Priority.NORMAL), task("n2", Priority.NORMAL)])
        await events.wait_count("progress", 2)
        await scheduler.submit_batch([task(label, priority) for label, priority in waiting])
        await scheduler.submit(task("rt", Priority.REALTIME))
        await events.wait_count("preempted", 2)
        assert {e.label for e in events.of("preempted")} == {"n1", "n2"}
        assert await asyncio.to_thread(gates.wait_interrupted, 2)
        await events.wait_for(lambda evs: "rt" in started(events))

        async def a_slot_is_free() -> None:
            """Until the Dispatcher counts rt alone (the victims' executors have returned), or
            something else started (each ask is a round trip to the Dispatcher)."""
            while len(started(events)) == 3 and await running_labels(scheduler) != {"rt"}:
                pass

        await asyncio.wait_for(a_slot_is_free(), 10)
        # Nothing less urgent than rt takes the free slot while it runs, pending or paused.
        assert started(events)[3:] == []
        gates.release("rt")
        await events.wait_for(lambda evs: len(started(events)) >= 5)
        order = started(events)
        assert sorted(order[:2]) == ["n1", "n2"] and order[2] == "rt"
        # Both slots go back to the preempted tasks, ahead of every task that only waited
        # (n3 is as urgent as they are, but pending, not paused).
        assert sorted(order[3:5]) == ["n1", "n2"]
        gates.release("n1", "n2", *(label for label, _ in waiting))
        await events.wait_count("completed", 3 + len(waiting))
        assert started(events)[5:] == [label for label, _ in waiting]
        assert not events.of("failed")
        await events.close()
