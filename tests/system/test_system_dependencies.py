"""Task dependencies across processes: every actor its own OS process on ipc sockets, a client
in this one. A chain submitted in one batch runs in order; cancelling a dependency fails what
waits for it."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskmill import Client, HistoryStatus, SubmitOutcome, TaskSubmission
from tests.procfile_support import Deployment, deployed

pytestmark = [pytest.mark.system, pytest.mark.timeout(40)]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as deployment:
        yield deployment


def _id(outcome: SubmitOutcome) -> int:
    assert outcome.id is not None
    return outcome.id


def test_a_chain_runs_in_order_and_a_cancel_cascades(deployment: Deployment) -> None:
    deployment.start_actors(workers=("w1",))
    with Client(deployment.topology) as client:
        steps = [TaskSubmission("echo", key="step-0").payload_json(0)]
        for n in range(1, 5):
            steps.append(TaskSubmission("echo", key=f"step-{n}").payload_json(n))
            steps[-1].depends_on(steps[-2])
        ids = [_id(o) for o in client.submit_batch(list(reversed(steps)))][::-1]
        last = client.wait_result(ids[-1], timeout=20.0)
        assert last.status is HistoryStatus.COMPLETED
        runs = [client.result(i) for i in ids]
        for before, after in itertools.pairwise(runs):
            assert before is not None and after is not None
            assert after.started_at is not None and before.completed_at is not None
            assert after.started_at >= before.completed_at

        slow = _id(
            client.submit(
                TaskSubmission("sleepy", key="slow").payload_json({"seconds": 30}).run_after(3600.0)
            )
        )
        waiting = _id(client.submit(TaskSubmission("echo", key="after-slow").depends_on(slow)))
        assert client.task_dependencies(waiting) == [slow]
        assert client.task_dependents(slow) == [waiting]
        assert [t.id for t in client.blocked_tasks()] == [waiting]
        assert client.blocked_count() == 1 and client.snapshot().blocked_count == 1
        assert client.cancel(slow)
        failed = client.wait_result(waiting, timeout=20.0)
        assert failed.status is HistoryStatus.DEPENDENCY_FAILED
        assert client.blocked_count() == 0
    codes = deployment.stop_all()
    assert set(codes.values()) == {0}, codes
