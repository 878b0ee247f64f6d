"""The benchmark suite: every shape, each run in a fresh process, summarised in one table.

    python bench/run.py [--quick] [--runs N] [--only SHAPE...] [--big] [--cpus SET...]
                        [--json out.json]

Every shape runs ``--runs`` times (default 3; ``--quick``: 1 run, smaller sizes — a smoke check,
not figures), each time as ``python -m bench.child SHAPE`` in a new process with its own
temporary directory and file-backed database (WAL, ``synchronous=NORMAL``: the defaults), so peak
RSS is per shape and no shape warms another. ``--only`` takes names or shell patterns
(``embedded.*``, ``*drain*``). The table gives the median and min-max of each metric over the
runs and, for the targets (``bench.report.TARGETS``), whether the median meets it. Results go to
``bench/results/latest.json`` (git-ignored) unless ``--json`` says otherwise, with the machine's
facts and the commit measured. Each run records ``others_cpu_pct``, the share of the CPUs other
processes used meanwhile; on a 2-core machine a busy neighbour skews every figure, so the suite
waits for a quiet machine before each run and repeats a run that was disturbed
(``--max-others``). ``--big`` puts 1,000,000 pending tasks under the peek/claim shape (else
100,000).

``--cpus`` confines runs to a set of CPUs (``0``, ``0,1``; ``all`` leaves them free, the
default): each run's process calls ``sched_setaffinity`` before it starts anything, so every
thread and process of the run inherits the set. With several sets (``--cpus all 0``) every
shape runs once per set in turn, run after run, and each set's results are a shape of their own
(``embedded.drain_20k_c4@cpus=0``): the ratios then come from one invocation.

Benchmarks are scripts, never tests: CI lints this folder and runs none of it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.catalog import Options, catalog
from bench.common import REPO, RESULTS, machine_facts, source_state
from bench.report import markdown_table, rows, summarise_shape, text_table

TICKS = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 900.0
QUIET_WAIT_S = 300.0
"""The longest the suite waits for other processes to calm down before a run."""
RETRIES_WHEN_BUSY = 2
"""The longest one run of one shape may take before it is killed (and counted as failed)."""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


ALL_CPUS = "all"


def run_child(name: str, options: Options, seed: int, cpus: str = ALL_CPUS) -> dict[str, float]:
    """One run of ``name`` in a new process group (killed whole on a timeout)."""
    argv = [sys.executable, "-m", "bench.child", name, "--seed", str(seed)]
    argv += ["--quick"] * options.quick + ["--big"] * options.big
    argv += ["--cpus", cpus] * (cpus != ALL_CPUS)
    before = _cpu_counters()
    popen = subprocess.Popen(
        argv,
        cwd=REPO,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = popen.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise RuntimeError(f"timed out after {RUN_TIMEOUT_S:.0f}s") from None
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, float] = json.loads(line[len("RESULT ") :])
            result["others_cpu_pct"] = _others_cpu_pct(before, _cpu_counters())
            return result
    tail = "\n".join((out + err).splitlines()[-15:])
    raise RuntimeError(f"exit {popen.returncode}, no result:\n{tail}")


def _cpu_counters() -> tuple[float, float, float]:
    """(wall seconds, CPU seconds the whole machine was busy, CPU seconds of our children)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.monotonic(), busy / TICKS, children.ru_utime + children.ru_stime


def _others_cpu_pct(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
    """The share of the machine's CPU that processes other than this run used meanwhile: on a
    2-core machine, another busy process skews every figure (see ``others_cpu_pct``)."""
    wall = after[0] - before[0]
    others = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, 100.0 * others / (wall * (os.cpu_count() or 1)))


def select(names: list[str], patterns: list[str] | None) -> list[str]:
    if not patterns:
        return names
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) or n == p for p in patterns)]
    unknown = [p for p in patterns if not any(fnmatch.fnmatch(n, p) for n in names)]
    if unknown:
        raise SystemExit(f"no shape matches {unknown}; shapes: {', '.join(names)}")
    return chosen


def machine_busy_pct(seconds: float = 1.0) -> float:
    """How busy the CPUs are (all processes), in percent, over ``seconds``."""
    wall0, busy0, _ = _cpu_counters()
    time.sleep(seconds)
    wall1, busy1, _ = _cpu_counters()
    return 100.0 * (busy1 - busy0) / ((wall1 - wall0) * (os.cpu_count() or 1))


def wait_quiet(limit_pct: float) -> None:
    """Wait (up to ``QUIET_WAIT_S``) until other processes leave the machine nearly idle."""
    deadline = time.monotonic() + QUIET_WAIT_S
    busy = machine_busy_pct()
    while busy > limit_pct and time.monotonic() < deadline:
        print(f"  (machine {busy:.0f}% busy with other processes: waiting)", flush=True)
        time.sleep(5)
        busy = machine_busy_pct()


def cpu_set(value: str) -> str:
    """``--cpus`` values: ``all``, or CPU numbers this machine has, comma-separated."""
    if value == ALL_CPUS:
        return value
    if not re.fullmatch(r"[0-9]+(,[0-9]+)*", value):
        raise argparse.ArgumentTypeError(f"{value!r}: expected all or e.g. 0 or 0,1")
    cpus = sorted({int(part) for part in value.split(",")})
    if not set(cpus) <= os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(f"{value!r}: not among this machine's CPUs")
    return ",".join(map(str, cpus))


def shape_key(name: str, cpus: str) -> str:
    """The results' name of a shape run on ``cpus``."""
    return name if cpus == ALL_CPUS else f"{name}@cpus={cpus}"


def measured_run(
    name: str, options: Options, seed: int, limit_pct: float, cpus: str = ALL_CPUS
) -> dict[str, float]:
    """One run, repeated (at most ``RETRIES_WHEN_BUSY`` times) when other processes took more
    than ``limit_pct`` of the CPUs meanwhile; the last attempt counts either way."""
    for attempt in range(RETRIES_WHEN_BUSY + 1):
        wait_quiet(limit_pct)
        result = run_child(name, options, seed, cpus)
        if result["others_cpu_pct"] <= limit_pct or attempt == RETRIES_WHEN_BUSY:
            return result
        print(f"  (others took {result['others_cpu_pct']:.0f}% of the CPUs: again)", flush=True)
    raise AssertionError("unreachable")


def run_suite(
    names: list[str],
    options: Options,
    runs: int,
    limit_pct: float = 15.0,
    cpu_sets: tuple[str, ...] = (ALL_CPUS,),
) -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    every = catalog(options)
    for name in names:
        results: dict[str, list[dict[str, float]]] = {cpus: [] for cpus in cpu_sets}
        errors: dict[str, list[str]] = {cpus: [] for cpus in cpu_sets}
        for i in range(runs):
            for cpus in cpu_sets:  # in turn, so drift touches every set alike
                key = shape_key(name, cpus)
                started = time.monotonic()
                try:
                    last = measured_run(name, options, i + 1, limit_pct, cpus)
                    results[cpus].append(last)
                    status = f"{every[name].headline} = {last[every[name].headline]:,.2f}"
                    status += f" (other processes: {last['others_cpu_pct']:.0f}% of the CPUs)"
                except RuntimeError as exc:
                    errors[cpus].append(str(exc))
                    status = f"FAILED: {str(exc).splitlines()[0]}"
                took = time.monotonic() - started
                print(f"  {key} run {i + 1}/{runs} ({took:.1f}s): {status}", flush=True)
        for cpus in cpu_sets:
            command = f"python bench/run.py --only {name}" + " --big" * options.big
            entry: dict[str, Any] = {
                "what": every[name].what,
                "headline": every[name].headline,
                "command": command + f" --cpus {cpus}" * (cpus != ALL_CPUS),
                "cpus": cpus,
                "runs": results[cpus],
                "summary": summarise_shape(results[cpus]) if results[cpus] else {},
            }
            if errors[cpus]:
                entry["error"] = errors[cpus][0]
                entry["errors"] = errors[cpus]
            shapes[shape_key(name, cpus)] = entry
    return shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, smaller sizes: a smoke check")
    parser.add_argument("--runs", type=int, help="runs per shape (default 3; --quick: 1)")
    parser.add_argument("--only", nargs="+", metavar="SHAPE", help="names or shell patterns")
    parser.add_argument("--big", action="store_true", help="1,000,000 pending for peek/claim")
    parser.add_argument(
        "--json", type=Path, help="results file (default bench/results/latest.json)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    parser.add_argument(
        "--cpus",
        nargs="+",
        type=cpu_set,
        default=[ALL_CPUS],
        metavar="SET",
        help="run confined to these CPUs (e.g. 0, or 0,1; all: free, the default); several "
        "sets run every shape once per set in turn",
    )
    parser.add_argument("--list", action="store_true", help="list the shapes and exit")
    parser.add_argument(
        "--max-others",
        type=float,
        default=15.0,
        metavar="PCT",
        help="repeat a run (twice at most) when other processes used more than PCT%% of the "
        "CPUs meanwhile, and wait for a quiet machine before each run (default 15)",
    )
    args = parser.parse_args(argv)
    options = Options(quick=args.quick, big=args.big)
    names = list(catalog(options))
    if args.list:
        for name, shape in catalog(options).items():
            print(f"{name:32} {shape.what}")
        return 0
    names = select(names, args.only)
    runs = args.runs or (1 if args.quick else 3)
    if runs < 1:
        raise SystemExit("--runs must be at least 1")
    machine = machine_facts()
    print(
        f"taskmill benchmarks: {len(names)} shape(s) x {runs} run(s)"
        f"{' (quick)' if args.quick else ''} on {machine['cpu_count']} CPU(s), "
        f"Python {machine['python']}, libzmq {machine['libzmq']}, SQLite {machine['sqlite']}",
        flush=True,
    )
    source_before = source_state()
    print(f"at commit {source_before['commit']}", flush=True)
    started = time.monotonic()
    cpu_sets = tuple(dict.fromkeys(args.cpus))
    if cpu_sets != (ALL_CPUS,):
        print(f"CPU sets: {', '.join(cpu_sets)}", flush=True)
    shapes = run_suite(names, options, runs, args.max_others, cpu_sets)
    table = rows(shapes)
    print()
    print(text_table(table))
    results = {
        "suite": "taskmill",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
        "options": {"quick": args.quick, "big": args.big, "runs": runs, "cpus": list(cpu_sets)},
        "machine": machine,
        "source": {"before": source_before, "after": source_state()},
        "durability": "WAL, synchronous=NORMAL (the Store's defaults)",
        "seconds": round(time.monotonic() - started, 1),
        "shapes": shapes,
    }
    out = args.json or RESULTS / "latest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(table) + "\n")
    failed = [n for n, e in shapes.items() if e.get("error")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
