"""The Store's queries for dashboards: the queue's depth by priority and group, a task's active
children."""

from __future__ import annotations

import pytest
from store_support import sub

from actors.store.db import StoreDB
from bus.clock import FakeClock, now_ms
from bus.errors import InvalidRequest


def test_depth_counts_pending_tasks_by_priority_and_group(db: StoreDB, clock: FakeClock) -> None:
    outcomes = db.submit(
        [
            sub("a", 64, group_key="s3"),
            sub("b", 64, group_key="s3"),
            sub("c", 64),
            sub("d", 128, group_key="gcs"),
            sub("e", 128, group_key="azure"),
            sub("f", 192),
            sub("later", 64, due_at_ms=now_ms(clock) + 60_000),  # not due: not in the queue
        ]
    )
    assert db.depth() == [
        (64, None, 1),
        (64, "s3", 2),
        (128, "azure", 1),
        (128, "gcs", 1),
        (192, None, 1),
    ]
    db.claim([outcomes[0].id, outcomes[5].id])  # running: no longer waiting to run
    assert db.depth() == [(64, None, 1), (64, "s3", 1), (128, "azure", 1), (128, "gcs", 1)]


def test_children_are_the_active_rows_of_a_parent_oldest_first(db: StoreDB) -> None:
    [parent] = db.submit([sub("parent")])
    assert parent.id is not None
    db.claim([parent.id])
    kids = db.submit([sub(f"kid-{i}", parent_id=parent.id) for i in range(3)])
    db.submit([sub("stranger")])
    assert [row.id for row in db.children(parent.id)] == [k.id for k in kids]
    assert [row.label for row in db.children(parent.id, limit=2)] == ["kid-0", "kid-1"]
    assert db.children(424242) == []
    with pytest.raises(InvalidRequest):
        db.children(parent.id, limit=-1)
