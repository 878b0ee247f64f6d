"""CURVE on tcp: listed client keys get answers; a wrong or missing key gets nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from actors.store.actor import StoreActor
from actors.store.db import StoreDB
from bus.client import RequestClient
from bus.clock import SystemClock
from bus.endpoints import tcp
from bus.errors import ActorUnavailable
from bus.hosting import ActorThread
from bus.kinds import Counts, CountsReply, Ping
from bus.security import CurveSecurity, generate_keys, load_authorized, start_authenticator
from tests.procfile_support import free_port


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[zmq.Context[Any], str, Path]]:
    keys = generate_keys(tmp_path / "keys")
    context: zmq.Context[Any] = zmq.Context()
    auth = start_authenticator(context, keys / "authorized")
    endpoint = tcp("127.0.0.1", free_port())
    security = CurveSecurity.from_directory(keys)

    def open_db() -> StoreDB:
        return StoreDB(str(tmp_path / "t.db"), clock=SystemClock())

    store = StoreActor(open_db, endpoint)
    thread = ActorThread(store, context, tcp("127.0.0.1", free_port()), security=security).start()
    try:
        yield context, endpoint, keys
    finally:
        thread.stop()
        auth.stop()
        context.destroy(linger=0)


def test_generated_keys_are_private_and_the_client_is_authorized(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "k")
    assert (keys.stat().st_mode & 0o777) == 0o700
    assert (keys / "server.key_secret").stat().st_mode & 0o077 == 0
    public = CurveSecurity.from_directory(keys).client_public
    assert load_authorized(keys / "authorized") == {public}


def test_a_listed_client_key_is_answered(deployment: tuple[zmq.Context[Any], str, Path]) -> None:
    context, endpoint, keys = deployment
    security = CurveSecurity.from_directory(keys)
    client = RequestClient(
        context, endpoint, timeout=5, configure=security.configure_client(endpoint)
    )
    try:
        assert client.call(Counts(), CountsReply) == CountsReply(0, 0, 0, 0)
    finally:
        client.close()


def test_a_wrong_key_gets_nothing_and_is_logged(
    deployment: tuple[zmq.Context[Any], str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context, endpoint, keys = deployment
    stranger = generate_keys(tmp_path / "stranger")
    # The right server key, but a client key the server never listed.
    intruder = CurveSecurity.from_directory(stranger)
    intruder = CurveSecurity(
        CurveSecurity.from_directory(keys).server_public,
        b"",
        intruder.client_public,
        intruder.client_secret,
    )
    caplog.set_level(logging.WARNING, logger="taskmill.security")
    client = RequestClient(
        context, endpoint, timeout=0.5, configure=intruder.configure_client(endpoint)
    )
    try:
        with pytest.raises(ActorUnavailable):
            client.request(Ping())
    finally:
        client.close()
    assert any("refused a CURVE connection" in r.message for r in caplog.records)


def test_a_plain_client_gets_nothing(deployment: tuple[zmq.Context[Any], str, Path]) -> None:
    context, endpoint, _ = deployment
    client = RequestClient(context, endpoint, timeout=0.5)
    try:
        with pytest.raises(ActorUnavailable):
            client.request(Ping())
    finally:
        client.close()
