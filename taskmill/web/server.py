"""``DashboardServer``: the dashboard served by uvicorn, in the foreground or in a thread.

``taskmill web`` serves it in the foreground (``serve``); an embedded scheduler built with
``web_port`` serves it in a thread of its own (``start``/``stop``), on an event loop of its own,
so the page's requests never wait for the application's loop nor slow it.

The socket is bound and listening here, before uvicorn starts, so an address in use or refused
is an ``OSError`` in the caller's thread, port 0 gives a free port (``port`` tells which), and a
client told the address at once (``taskmill web`` prints it) is not refused meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable

import uvicorn

from taskmill.client import AsyncClient
from taskmill.web.access import check_bind
from taskmill.web.app import dashboard_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
STOP_GRACE_S = 2
BACKLOG = 128


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: in a thread, signals belong to the main
    thread; in the foreground, ``serve`` installs its own."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class DashboardServer:
    """Serves ``dashboard_app`` on ``host:port``; ``ValueError`` when that address needs a token
    and none is given (see ``taskmill.web.access``)."""

    def __init__(
        self,
        client_factory: Callable[[], AsyncClient],
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
    ) -> None:
        check_bind(host, token)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"the dashboard port must be in 0..65535, got {port!r}")
        self.host = host
        self._app = dashboard_app(client_factory, token=token)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host.strip("[]"), port))
            self._socket.listen(BACKLOG)  # connections queue from now on, before uvicorn runs
        except OSError:
            self._socket.close()
            raise
        self.port: int = self._socket.getsockname()[1]
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _make(self) -> _Server:
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=STOP_GRACE_S,
            lifespan="on",
        )
        self._server = _Server(config)
        return self._server

    async def serve(self) -> None:
        """Serve until SIGINT/SIGTERM (the foreground: ``taskmill web``), then return: the
        process exits with status 0 like the actors' (uvicorn's own handlers would re-raise
        the signal once stopped)."""
        server = self._make()
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        def stop() -> None:
            server.should_exit = True
            feed = getattr(self._app.state, "feed", None)
            if feed is not None:  # end the open streams now, not at uvicorn's grace period
                closing.append(loop.create_task(feed.close()))

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            await server.serve(sockets=[self._socket])
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            self._socket.close()

    def start(self) -> None:
        """Serve from a thread of its own; returns once the server answers."""
        server = self._make()
        failed: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await server.serve(sockets=[self._socket])

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # uvicorn exits on a failed startup
                failed.append(exc)

        self._thread = threading.Thread(target=run, name="taskmill-web", daemon=True)
        self._thread.start()
        while not server.started and self._thread.is_alive():
            self._thread.join(0.01)  # startup is a few milliseconds: poll for it
        if not server.started:
            self._socket.close()
            raise RuntimeError(f"the dashboard did not start: {failed[0] if failed else '?'}")

    def stop(self) -> None:
        """Stop serving (open event streams end) and wait for the thread."""
        feed = getattr(self._app.state, "feed", None)
        if self._loop is not None and self._thread is not None and feed is not None:
            # End the open streams first: uvicorn would wait for them to finish on their own.
            ended = asyncio.run_coroutine_threadsafe(feed.close(), self._loop)
            with contextlib.suppress(Exception):
                ended.result(STOP_GRACE_S)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_GRACE_S + 5.0)
            self._thread = None
        self._socket.close()
