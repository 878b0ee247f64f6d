"""The ``taskmill`` command. Logging is configured here, and only here.

Actor commands (``store``, ``dispatcher``, ``monitor``, ``limiter``, ``worker``, ``events``) each
build one actor of the application and run it until SIGTERM/SIGINT: one process per actor, as a
Procfile runs them. User commands (``submit``, ``result``, ``status``, ``watch``, ``ping``,
``stats``, ``web``, ``recurring``, ``rate-limits``, ``cancel``, ``pause``, ``resume``,
``history``) talk to a running deployment; ``demo`` runs an embedded scheduler. Every
command but ``demo`` reads the deployment
configuration from ``--config`` (TOML), ``TASKMILL_*`` variables and its flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from bus.errors import TaskmillError
from taskmill.deploy import ConfigError, DeploymentConfig, load_app
from taskmill.records import HistoryStatus

ACTOR_HELP = {
    "store": "run the Store actor (owns the database)",
    "dispatcher": "run the Dispatcher actor (sends work to executor hosts)",
    "monitor": "run the ResourceMonitor actor (resource sampling, pressure)",
    "limiter": "run the GroupLimiter actor (per-group concurrency)",
    "worker": "run an executor host (any number of them)",
    "events": "run the EventPublisher actor (event stream, Prometheus metrics)",
}


def _keys(args: argparse.Namespace) -> int:
    from bus.security import generate_keys

    clients = tuple(args.client or ["client"])
    directory = generate_keys(args.directory, clients=clients)
    print(f"keys written to {directory} (mode 0700):")
    print("  server.key_secret   the servers' pair: every process that binds tcp needs it")
    for name in clients:
        print(f"  {name}.key_secret   a client pair: --client-key {name}")
    print("  authorized/         client public keys the servers accept (add or remove files)")
    print(f"use it with --transport tcp --curve-dir {directory}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from taskmill.demo import main

    return main(args.db)


def config_from_args(args: argparse.Namespace) -> DeploymentConfig:
    """The deployment configuration: ``--config`` file, then environment, then flags."""
    overrides: dict[str, Any] = {
        "run_dir": args.run_dir,
        "transport": args.transport,
        "host": args.host,
        "base_port": args.port,
        "database": args.database,
        "insecure": args.insecure,
        "curve_dir": args.curve_dir,
        "client_key": args.client_key,
    }
    for name in ("app", "metrics_port", "capacity"):
        overrides[name] = getattr(args, name, None)
    return DeploymentConfig.load(args.config, overrides=overrides)


def _actor(args: argparse.Namespace) -> int:
    from taskmill.processes import build, build_worker, serve

    cfg = config_from_args(args)
    if cfg.app is None:
        raise ConfigError(
            "no application given: --app module:attribute, TASKMILL_APP or `app` in the config"
        )
    # Like `python -m`, the current directory is importable (a console script's is not).
    spec = load_app(cfg.app, app_dir=os.getcwd()).spec
    if args.command == "worker":
        process = build_worker(
            spec, cfg, host_id=args.host_id, sample_resources=args.sample_resources
        )
    else:
        process = build(args.command, spec, cfg)
    return serve(process, security=cfg.security(), authorized=cfg.authorized_keys())


def _web(args: argparse.Namespace) -> int:
    from taskmill.web.command import web

    return web(args, config_from_args(args))


def _user(args: argparse.Namespace) -> int:
    from taskmill import commands

    handler = getattr(commands, args.command)
    code: int = handler(args, config_from_args(args))
    return code


def _flow(args: argparse.Namespace) -> int:
    code: int = args.handler(args, config_from_args(args), None)
    return code


def _deployment_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    group = common.add_argument_group("deployment (flags override TASKMILL_* over the file)")
    group.add_argument("--config", metavar="FILE", help="a TOML configuration file")
    group.add_argument("--run-dir", help="directory of the ipc sockets (TASKMILL_RUN_DIR)")
    group.add_argument("--transport", choices=("ipc", "tcp"), help="TASKMILL_TRANSPORT")
    group.add_argument("--host", help="tcp host (TASKMILL_HOST)")
    group.add_argument("--port", type=int, help="first tcp port (TASKMILL_PORT)")
    group.add_argument("--database", help="database file, overriding the app's (TASKMILL_DATABASE)")
    group.add_argument(
        "--insecure",
        action="store_const",
        const=True,
        default=None,
        help="allow plain, unauthenticated tcp (TASKMILL_INSECURE)",
    )
    group.add_argument(
        "--curve-dir", help="CURVE keys for tcp, from `taskmill keys` (TASKMILL_CURVE_DIR)"
    )
    group.add_argument("--client-key", help="this process's client key name in the CURVE directory")
    return common


def _add_actor_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    for name, help_text in ACTOR_HELP.items():
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.add_argument("--app", metavar="MODULE:ATTR", help="the application (TASKMILL_APP)")
        if name == "worker":
            p.add_argument("--host-id", help="this host's id (default: host name and pid)")
            p.add_argument("--capacity", type=int, help="tasks run at once (TASKMILL_CAPACITY)")
            p.add_argument(
                "--sample-resources",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="report this machine's disk and network readings, by which the IO budget "
                "of the tasks sent here is judged (default: on over tcp with monitoring on)",
            )
        if name == "events":
            p.add_argument(
                "--metrics-port", type=int, help="serve Prometheus metrics (TASKMILL_METRICS_PORT)"
            )
        p.set_defaults(func=_actor, log_level=logging.INFO)


def _add_user_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from taskmill.commands import (
        non_negative_int,
        parse_priority,
        payload_json,
        positive_seconds,
        task_type,
    )

    def user(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        p.set_defaults(func=_user, log_level=logging.WARNING)
        return p

    submit = user("submit", "submit a task and print its outcome")
    submit.add_argument("task_type", metavar="TYPE", type=task_type)
    submit.add_argument("--key", help="dedup key (default: the payload)")
    submit.add_argument("--label", help="a label for events and dashboards")
    submit.add_argument(
        "--priority", type=parse_priority, help="0..255 or realtime/high/normal/background/idle"
    )
    submit.add_argument("--payload-json", type=payload_json, metavar="JSON", help="the payload")
    submit.add_argument("--group", help="concurrency group")
    submit.add_argument("--json", action="store_true", help="print the outcome as JSON")
    submit.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds per attempt")
    submit.add_argument(
        "--retries",
        type=non_negative_int,
        default=2,
        help="attempts after the first (same request id)",
    )

    result = user("result", "print a finished task's status and result")
    result.add_argument("task_id", metavar="ID", type=int, help="the task's id (from submit)")
    result.add_argument(
        "--wait", type=float, metavar="S", help="wait up to S seconds for the task to finish"
    )
    result.add_argument("--json", action="store_true", help="the history record as JSON")
    result.add_argument("--timeout", type=float, default=5.0, help="seconds per request")

    recurring = user("recurring", "list the recurring schedules")
    recurring.add_argument("--json", action="store_true", help="one JSON object per schedule")
    recurring.add_argument(
        "--timeout", type=positive_seconds, default=5.0, help="seconds per request"
    )

    status = user("status", "print a snapshot: counts, running tasks, pressure")
    status.add_argument("--json", action="store_true", help="the snapshot as JSON")
    status.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait")

    watch = user("watch", "follow the event stream live (progress bars, lifecycle events)")
    watch.add_argument("--json", action="store_true", help="one JSON object per event")
    watch.add_argument("--count", type=int, help="exit after this many events")

    ping = user("ping", "ask actors for a PONG over their control endpoints")
    ping.add_argument(
        "actors",
        nargs="*",
        metavar="ACTOR",
        help="default: every actor; `worker`: every executor host (or the one of --host-id)",
    )
    ping.add_argument("--host-id", help="only this executor host (for `worker`)")
    ping.add_argument(
        "--timeout", type=positive_seconds, default=2.0, help="seconds to wait (all at once)"
    )

    from taskmill.flow_commands import add_rate_limits_command

    add_rate_limits_command(sub, common, _flow)

    stats = user("stats", "print an actor's STATS (counters and state)")
    stats.add_argument("actor", metavar="ACTOR")
    stats.add_argument("--host-id", help="the worker's host id (for `worker`)")
    stats.add_argument("--json", action="store_true", help="as JSON")
    stats.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait")


def _add_web_command(sub: Any, common: argparse.ArgumentParser) -> None:
    from taskmill.web.command import add_arguments

    help_text = "serve the web dashboard (live view, cancel, pause, retry)"
    p = sub.add_parser("web", parents=[common], help=help_text, description=help_text)
    add_arguments(p)
    p.set_defaults(func=_web, log_level=logging.WARNING)


def _add_operation_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``cancel``, ``pause``, ``resume`` (each of the whole scheduler, or of a group, type or
    tag), ``history``."""
    from taskmill import bulk_cancel
    from taskmill.commands import non_negative_int, positive_int, positive_seconds, task_type
    from taskmill.flow_commands import add_group_options

    def user(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, parents=[common], help=help_text, description=help_text
        )
        p.set_defaults(func=_user, log_level=logging.WARNING)
        p.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait")
        return p

    cancel = user("cancel", "cancel tasks by id (with their children), or by group, type or tag")
    cancel.add_argument("ids", nargs="*", type=positive_int, metavar="ID", help="task ids")
    bulk_cancel.add_options(cancel)
    pause = user("pause", "pause the whole scheduler (running tasks too), or one group")
    add_group_options(pause, until=True)
    resume = user("resume", "resume the whole scheduler after `pause`, or one group")
    add_group_options(resume, until=False)
    history = user("history", "list finished runs, newest first")
    history.add_argument("--status", choices=HISTORY_STATUSES, help="only runs that ended so")
    history.add_argument("--type", dest="task_type", type=task_type, help="only this task type")
    history.add_argument("--limit", type=positive_int, default=50, help="at most this many")
    history.add_argument("--offset", type=non_negative_int, default=0, help="skip this many")
    history.add_argument("--json", action="store_true", help="one JSON list of the records")


HISTORY_STATUSES = tuple(status.value for status in HistoryStatus)
"""What ``taskmill history --status`` accepts: the statuses of history rows."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskmill", description="An adaptive priority work scheduler on ZeroMQ."
    )
    parser.add_argument("-v", "--verbose", dest="top_verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _deployment_options()
    _add_actor_commands(sub, common)
    _add_user_commands(sub, common)
    _add_web_command(sub, common)
    _add_operation_commands(sub, common)
    keys = sub.add_parser(
        "keys",
        help="generate CURVE key pairs for tcp deployments",
        description="Write a server key pair, client key pairs and authorized/ (the client "
        "public keys the servers accept) into DIR, private to its owner.",
    )
    keys.add_argument("directory", metavar="DIR")
    keys.add_argument(
        "--client",
        action="append",
        default=None,
        metavar="NAME",
        help="a client key pair to make (repeatable; default: one named client)",
    )
    keys.set_defaults(func=_keys, log_level=logging.WARNING, verbose=0)
    demo = sub.add_parser("demo", help="run an embedded scheduler on a sample workload")
    demo.add_argument("--db", help="database file (default: a temporary one)")
    demo.set_defaults(func=_demo, log_level=logging.WARNING, verbose=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = args.top_verbose + args.verbose
    level = max(logging.DEBUG, args.log_level - 10 * verbose)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except ConfigError as exc:
        print(f"taskmill {args.command}: {exc}", file=sys.stderr)
        return 2
    except TaskmillError as exc:
        print(f"taskmill {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a run directory or database path that cannot be made or opened
        print(f"taskmill {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
