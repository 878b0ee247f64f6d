"""taskmill side by side with Huey (SQLite and Redis storage), measured in one invocation.

    python bench/peers.py [--quick] [--runs N] [--json out.json] [--skip-taskmill]
                          [--taskmill-cpus SET]

1. Creates a virtual environment in ``bench/results/peers-venv`` (git-ignored; reused when it
   already has Huey) and installs ``huey`` and ``redis`` into it — benchmark tools only, never
   dependencies of taskmill.
2. Installs Debian's ``redis-server`` if it is missing (``apt-get update`` first), starts it on
   127.0.0.1 on a free port with its built-in defaults (RDB snapshots, no AOF) in a temporary
   directory, and stops it at the end, whatever happens.
3. Runs the peers' shapes on Huey+RedisHuey and Huey+SqliteHuey (``bench/huey_bench.py``, in
   the venv): the 20k no-op drain with one producer enqueueing one by one; the producer's
   enqueue rate; idle latency enqueue → task start. The main rows run the consumer the way
   Huey's users run it for throughput, ``huey_consumer -w 4 -k process``; the same consumer with
   4 thread workers (``-k thread``, slower on this shape) follows as extra rows, for comparison
   with earlier figures.
4. Runs the same shapes of taskmill (``bench/run.py --only ...``, embedded and Procfile) and
   prints every figure, then the ratios taskmill/peer: the 20k drain (embedded, Procfile), the
   producer's one-by-one acknowledged submit (embedded; Procfile, i.e. from a Client) against
   Huey's enqueue, idle latency p50 and p99. With ``--taskmill-cpus 0`` taskmill's shapes also
   run confined to CPU 0 (``bench/run.py --cpus all 0``, runs in turn), as their own rows
   (``taskmill embedded@cpus=0``); the peers always run free.

All traffic stays on loopback; every loop is bounded; every process and directory is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import cpu_set

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
VENV = RESULTS / "peers-venv"
TIMEOUT_S = 900.0
TASKMILL_SHAPES = {
    "drain": ("drain_20k_c4", ("drain_per_s", "producer_submit_per_s")),
    "latency": ("idle_latency", ("start_p50_ms", "start_p99_ms")),
}
PEERS = (
    ("huey+redis -k process", "redis", "process"),
    ("huey+sqlite -k process", "sqlite", "process"),
    ("huey+redis -k thread (extra)", "redis", "thread"),
    ("huey+sqlite -k thread (extra)", "sqlite", "thread"),
)
"""Each peer row: its name, Huey's storage, the consumer's workers (``-w 4 -k ...``)."""


def sh(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, timeout=TIMEOUT_S, **kwargs)


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "import huey, redis"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"peers: creating {VENV} with huey and redis", flush=True)
    sh([sys.executable, "-m", "venv", "--clear", str(VENV)])
    sh([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "huey",
        "redis"])  # fmt: skip
    return python


def ensure_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    print("peers: installing Debian's redis-server", flush=True)
    sh(["apt-get", "update", "-qq"])
    sh(["apt-get", "install", "-y", "-qq", "redis-server"], env={**os.environ,
       "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    found = shutil.which("redis-server")
    if not found:
        raise SystemExit("redis-server is still missing after apt-get install")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[int]:
    """A redis-server on 127.0.0.1, stopped (SIGTERM, then SIGKILL) and its directory removed."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="peers-redis-"))
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(work)]
    argv += ["--daemonize", "no", "--protected-mode", "yes"]
    with (work / "redis.log").open("wb") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while not redis_ping(port):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start:\n{(work / 'redis.log').read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        shutil.rmtree(work, ignore_errors=True)


def run_huey(
    python: Path, shape: str, storage: str, workers: str, n: int, seed: int, port: int | None
) -> Any:
    with tempfile.TemporaryDirectory(prefix="peers-huey-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUEY_BENCH_")}
        env.update(HUEY_BENCH_STORAGE=storage, HUEY_BENCH_DB=str(Path(tmp) / "huey.db"))
        if port is not None:
            env["HUEY_BENCH_PORT"] = str(port)
        argv = [str(python), str(BENCH / "huey_bench.py"), shape, "--storage", storage]
        argv += ["--workers", workers, "--n", str(n), "--seed", str(seed)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(
        f"huey {shape}/{storage}/{workers} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    )


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def run_taskmill(runs: int, quick: bool, cpus: str | None = None) -> dict[str, dict[str, float]]:
    """taskmill's figures of the same shapes, from ``bench/run.py`` in this invocation (also
    confined to ``cpus``, when given)."""
    with tempfile.TemporaryDirectory(prefix="peers-taskmill-") as tmp:
        out = Path(tmp) / "taskmill.json"
        only = [f"{mode}.{shape}" for mode in ("embedded", "procfile")
                for shape, _ in TASKMILL_SHAPES.values()]  # fmt: skip
        argv = [sys.executable, str(BENCH / "run.py"), "--runs", str(runs), "--json", str(out)]
        argv += ["--quick"] * quick + ["--only", *only]
        argv += ["--cpus", "all", cpus] if cpus else []
        done = subprocess.run(argv, cwd=REPO, timeout=TIMEOUT_S * (8 if cpus else 4))
        if not out.exists():
            raise SystemExit(f"bench/run.py wrote no results (exit {done.returncode})")
        data = json.loads(out.read_text())
    figures: dict[str, dict[str, float]] = {}
    for name, entry in data["shapes"].items():
        shape_name, at, cpu_set = name.partition("@")
        mode, shape = shape_name.split(".", 1)
        kind = next(k for k, (s, _) in TASKMILL_SHAPES.items() if s == shape)
        for metric, summary in entry["summary"].items():
            mine = figures.setdefault(f"taskmill {mode}{at}{cpu_set}", {})
            mine[f"{kind}.{metric}"] = summary["median"]
            if metric == "rss_actors_total_mb":  # every actor process of the deployment
                mine["drain.rss_mb"] = summary["median"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, 2,000 tasks, 30 latencies")
    parser.add_argument("--runs", type=int, help="runs per shape (default 3; --quick: 1)")
    parser.add_argument("--json", type=Path, help="results (default bench/results/peers.json)")
    parser.add_argument("--skip-taskmill", action="store_true", help="only the peers")
    parser.add_argument(
        "--taskmill-cpus",
        type=cpu_set,
        metavar="SET",
        help="also run taskmill confined to these CPUs (e.g. 0)",
    )
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    n_drain, n_latency = (2_000, 30) if args.quick else (20_000, 200)
    python = ensure_venv()
    binary = ensure_redis_server()
    peers: dict[str, dict[str, list[float]]] = {}
    with redis_server(binary) as port:
        for name, storage, workers in PEERS:
            for shape, n in (("drain", n_drain), ("latency", n_latency)):
                for i in range(runs):
                    result = run_huey(python, shape, storage, workers, n, i + 1, port)
                    for metric, value in result.items():
                        peers.setdefault(name, {}).setdefault(f"{shape}.{metric}", []).append(value)
                    print(f"  {name} {shape} run {i + 1}/{runs}: {result}", flush=True)
    figures = {name: {m: median(v) for m, v in ms.items()} for name, ms in peers.items()}
    if not args.skip_taskmill:
        figures.update(run_taskmill(runs, args.quick, args.taskmill_cpus))
    report = table(figures, n_drain)
    print()
    print(report)
    out = args.json or RESULTS / "peers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(
        [str(python), "-c", "import huey, redis; print(huey.__version__, redis.__version__)"],
        capture_output=True,
        text=True,
    ).stdout.split()
    redis_version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    facts: dict[str, Any] = {
        "huey": version[0],
        "redis_py": version[1],
        "redis_server": redis_version.strip(),
    }
    facts["consumers"] = {name: f"huey_consumer -w 4 -k {workers}" for name, _, workers in PEERS}
    out.write_text(
        json.dumps(
            {"runs": runs, "quick": args.quick, "peers": facts, "figures": figures, "raw": peers},
            indent=2,
        )
        + "\n"
    )
    print(f"\nresults: {out}")
    return 0


METRICS = (
    ("drain.drain_per_s", "drain/s"),
    ("drain.producer_submit_per_s", "submit/s"),
    ("latency.start_p50_ms", "p50 ms"),
    ("latency.start_p99_ms", "p99 ms"),
    ("drain.rss_mb", "RSS MB"),
)
LEGEND = (
    "drain/s: no-op drain of {n:,} tasks, tasks/s (first submit to last completion); submit/s: the"
    " producer's one-by-one submits during it (taskmill: each acknowledged; Huey: enqueue);"
    " p50/p99 ms: idle latency, submit to task start; RSS MB: peak RSS of the workers' processes"
    " (taskmill Procfile: every actor's; embedded: the one process)"
)
DEPLOYMENTS = {"embedded": "embedded", "procfile": "Procfile"}
SUBMITTERS = {"embedded": "embedded", "procfile": "from a Client"}
"""Who submits in each deployment's drain: the embedded ``Scheduler``, or an ``AsyncClient``
talking to the Procfile deployment."""
RATIOS = (
    ("drain.drain_per_s", "drain, {mode}", DEPLOYMENTS),
    ("drain.producer_submit_per_s", "acked submit 1 by 1, {mode} / enqueue", SUBMITTERS),
    ("latency.start_p50_ms", "idle latency p50, {mode}", DEPLOYMENTS),
    ("latency.start_p99_ms", "idle latency p99, {mode}", DEPLOYMENTS),
)
"""The ratios printed, taskmill/peer: one row per taskmill deployment for each."""
NAME_W = 32
CELL_W = 10


def table(figures: dict[str, dict[str, float]], n_drain: int) -> str:
    """Every system's medians, a row each; then taskmill/peer for each pair (>1: taskmill
    higher)."""
    systems = list(figures)
    lines = ["system".ljust(NAME_W) + "".join(label.rjust(CELL_W) for _, label in METRICS)]
    for s in systems:
        lines.append(s.ljust(NAME_W) + "".join(_cell(figures[s].get(k)) for k, _ in METRICS))
    lines += ["", *textwrap.wrap(LEGEND.format(n=n_drain), NAME_W + CELL_W * len(METRICS))]
    tm = [s for s in systems if s.startswith("taskmill ")]
    peer_names = [s for s in systems if not s.startswith("taskmill ")]
    if not (tm and peer_names):
        return "\n".join(lines)
    rows = []
    for key, label, modes in RATIOS:
        for t in tm:
            mode, at, cpus = t.removeprefix("taskmill ").partition("@")
            cells = []
            for p in peer_names:
                a, b = figures[t].get(key), figures[p].get(key)
                cells.append(f"{a / b:.2f}x" if a is not None and b else "-")
            rows.append((label.format(mode=modes.get(mode, mode) + at + cpus), cells))
    name_w = max(len(name) for name, _ in rows) + 2
    heads = [p.removeprefix("huey+").removesuffix(" (extra)") for p in peer_names]
    width = max(len(h) for h in heads) + 2
    lines += ["", "ratios taskmill/huey (throughput: >1 taskmill faster; latency: <1 faster)"]
    lines.append(" " * name_w + "".join(h.rjust(width) for h in heads))
    lines += [name.ljust(name_w) + "".join(c.rjust(width) for c in cells) for name, cells in rows]
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return "-".rjust(CELL_W)
    return (f"{value:,.2f}" if value < 100 else f"{value:,.0f}").rjust(CELL_W)


if __name__ == "__main__":
    raise SystemExit(main())
