"""The user commands of ``taskmill``: ``submit``, ``result``, ``recurring``, ``status``, ``watch``,
``ping``, ``stats``, ``cancel``, ``pause``, ``resume``, ``history``.

Each takes the parsed arguments and the deployment configuration, talks to the running actors
through ``taskmill.Client`` (or a control endpoint) and returns the exit status. Output goes to
stdout; ``--json`` output is one JSON document (``watch``: one per line).

Before its first request a command checks that the actors it talks to are there
(``taskmill.reach.probe``), so that a stopped deployment, a wrong run directory or a refused
CURVE key is said in words within 2 s instead of a request timing out in silence.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import zmq

from bus.client import RequestClient
from bus.errors import ActorUnavailable, TaskmillError
from bus.kinds import Ping, Pong, Stats, StatsReply
from bus.kinds_run import GetHosts, HostsReply
from bus.topology import Topology
from taskmill import bulk_cancel, flow_commands
from taskmill.deploy import ConfigError, DeploymentConfig
from taskmill.priority import Priority
from taskmill.processes import ACTORS, control_endpoint
from taskmill.reach import PROBE_TIMEOUT_S, probe
from taskmill.subscription import EventSubscriber
from taskmill.sync_client import Client
from taskmill.task import TaskSubmission
from taskmill.watch import WatchView, format_snapshot

__all__ = [
    "cancel", "history", "non_negative_int", "parse_priority", "pause", "payload_json", "ping",
    "positive_int", "positive_seconds", "recurring", "result", "resume", "stats", "status",
    "submit", "task_type", "watch",
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


def positive_int(text: str) -> int:
    value = non_negative_int(text) if text.strip().lstrip("+").isdigit() else -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, not {text!r}")
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


def _key_hint(cfg: DeploymentConfig) -> str:
    return (
        f"is the public key of the client key {cfg.client_key!r} in the servers' authorized/ "
        "directory?"
    )


def _check_run_dir(cfg: DeploymentConfig) -> None:
    """A run directory that does not exist is a wrong one: say so before anything creates it."""
    if not Path(cfg.run_dir).is_dir():
        raise ConfigError(
            f"no run directory {cfg.run_dir}: a wrong --run-dir or TASKMILL_RUN_DIR? (no "
            "deployment runs there)"
        )


def _reach(cfg: DeploymentConfig, *actors: str) -> None:
    """Raise ``ActorUnavailable`` saying what is wrong when one of the deployment's ``actors``
    (``store``, ``dispatcher``, ``events``, or a ``*_control`` endpoint's name) is not there."""
    if cfg.transport == "ipc":
        _check_run_dir(cfg)
    topology = cfg.topology()
    security = cfg.security()
    context: zmq.Context[Any] = zmq.Context()
    try:
        for actor in actors:
            endpoint = getattr(topology, actor)
            configure = security.configure_client(endpoint) if security is not None else None
            kind = zmq.SUB if actor == "events" else zmq.DEALER  # the event stream is an XPUB
            name = actor.split("_")[0]
            hint = _key_hint(cfg)
            reason = probe(context, endpoint, name, configure=configure, key_hint=hint, kind=kind)
            if reason is not None:
                raise ActorUnavailable(reason)
    finally:
        context.destroy(linger=0)


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
    _reach(cfg, "store")
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
    _reach(cfg, "store")
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
    _reach(cfg, "dispatcher", "store")
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
    _reach(cfg, "events")
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
    try:  # the actor's name first, on endpoints that make no directory
        control_endpoint(Topology.inproc("check"), actor, host_id)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    _check_run_dir(cfg)  # control endpoints are local, in the run directory
    return control_endpoint(cfg.topology(), actor, host_id)


def ping(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """A PONG from each actor (default: every one, every executor host included), all asked at
    once; an actor that is not there is said why. Exit status 1 when any did not answer."""
    out = sys.stdout if out is None else out
    actors = args.actors or list(ACTORS)
    context: zmq.Context[Any] = zmq.Context()
    try:
        targets: list[tuple[str, str | None, str]] = []
        for actor in actors:
            if actor == "worker":
                targets += _workers(cfg, context, args.host_id)
            else:
                targets.append((actor, _endpoint(cfg, actor, None), ""))
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            lines = list(
                pool.map(lambda t: _ping_one(cfg, context, *t, timeout=args.timeout), targets)
            )
    finally:
        context.destroy(linger=0)
    for line, _ in lines:
        out.write(line + "\n")
    return 1 if any(not answered for _, answered in lines) else 0


def _workers(
    cfg: DeploymentConfig, context: zmq.Context[Any], host_id: str | None
) -> list[tuple[str, str | None, str]]:
    """(label, control endpoint or None, what the Dispatcher says of it) for every executor
    host: the one named, else those connected to the Dispatcher and those whose control socket
    is in the run directory (a host the Dispatcher lost still has one)."""
    if host_id is not None:
        return [(f"worker {host_id}", _endpoint(cfg, "worker", host_id), "")]
    _check_run_dir(cfg)
    topology = cfg.topology()
    known: dict[str, str] = {}
    if _probe_quietly(cfg, context, topology.dispatcher) is None:
        configure = _configure(cfg, topology.dispatcher)
        client = RequestClient(context, topology.dispatcher, timeout=2.0, configure=configure)
        try:
            for host in client.call(GetHosts(), HostsReply).hosts:
                known[host.host_id] = (
                    f" (capacity {host.capacity}, {host.running} running, "
                    f"heard {host.heartbeat_age_s:.1f}s ago)"
                )
        except ActorUnavailable:
            pass
        finally:
            client.close()
    if cfg.transport == "ipc":
        prefix, suffix = "worker-", "-control.sock"
        for path in Path(cfg.run_dir).glob(f"{prefix}*{suffix}"):
            known.setdefault(path.name[len(prefix) : -len(suffix)], " (unknown to the dispatcher)")
    if not known:
        return [("worker", None, "no executor host: none connected to the dispatcher")]
    targets: list[tuple[str, str | None, str]] = []
    for name, said in sorted(known.items()):
        try:
            endpoint: str | None = control_endpoint(topology, "worker", name)
        except ValueError:  # control endpoints are local: a host on tcp is only what it said
            endpoint = None
        targets.append((f"worker {name}", endpoint, said))
    return targets


def _configure(cfg: DeploymentConfig, endpoint: str) -> Any:
    security = cfg.security()
    return security.configure_client(endpoint) if security is not None else None


def _probe_quietly(cfg: DeploymentConfig, context: zmq.Context[Any], endpoint: str) -> str | None:
    return probe(
        context,
        endpoint,
        "dispatcher",
        configure=_configure(cfg, endpoint),
        key_hint=_key_hint(cfg),
    )


def _ping_one(
    cfg: DeploymentConfig,
    context: zmq.Context[Any],
    label: str,
    endpoint: str | None,
    said: str,
    *,
    timeout: float,
) -> tuple[str, bool]:
    """The line for one actor, and whether it answered."""
    if endpoint is None:
        return f"{label:<11} {said.strip()}", label != "worker" and bool(said)
    reason = probe(
        context,
        endpoint,
        label.split()[0],
        configure=_configure(cfg, endpoint),
        key_hint=_key_hint(cfg),
        timeout=min(timeout, PROBE_TIMEOUT_S),
    )
    if reason is not None:
        return f"{label:<11} {reason}{said}", False
    client = RequestClient(context, endpoint, configure=_configure(cfg, endpoint))
    started = time.monotonic()
    try:
        pong = client.call(Ping(), Pong, timeout=timeout)
    except ActorUnavailable:
        return f"{label:<11} no answer within {timeout:g}s{said}", False
    finally:
        client.close()
    elapsed = (time.monotonic() - started) * 1000
    return f"{label:<11} pong from {pong.name} in {elapsed:.1f} ms{said}", True


def stats(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    endpoint = _endpoint(cfg, args.actor, args.host_id)
    context: zmq.Context[Any] = zmq.Context()
    reason = probe(context, endpoint, args.actor, configure=_configure(cfg, endpoint))
    if reason is not None:
        context.destroy(linger=0)
        raise ActorUnavailable(reason)
    client = RequestClient(
        context, endpoint, timeout=args.timeout, configure=_configure(cfg, endpoint)
    )
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


# -- operations: cancel, pause, resume, history --------------------------------------------------


def cancel(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """Cancel tasks by id (each with its children; exit status 1 when an id is no active task),
    or every active task of a group, a type or a tag."""
    out = sys.stdout if out is None else out
    if bulk_cancel.requested(args) == bool(args.ids):
        print("taskmill cancel: give task ids, or one of --group, --type, --tag", file=sys.stderr)
        return 2
    _reach(cfg, "dispatcher")
    if args.ids:
        return _cancel_ids(cfg, args.ids, args.timeout, out)
    return bulk_cancel.run(args, cfg, out)


def _cancel_ids(cfg: DeploymentConfig, ids: list[int], timeout: float, out: TextIO) -> int:
    missing = 0
    with Client(cfg, timeout=timeout, retries=0) as client:
        for task_id in ids:
            if client.cancel(task_id):
                out.write(f"cancelled #{task_id}\n")
            else:
                missing += 1
                out.write(f"#{task_id}: no active task has this id\n")
    return 1 if missing else 0


def pause(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """Pause the whole scheduler (no task starts, running ones are paused) until ``resume``;
    with ``--group``, only that group's tasks wait (running ones finish their run)."""
    if args.group is not None:
        _reach(cfg, "limiter")
        return flow_commands.pause_group(args, cfg, out)
    if args.until is not None:
        print("taskmill pause: --until goes with --group", file=sys.stderr)
        return 2
    done = "paused: no task starts until `taskmill resume`"
    return _on_dispatcher(cfg, args.timeout, Client.pause_all, done, out)


def resume(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    if args.group is not None:
        _reach(cfg, "limiter")
        return flow_commands.resume_group(args, cfg, out)
    return _on_dispatcher(cfg, args.timeout, Client.resume_all, "resumed", out)


def _on_dispatcher(
    cfg: DeploymentConfig,
    timeout: float,
    control: Callable[[Client], None],
    done: str,
    out: TextIO | None,
) -> int:
    """Apply a scheduler-wide ``control`` and say it is ``done``."""
    out = sys.stdout if out is None else out
    _reach(cfg, "dispatcher")
    with Client(cfg, timeout=timeout, retries=0) as client:
        control(client)
    out.write(done + "\n")
    return 0


def history(args: argparse.Namespace, cfg: DeploymentConfig, out: TextIO | None = None) -> int:
    """Finished runs, newest first: one line each, or with ``--json`` one JSON list."""
    out = sys.stdout if out is None else out
    _reach(cfg, "store")
    with Client(cfg, timeout=args.timeout, retries=0) as client:
        records = client.history(
            args.limit, args.offset, status=args.status, task_type=args.task_type
        )
    if args.json:
        _dump([r.to_dict() for r in records], out)
        return 0
    for r in records:
        took = "" if r.duration_ms is None else f" {r.duration_ms / 1000:.3f}s"
        error = f"  {r.last_error}" if r.last_error else ""
        at = r.completed_at.isoformat(timespec="seconds")
        out.write(f"#{r.task_id} {r.task_type} {r.status.value} {at}{took}{error}\n")
    return 0
