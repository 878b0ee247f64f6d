"""Test-wide setup."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401  (imported up front; see below)
import pytest
import zmq
from scheduler_support import Latches
from store_support import open_db

from actors.store.db import StoreDB
from bus.clock import FakeClock

# CPython 3.11 before 3.11.8 (gh-106905) can raise "SystemError: AST constructor recursion depth
# mismatch" when a module is compiled while the garbage collector runs finalizers in the middle of
# it. pytest compiles lazily imported modules (the hypothesis plugin imports hypothesis at the end
# of a session) with assertion rewriting, so import it before any test starts, and collect garbage
# between tests, never during a compile.


@pytest.fixture(autouse=True)
def _collect_garbage_between_tests() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves by hand."""
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path, clock: FakeClock) -> Iterator[StoreDB]:
    """A Store database on a file under ``tmp_path``, on ``clock``, closed after the test."""
    store = open_db(tmp_path, clock)
    yield store
    store.close()


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for one test, terminated after it: hangs (and times out) if the test
    leaked a socket."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.term()


_TIERS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests in ``tests/system`` (real processes and servers) carry the ``system`` mark, so
    ``-m "not system"`` leaves them out."""
    for item in items:
        if item.path.is_relative_to(_TIERS / "system"):
            item.add_marker(pytest.mark.system)


@pytest.fixture
async def latches() -> AsyncIterator[Latches]:
    """Executors the test releases, one latch per task label (``Latches.run``); all released at
    the end, so no executor outlives the test."""
    latches = Latches()
    yield latches
    latches.release_all()
