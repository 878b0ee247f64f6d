"""CURVE authentication and encryption for tcp endpoints (libsodium ships inside pyzmq's wheels).

A deployment has one server key pair (every bound tcp socket uses it) and any number of client
key pairs; a server accepts only the client public keys listed in its authorized directory, and
logs every refusal. ``inproc`` and ``ipc`` endpoints are left alone: ipc is protected by the
0700 run directory, inproc never leaves the process.

Key files are ZeroMQ certificates (``zmq.auth.create_certificates``): ``<name>.key`` holds the
public key, ``<name>.key_secret`` both. ``generate_keys(directory)`` writes ``server`` and
``client`` pairs and an ``authorized/`` directory holding the client's public key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("taskmill.security")

ZAP_DOMAIN = "taskmill"


def _tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


@dataclass(frozen=True, slots=True)
class CurveSecurity:
    """Socket configuration for one process: its server pair, its client pair, the server key."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_directory(
        cls, directory: str | Path, *, client: str = "client", server: str = "server"
    ) -> CurveSecurity:
        """Load ``<server>.key_secret`` and ``<client>.key_secret`` from ``directory``.

        A process that only connects (a client) needs the server's public key (``server.key``)
        and its own pair; one that binds needs the server's secret too.
        """
        base = Path(directory)
        client_public, client_secret = zmq.auth.load_certificate(base / f"{client}.key_secret")
        server_file = base / f"{server}.key_secret"
        if not server_file.exists():
            server_file = base / f"{server}.key"
        server_public, server_secret = zmq.auth.load_certificate(server_file)
        if client_secret is None:
            raise ValueError(f"{base / client}.key_secret holds no secret key")
        return cls(server_public, server_secret or b"", client_public, client_secret)

    def server(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        if not _tcp(endpoint):
            return
        if not self.server_secret:
            raise ValueError("binding a tcp endpoint needs the server's secret key")
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.server_secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    def client(self, sock: zmq.Socket[Any], endpoint: str) -> None:
        if not _tcp(endpoint):
            return
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.client_secret)

    def configure_client(self, endpoint: str) -> Any:
        """A ``configure`` callable for the request clients and subscriptions of ``bus``."""

        def configure(sock: zmq.Socket[Any]) -> None:
            self.client(sock, endpoint)

        return configure


class _AuthorizedKeys:
    """ZAP credentials callback: accept listed client keys, log every refusal."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys = load_authorized(directory)

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        log.warning(
            "refused a CURVE connection (domain %s): client key %s is not in %s",
            domain,
            key.decode(errors="replace"),
            self.directory,
        )
        return False


def load_authorized(directory: str | Path) -> set[bytes]:
    keys: set[bytes] = set()
    for path in sorted(Path(directory).glob("*.key")):
        public, _ = zmq.auth.load_certificate(path)
        keys.add(public)
    return keys


def start_authenticator(context: zmq.Context[Any], authorized: str | Path) -> ThreadAuthenticator:
    """Start the ZAP handler of ``context``: servers accept only keys in ``authorized``."""
    auth = ThreadAuthenticator(context, log=logging.getLogger("taskmill.security.zap"))
    auth.start()
    auth.configure_curve_callback(
        ZAP_DOMAIN, credentials_provider=_AuthorizedKeys(Path(authorized))
    )
    return auth


def generate_keys(directory: str | Path, *, clients: tuple[str, ...] = ("client",)) -> Path:
    """Write a server key pair, client key pairs and ``authorized/`` (the clients' public keys)."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(base, 0o700)
    authorized = base / "authorized"
    authorized.mkdir(exist_ok=True, mode=0o700)
    zmq.auth.create_certificates(base, "server")
    for name in clients:
        public_file, _ = zmq.auth.create_certificates(base, name)
        (authorized / Path(public_file).name).write_bytes(Path(public_file).read_bytes())
    for secret in base.glob("*.key_secret"):
        os.chmod(secret, 0o600)
    return base
