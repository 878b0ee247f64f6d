"""The Store actor's part in superseding: what a submission supersedes reaches the Dispatcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq
from store_support import StoreEndpoints, running_store, store_endpoints, sub
from test_store_actor import WAIT, Watcher

from bus.client import RequestClient
from bus.clock import FakeClock
from bus.kinds import Claim, Submit, SubmitReply, TasksReply


@pytest.fixture(params=["inproc", "ipc"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> StoreEndpoints:
    return store_endpoints(request.param, tmp_path)


def test_a_supersede_is_notified_with_its_transitions_even_while_a_notice_is_unanswered(
    context: zmq.Context[Any], store_at: StoreEndpoints, tmp_path: Path
) -> None:
    endpoints = store_at
    with running_store(context, endpoints, tmp_path, clock=FakeClock(), urgent_priority=0):
        store = RequestClient(context, endpoints.store, timeout=WAIT)
        watcher = Watcher(context, endpoints.store)
        try:
            [old] = store.call(Submit([sub("a", tags={"t": "1"})]), SubmitReply).outcomes
            assert old.id is not None
            store.call(Claim([old.id]), TasksReply)  # running now
            watcher.look()
            store.call(Submit([sub("b", 100)]), SubmitReply)
            assert watcher.next_note() is not None  # unanswered from here on
            store.call(Submit([sub("c", 110)]), SubmitReply)  # folded into it: no note
            reply = store.call(Submit([sub("a", 120, on_duplicate="supersede")]), SubmitReply)
            [outcome] = reply.outcomes
            assert (outcome.kind, outcome.replaced_id) == ("superseded", old.id)
            note = watcher.next_note()
            assert note is not None and note.count == 1
            [change] = note.transitions
            assert (change.id, change.result, change.was_running) == (old.id, "superseded", True)
            assert (change.new_task_id, change.tags) == (outcome.id, {"t": "1"})
            assert reply.transitions == note.transitions
            assert watcher.next_note(0.2) is None
        finally:
            watcher.close()
            store.close()
