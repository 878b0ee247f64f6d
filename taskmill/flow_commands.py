"""The flow-control commands of ``taskmill``: ``pause --group G [--until S]``,
``resume --group G`` and ``rate-limits``.

``pause`` and ``resume`` act on the whole scheduler unless ``--group`` names one:
``add_group_options`` adds the group options to their parsers, and ``pause_group`` /
``resume_group`` serve a command line that names a group.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from taskmill.deploy import DeploymentConfig
from taskmill.sync_client import Client

__all__ = [
    "add_group_options",
    "add_rate_limits_command",
    "pause_group",
    "rate_limits",
    "resume_group",
]

Handler = Callable[[argparse.Namespace, DeploymentConfig, TextIO | None], int]


def add_group_options(parser: argparse.ArgumentParser, *, until: bool) -> None:
    from taskmill.commands import positive_seconds

    parser.add_argument("--group", help="only this group (default: the whole scheduler)")
    if until:
        parser.add_argument(
            "--until",
            type=positive_seconds,
            metavar="S",
            help="with --group: resume by itself after S seconds (default: until `resume`)",
        )


def pause_group(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        client.pause_group(args.group, until=args.until)
    ends = f" for {args.until:g} s" if args.until is not None else ""
    out.write(f"group {args.group!r} paused{ends}\n")
    return 0


def resume_group(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        client.resume_group(args.group)
    out.write(f"group {args.group!r} resumed\n")
    return 0


def rate_limits(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """The rate limits in force and the paused groups (``--json``: as the snapshot has them)."""
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        snapshot = client.snapshot()
    if args.json:
        import json

        data = {
            "rate_limits": [r.to_dict() for r in snapshot.rate_limits],
            "paused_groups": [p.to_dict() for p in snapshot.paused_groups],
        }
        out.write(json.dumps(data, indent=2) + "\n")
        return 0
    if not snapshot.rate_limits:
        out.write("no rate limits\n")
    for r in snapshot.rate_limits:
        out.write(
            f"{r.scope}: {r.permits} per {r.interval:g} s, burst {r.burst}, "
            f"{r.available_tokens:.2f} tokens available\n"
        )
    for p in snapshot.paused_groups:
        until = "until resumed" if p.resume_at is None else f"until {p.resume_at.isoformat()}"
        out.write(f"group {p.group!r} paused {until}, {p.paused_task_count} tasks waiting\n")
    return 0


def add_rate_limits_command(
    sub: Any, common: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]
) -> None:
    """Register ``rate-limits``; ``run(args)`` runs it (the handler is ``args.handler``)."""
    from taskmill.commands import positive_seconds

    help_text = "print the rate limits in force and the paused groups"
    limits: argparse.ArgumentParser = sub.add_parser(
        "rate-limits", parents=[common], help=help_text, description=help_text
    )
    limits.set_defaults(func=run, handler=rate_limits, log_level=logging.WARNING)
    limits.add_argument("--json", action="store_true", help="as JSON")
    limits.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait")
