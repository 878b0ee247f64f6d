"""``taskmill cancel --group G | --type T | --tag K=V``: cancel every active task that matches.

The ``cancel`` command calls ``run`` when one of these options is given (``requested``); its
options are added by ``add_options``. One Store transaction cancels them all, the running ones
on their hosts; the ids cancelled are printed (``--json``: one JSON list).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from taskmill.deploy import DeploymentConfig
from taskmill.sync_client import Client

__all__ = ["add_options", "requested", "run", "tag"]


def tag(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may hold ``=``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a tag is KEY=VALUE, got {text!r}")
    return key, value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The bulk options of ``taskmill cancel`` (at most one of them)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--group", metavar="G", help="cancel every active task of group G")
    which.add_argument("--type", dest="task_type", metavar="T", help="... of task type T")
    which.add_argument("--tag", type=tag, metavar="K=V", help="... tagged K=V")
    parser.add_argument("--json", action="store_true", help="print the cancelled ids as JSON")


def requested(args: argparse.Namespace) -> bool:
    """Whether a bulk option was given."""
    return any(getattr(args, name, None) is not None for name in ("group", "task_type", "tag"))


def run(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        if args.group is not None:
            ids = client.cancel_group(args.group)
        elif args.task_type is not None:
            ids = client.cancel_type(args.task_type)
        else:
            ids = client.cancel_by_tag(*args.tag)
    if args.json:
        out.write(json.dumps(ids) + "\n")
    else:
        out.write(f"cancelled {len(ids)} task(s)" + "".join(f" #{i}" for i in ids) + "\n")
    return 0
