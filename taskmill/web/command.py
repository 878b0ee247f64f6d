"""``taskmill web``: serve the dashboard for a running deployment until SIGINT/SIGTERM.

The bus comes from the deployment configuration like every other command's; the dashboard's own
settings from flags or ``TASKMILL_WEB_BIND``, ``TASKMILL_WEB_PORT`` and ``TASKMILL_WEB_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from taskmill.client import AsyncClient
from taskmill.deploy import ConfigError, DeploymentConfig

__all__ = ["add_arguments", "web"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from taskmill.web.server import DEFAULT_HOST, DEFAULT_PORT

    env = os.environ
    parser.add_argument(
        "--bind",
        default=env.get("TASKMILL_WEB_BIND", DEFAULT_HOST),
        metavar="ADDR",
        help=f"address to serve on (TASKMILL_WEB_BIND, default {DEFAULT_HOST}); any other "
        "than the loopback interface needs a token",
    )
    parser.add_argument(
        "--web-port",
        type=_port,
        default=env.get("TASKMILL_WEB_PORT", str(DEFAULT_PORT)),  # argparse applies type
        metavar="PORT",
        help=f"port to serve on (TASKMILL_WEB_PORT, default {DEFAULT_PORT}; 0 picks one)",
    )
    parser.add_argument(
        "--token",
        default=env.get("TASKMILL_WEB_TOKEN"),
        help="every request must show it (TASKMILL_WEB_TOKEN); open /?token=... once",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an actor's answer"
    )


def web(args: argparse.Namespace, cfg: DeploymentConfig) -> int:
    from taskmill.web.server import DashboardServer

    def client() -> AsyncClient:
        return AsyncClient(cfg, timeout=args.timeout, retries=0)

    try:
        server = DashboardServer(client, host=args.bind, port=args.web_port, token=args.token)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    print(f"taskmill web: serving {server.url}", flush=True)
    asyncio.run(server.serve())
    return 0
