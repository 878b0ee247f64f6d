"""The actor loop's short spin: after its last message a loop polls a few more times without
waiting (the next message of a busy peer usually comes within them), then sleeps. An idle loop
must never keep polling: that would burn a core while the scheduler has nothing to do."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
import zmq

from bus.endpoints import inproc, new_namespace
from bus.runtime import SPIN_POLLS, ActorLoop

WAIT = 5.0


class RecordingPoller:
    """The loop's poller, recording each poll's timeout; ``slept`` is set by a waiting poll."""

    def __init__(self, inner: zmq.Poller) -> None:
        self.inner = inner
        self.timeouts: list[int] = []
        self.ready: list[int] = []
        """Indexes (into ``timeouts``) of the polls that found a message."""
        self.slept = threading.Event()

    def poll(self, timeout: int) -> list[tuple[Any, int]]:
        self.timeouts.append(timeout)
        index = len(self.timeouts) - 1
        if timeout != 0:
            self.slept.set()
        found = self.inner.poll(timeout)
        if found:
            self.ready.append(index)
        return found


def polls_around_one_message(context: zmq.Context[Any], loop: ActorLoop) -> list[int]:
    """Run ``loop`` (in a thread) until it sleeps, send it one message, wait until it sleeps
    again; the timeouts of its polls from the one that found the message on."""
    endpoint = inproc(new_namespace(), loop.name)
    pull = loop.socket(zmq.PULL)
    loop.bind(pull, endpoint)
    handled = threading.Event()
    loop.add_reader(pull, lambda batch: handled.set())
    poller = RecordingPoller(loop._poller)
    loop._poller = poller  # type: ignore[assignment]
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    runner = threading.Thread(target=loop.run, name=loop.name)
    runner.start()
    try:
        assert poller.slept.wait(WAIT)  # idle from the start: the first poll already waits
        assert poller.timeouts[0] == 1000
        poller.slept.clear()
        push.send(b"work")
        assert handled.wait(WAIT)
        assert poller.slept.wait(WAIT)  # and asleep again
        [found] = poller.ready
        timeouts = poller.timeouts[found:]
    finally:
        loop.stop()
        push.send(b"wake")  # the sleeping poll returns and the loop sees it must stop
        runner.join(WAIT)
        push.close(linger=0)
    assert not runner.is_alive()
    return timeouts


def test_after_a_message_the_loop_polls_a_few_times_then_sleeps(
    context: zmq.Context[Any],
) -> None:
    loop = ActorLoop(context, "spin")
    loop.spin_polls = SPIN_POLLS  # as on a machine with several CPUs, whatever runs this test
    timeouts = polls_around_one_message(context, loop)
    assert timeouts[1 : 2 + SPIN_POLLS] == [0] * SPIN_POLLS + [1000]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_a_loop_confined_to_one_cpu_sleeps_right_after_its_last_message(
    context: zmq.Context[Any],
) -> None:
    # Spinning there only keeps the sender, which needs that very CPU, from running.
    made: list[ActorLoop] = []

    def make() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # this thread only
        made.append(ActorLoop(context, "pinned"))

    maker = threading.Thread(target=make)
    maker.start()
    maker.join(WAIT)
    assert made, "no loop was built in a thread confined to one CPU"
    [loop] = made
    assert loop.spin_polls == 0
    timeouts = polls_around_one_message(context, loop)
    assert timeouts[1:2] == [1000]
