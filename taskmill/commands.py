"""The user commands of ``taskmill``: ``submit``, ``result``, ``cancel``, ``recurring``,
``status``, ``watch``, ``ping``, ``stats``.

Each takes the parsed arguments and the deployment configuration, talks to the running actors
through ``taskmill.Client`` (or a control endpoint) and returns the exit status. Output goes to
stdout; ``--json`` output is one JSON document (``watch``: one per line).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Any, TextIO

import zmq

from bus.client import RequestClient
from bus.errors import ActorUnavailable, TaskmillError
from bus.kinds import Ping, Pong, Stats, StatsReply
from taskmill import bulk_cancel
from taskmill.client import Client
from taskmill.deploy import ConfigError, DeploymentConfig
from taskmill.priority import Priority
from taskmill.processes import ACTORS, control_endpoint
from taskmill.subscription import EventSubscriber
from taskmill.task import TaskSubmission
from taskmill.watch import WatchView, format_snapshot

__all__ = [
    "cancel", "non_negative_int", "parse_priority", "payload_json", "ping", "positive_seconds",
    "recurring",
    "result", "stats", "status", "submit", "task_type", "watch",
]  # fmt: skip

TIERS = ("realtime", "high", "normal", "background", "idle")


def parse_priority(text: str) -> Priority:
    """``0``..``255`` or a tier name (any case)."""
    if text.lower() in TIERS:
        tier: Priority = getattr(Priority, text.upper())
        return tier
    try:
        return Priority(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a priority is 0..255 or one of {', '.join(TIERS)}, not {text!r}"
        ) from None


def task_type(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("a task type must not be empty")
    return text


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, not {text!r}")
    return value


def payload_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _dump(value: Any, out: TextIO) -> None:
    out.write(json.dumps(value, default=str) + "\n")
    out.flush()


def submit(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    try:
        submission = TaskSubmission(
            args.task_type, key=args.key, label=args.label, group=args.group
        )
        if args.priority is not None:
            submission.priority(args.priority)
        if args.payload_json is not None:
            submission.payload_json(args.payload_json)
    except (ValueError, TaskmillError) as exc:  # refused before anything was sent
        print(f"taskmill submit: {exc}", file=sys.stderr)
        return 2
    with Client(cfg, timeout=args.timeout, retries=args.retries) as client:
        outcome = client.submit(submission)
    if args.json:
        _dump(outcome.to_dict(), out)
    else:
        out.write(
            f"{outcome.kind.value}" + ("" if outcome.id is None else f" #{outcome.id}") + "\n"
        )
    return 0


def result(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """A finished task's status, error and result (JSON as JSON, other bytes by their size).
    Exit status 1 when the task has no terminal history row (within ``--wait`` seconds)."""
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        if args.wait is None:
            record = client.result(args.task_id)
        else:
            try:
                record = client.wait_result(args.task_id, timeout=args.wait)
            except TimeoutError:
                record = None
    if record is None:
        waited = "" if args.wait is None else f" after {args.wait:g}s"
        print(f"task #{args.task_id} has not finished{waited}", file=sys.stderr)
        return 1
    if args.json:
        _dump(record.to_dict(), out)
        return 0
    out.write(f"#{record.task_id} {record.task_type} {record.status.value}\n")
    if record.last_error:
        out.write(f"error: {record.last_error}\n")
    if record.result is not None:
        try:
            text = json.dumps(record.result_json(), ensure_ascii=False)
        except ValueError:
            text = f"<{len(record.result)} bytes>"
        out.write(f"result: {text}\n")
    return 0


def cancel(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    if bulk_cancel.requested(args):
        return bulk_cancel.run(args, cfg, out)
    print("taskmill cancel: give --group, --type or --tag", file=sys.stderr)
    return 2


def recurring(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """One line per recurring schedule: id, type, label, when it recurs, runs, next run."""
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        schedules = client.recurring_schedules()
    for info in schedules:
        if args.json:
            _dump(info.to_dict(), out)
            continue
        when = f"cron {info.cron!r}" if info.cron is not None else f"every {info.interval:g}s"
        runs = f"{info.execution_count}" + (
            "" if info.max_executions is None else f"/{info.max_executions}"
        )
        following = "-" if info.next_run is None else info.next_run.isoformat(timespec="seconds")
        paused = " paused" if info.paused else ""
        out.write(
            f"#{info.task_id} {info.task_type} {info.label} {when} runs {runs} "
            f"next {following}{paused}\n"
        )
    if not schedules and not args.json:
        out.write("no recurring schedules\n")
    return 0


def status(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        snapshot = client.snapshot()
    if args.json:
        _dump(snapshot.to_dict(), out)
    else:
        out.write(format_snapshot(snapshot, out.isatty()))
    return 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def watch(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """Follow the events; lines go to ``out``, and "watching ..." to stderr once it is live."""
    out = sys.stdout if out is None else out
    endpoint = cfg.topology().events
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    view = WatchView(out, out.isatty())
    seen = 0
    security = cfg.security()
    configure = security.configure_client(endpoint) if security is not None else None
    with EventSubscriber(endpoint, configure=configure) as events:
        # Constructing the subscriber waited for the publisher's welcome: from now on nothing
        # published is missed, which is what a script waiting for this line relies on.
        print(f"watching {endpoint}", file=sys.stderr, flush=True)
        while args.count is None or seen < args.count:
            event = events.recv(timeout=0.25)
            if event is None:
                view.draw()
                continue
            seen += 1
            if args.json:
                _dump(event.to_dict(), out)
            else:
                view.apply(event)
                view.draw()
    return 0


def _endpoint(cfg: DeploymentConfig, actor: str, host_id: str | None) -> str:
    try:
        return control_endpoint(cfg.topology(), actor, host_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def ping(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    actors = args.actors or [a for a in ACTORS if a != "worker"]
    missing = 0
    endpoints = [(actor, _endpoint(cfg, actor, args.host_id)) for actor in actors]
    context: zmq.Context[Any] = zmq.Context()
    try:
        for actor, endpoint in endpoints:
            client = RequestClient(context, endpoint)
            started = time.monotonic()
            try:
                pong = client.call(Ping(), Pong, timeout=args.timeout)
            except ActorUnavailable:
                missing += 1
                out.write(f"{actor:<11} no answer within {args.timeout:g}s\n")
            else:
                elapsed = (time.monotonic() - started) * 1000
                out.write(f"{actor:<11} pong from {pong.name} in {elapsed:.1f} ms\n")
            finally:
                client.close()
    finally:
        context.destroy(linger=0)
    return 1 if missing else 0


def stats(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    endpoint = _endpoint(cfg, args.actor, args.host_id)
    context: zmq.Context[Any] = zmq.Context()
    client = RequestClient(context, endpoint, timeout=args.timeout)
    try:
        reply = client.call(Stats(), StatsReply)
    finally:
        client.close()
        context.destroy(linger=0)
    if args.json:
        _dump({"name": reply.name, "counters": reply.counters}, out)
        return 0
    out.write(f"{reply.name}\n")
    width = max((len(k) for k in reply.counters), default=0)
    for key in sorted(reply.counters):
        out.write(f"  {key:<{width}}  {reply.counters[key]}\n")
    return 0
