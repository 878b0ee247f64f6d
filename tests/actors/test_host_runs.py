"""The executor host as the Dispatcher sees it: what a run's result carries (the executor's
return value, the delay a ``TaskError`` asks for) and per-run time limits.

One real ``ExecutorHost`` in its thread over inproc; the test plays the Dispatcher on a ROUTER.
Time limits run on a fake clock: the test advances it and wakes the host with a harmless
message, so nothing waits for real time to pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import zmq

from actors.host.actor import MAX_RESULT_BYTES, ExecutorHost, HostSettings
from bus.clock import FakeClock
from bus.hosting import ActorThread
from bus.kinds import TaskResult, TaskRow
from bus.kinds_run import AckResults, CancelRuns, HostHeartbeat, HostHello, RunResults, RunTasks
from bus.protocol import Message, decode, encode
from bus.topology import Topology
from taskmill import TaskContext, TaskError
from taskmill.context import make_runner


class FakeDispatcher:
    """The host's peer: a ROUTER that sends runs and collects results."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.sock = context.socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.identity = b""
        self.next_run = 0

    def recv(self, timeout: float = 10.0) -> Message:
        """The next message but heartbeats (which the fake clock's jumps set off)."""
        while True:
            if not self.sock.poll(int(timeout * 1000)):
                raise TimeoutError("the host sent nothing")
            identity, *frames = self.sock.recv_multipart()
            self.identity = identity
            message = decode(frames)[0]
            if not isinstance(message, HostHeartbeat):
                return message

    def hello(self) -> HostHello:
        message = self.recv()
        assert isinstance(message, HostHello)
        return message

    def send(self, message: Message) -> None:
        self.sock.send_multipart([self.identity, *encode(message)])

    def run(self, task: TaskRow) -> None:
        self.next_run += 1
        self.send(RunTasks([task], [self.next_run]))

    def result(self) -> TaskResult:
        while True:
            message = self.recv()
            if isinstance(message, RunResults):
                [result] = message.results
                self.send(AckResults([result.run_id]))
                return result

    def poke(self) -> None:
        """Wake the host (it runs the timers that are due after handling any message)."""
        self.send(AckResults([]))


@dataclass
class Host:
    dispatcher: FakeDispatcher
    clock: FakeClock

    def later(self, seconds: float) -> None:
        """Move the host's clock on, and wake it so it runs what fell due."""
        self.clock.advance(seconds)
        self.dispatcher.poke()

    def assert_silent(self) -> None:
        """No result comes back (given a moment to arrive)."""
        with pytest.raises(TimeoutError):
            self.dispatcher.recv(timeout=0.2)

    def assert_timed_out(self, text: str) -> TaskResult:
        result = self.dispatcher.result()
        assert (result.outcome, result.error, result.retryable, result.result) == (
            "error", text, True, None,
        )  # fmt: skip
        return result


def _task(task_type: str, task_id: int = 1, **fields: Any) -> TaskRow:
    return TaskRow(task_id, task_type, "k" * 64, task_type, 128, "running", **fields)


@pytest.fixture
def host_for() -> Iterator[Any]:
    context: zmq.Context[Any] = zmq.Context()
    threads: list[ActorThread] = []
    sockets: list[zmq.Socket[bytes]] = []

    def start(executors: dict[str, Any], **settings: Any) -> Host:
        topology = Topology.inproc()
        dispatcher = FakeDispatcher(context, topology.hosts)
        sockets.append(dispatcher.sock)
        clock = FakeClock()
        host = ExecutorHost(
            {t: make_runner(e) for t, e in executors.items()},
            HostSettings(topology.hosts, topology.store, **settings),
            clock=clock,
        )
        threads.append(
            ActorThread(host, context, topology.host_control(host.settings.host_id), clock=clock)
        )
        threads[-1].start()
        dispatcher.hello()
        return Host(dispatcher, clock)

    yield start
    for thread in threads:
        thread.stop()
    for sock in sockets:
        sock.close(linger=0)
    context.term()


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (b"\x00raw", b"\x00raw"),
        ({"b": [1, 2.5], "a": None}, b'{"a":null,"b":[1,2.5]}'),
        ("text", b'"text"'),
        (None, None),
    ],
)
def test_a_return_value_travels_in_the_result(host_for: Any, value: Any, stored: Any) -> None:
    async def work(ctx: TaskContext) -> Any:
        return value

    host = host_for({"work": work})
    host.dispatcher.run(_task("work"))
    result = host.dispatcher.result()
    assert (result.outcome, result.result) == ("ok", stored)


def test_a_plain_function_returns_its_result_too(host_for: Any) -> None:
    def work(ctx: TaskContext) -> list[int]:
        return [1, 2, 3]

    host = host_for({"work": work})
    host.dispatcher.run(_task("work"))
    assert host.dispatcher.result().result == b"[1,2,3]"


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, "result: cannot encode result as JSON: object of type set"),
        (float("nan"), "result: cannot encode result as JSON"),
        (b"x" * (MAX_RESULT_BYTES + 1), f"result: {MAX_RESULT_BYTES + 1} bytes exceeds"),
        (["x" * MAX_RESULT_BYTES], f"result: {MAX_RESULT_BYTES + 4} bytes exceeds"),
    ],
)
def test_a_result_that_cannot_be_stored_fails_the_run_for_good(
    host_for: Any, value: Any, error: str
) -> None:
    async def work(ctx: TaskContext) -> Any:
        return value

    host = host_for({"work": work})
    host.dispatcher.run(_task("work"))
    result = host.dispatcher.result()
    assert (result.outcome, result.retryable, result.result) == ("error", False, None)
    assert result.error is not None and result.error.startswith(error)


def test_a_result_of_exactly_the_limit_is_kept(host_for: Any) -> None:
    async def work(ctx: TaskContext) -> bytes:
        return b"x" * MAX_RESULT_BYTES

    host = host_for({"work": work})
    host.dispatcher.run(_task("work"))
    result = host.dispatcher.result()
    assert result.outcome == "ok" and result.result is not None
    assert len(result.result) == MAX_RESULT_BYTES


def test_a_task_error_hands_its_retry_delay_to_the_store(host_for: Any) -> None:
    async def throttled(ctx: TaskContext) -> None:
        raise TaskError("429 from S3", retryable=True, retry_after=30.0)

    async def broken(ctx: TaskContext) -> None:
        raise TaskError("bad input", retry_after=30.0)  # permanent: no retry, so no delay

    async def flaky(ctx: TaskContext) -> None:
        raise TaskError.retryable("connection reset")

    host = host_for({"throttled": throttled, "broken": broken, "flaky": flaky})
    seen = {}
    for task_id, task_type in enumerate(("throttled", "broken", "flaky"), 1):
        host.dispatcher.run(_task(task_type, task_id))
        result = host.dispatcher.result()
        seen[task_type] = (result.error, result.retryable, result.retry_after_s)
    assert seen == {
        "throttled": ("429 from S3", True, 30.0),
        "broken": ("bad input", False, None),
        "flaky": ("connection reset", True, None),
    }


class Started:
    """Executors call ``started()`` first: the test moves the clock only once a run's deadline
    is set (the host sets it as the run starts)."""

    def __init__(self) -> None:
        self._runs = threading.Semaphore(0)

    def __call__(self) -> None:
        self._runs.release()

    def wait(self, n: int = 1) -> None:
        for _ in range(n):
            assert self._runs.acquire(timeout=10.0), "a run never started"


def test_a_run_past_its_timeout_is_cancelled_and_fails_retryably(host_for: Any) -> None:
    started = Started()

    async def slow(ctx: TaskContext) -> str:
        started()
        await ctx.token.wait()
        return "stopped when told"

    host = host_for({"slow": slow})
    host.dispatcher.run(_task("slow", timeout_s=2.5))
    started.wait()
    host.later(2.0)
    host.assert_silent()  # not yet: nothing comes back before the deadline
    host.later(0.75)  # past it (not onto it: sums of floats need not meet exactly)
    host.assert_timed_out("timed out after 2.5s")


def test_the_type_timeout_applies_unless_the_task_has_its_own(host_for: Any) -> None:
    started = Started()

    async def slow(ctx: TaskContext) -> None:
        started()
        await ctx.token.wait()

    host = host_for({"slow": slow}, task_timeouts={"slow": 1.0})
    host.dispatcher.run(_task("slow", 1))
    host.dispatcher.run(_task("slow", 2, timeout_s=5.0))
    started.wait(2)
    host.later(1.0)
    assert host.assert_timed_out("timed out after 1s").id == 1
    # Past the deadline, not onto it: 1.0 + 4.0 need not add up to the 5.0 the host added to
    # the same start time, in floating point.
    host.later(4.5)
    assert host.assert_timed_out("timed out after 5s").id == 2


def test_an_executor_that_ignores_its_token_is_abandoned_after_the_grace(
    host_for: Any,
) -> None:
    told = threading.Event()
    started = Started()

    async def stubborn(ctx: TaskContext) -> None:
        ctx.token.on_cancel(told.set)
        started()
        await asyncio.get_running_loop().create_future()  # never returns on its own

    host = host_for({"stubborn": stubborn}, cancel_grace_s=3.0)
    host.dispatcher.run(_task("stubborn", timeout_s=1.0))
    started.wait()
    host.later(1.0)
    assert told.wait(10.0)
    host.assert_silent()  # still running: the grace has not passed
    host.later(3.0)
    host.assert_timed_out("timed out after 1s")


def test_a_run_that_ends_in_time_is_not_touched_by_its_deadline(host_for: Any) -> None:
    async def quick(ctx: TaskContext) -> int:
        return 7

    host = host_for({"quick": quick})
    host.dispatcher.run(_task("quick", timeout_s=1.0))
    assert host.dispatcher.result().result == b"7"
    host.later(2.0)
    host.assert_silent()  # no second result for that run


def test_a_run_already_told_to_stop_is_not_timed_out_as_well(host_for: Any) -> None:
    stopping = threading.Event()
    release = threading.Event()
    started = Started()

    async def winding_down(ctx: TaskContext) -> None:
        started()
        await ctx.token.wait()
        stopping.set()
        await asyncio.to_thread(release.wait, 10.0)  # still cleaning up at its deadline
        raise TaskError("interrupted")

    host = host_for({"slow": winding_down})
    host.dispatcher.run(_task("slow", timeout_s=1.0))
    started.wait()
    host.dispatcher.send(CancelRuns([1]))  # preempted, say
    assert stopping.wait(10.0)
    host.later(1.0)
    host.dispatcher.poke()  # once more: the deadline's handler has certainly run
    release.set()
    result = host.dispatcher.result()
    assert (result.outcome, result.error) == ("cancelled", "interrupted")
