"""Where the time goes on the hot path, per actor thread of an embedded scheduler.

    python bench/profile_hot_path.py [drain|submit|batch] [--n N] [--top K] [--out DIR]

``drain``: the embedded 20k no-op drain of the suite (one producer awaiting each ``submit``,
concurrency 4). ``submit``: sequential awaited submits with the scheduler not running.
``batch``: ``submit_batch`` of 1,000 tasks at a time, the scheduler not running.

Two passes, each in this process with its own temporary database (WAL, ``synchronous=NORMAL``):

1. unprofiled: the rate, and each thread's CPU time (``/proc/self/task/<tid>/stat``, read before
   the scheduler stops) — the split of CPU between the producer and the actor threads without
   any profiler's distortion;
2. profiled: a ``cProfile.Profile`` per thread, started in every thread the scheduler creates
   (``threading.setprofile`` installs a starter that swaps itself for the thread's own profiler)
   and in the main thread around the producer. Per thread: the top functions by self time and
   by cumulative time, with ``file:line``. Waiting (``poll``, ``select``, ``Event.wait``) shows
   as self time of those functions: it is idle, not work.

The ``.pstats`` file of each thread goes to ``--out`` (default ``bench/results/profile-<shape>``)
for ``python -m pstats`` or snakeviz.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app import builder
from bench.common import REPO, RESULTS, EventPump
from taskmill import TaskSubmission

IDLE = ("poll", "select", "epoll", "wait", "acquire", "_run_once", "sleep", "SimpleQueue")
"""Names of functions whose self time is waiting, not work (marked ``idle`` in the listing)."""
TICKS = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of every live thread of this process, by thread name."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
        name = names.get(int(task.name), f"native-{task.name}")
        out[name] = out.get(name, 0.0) + cpu
    return out


async def workload(shape: str, n: int, work: Path) -> tuple[float, dict[str, float]]:
    """Run the shape once; its rate and the CPU seconds of each thread."""
    work.mkdir(parents=True, exist_ok=True)
    scheduler = await builder(4).store_path(work / "bench.db").build()
    try:
        subs = [TaskSubmission("noop", key=f"p-{i}") for i in range(n)]
        if shape == "batch":
            start = time.perf_counter()
            for first in range(0, n, 1_000):
                await scheduler.submit_batch(subs[first : first + 1_000])
            rate = n / (time.perf_counter() - start)
            return rate, thread_cpu()
        if shape == "submit":
            start = time.perf_counter()
            for sub in subs:
                await scheduler.submit(sub)
            rate = n / (time.perf_counter() - start)
            return rate, thread_cpu()
        await scheduler.__aenter__()
        pump = EventPump(await scheduler.subscribe())
        start = time.perf_counter()
        for sub in subs:
            await scheduler.submit(sub)
        await pump.wait(lambda p: p.counts["completed"] >= n or p.missed > 0, 600)
        rate = n / (time.perf_counter() - start)
        cpu = thread_cpu()
        await pump.close()
        return rate, cpu
    finally:
        await scheduler.close()


class ThreadProfiles:
    """A ``cProfile.Profile`` for every thread started while installed, and the main one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.profiles: list[tuple[str, cProfile.Profile]] = []

    def _starter(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        with self.lock:
            self.profiles.append((threading.current_thread().name, profile))
        profile.enable()

    def install(self) -> cProfile.Profile:
        threading.setprofile(self._starter)
        main = cProfile.Profile()
        self.profiles.append(("MainThread (producer)", main))
        return main

    def uninstall(self) -> None:
        threading.setprofile(None)


def _idle(key: tuple[str, int, str]) -> bool:
    return any(w in key[2] for w in IDLE)


def _where(key: tuple[str, int, str]) -> str:
    file, line, func = key
    if file == "~":
        return func  # a builtin, e.g. <method 'poll' of 'zmq.Poller' objects>
    path = Path(file)
    with_repo = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name
    return f"{with_repo}:{line} {func}"


def listing(name: str, profile: cProfile.Profile, top: int, cpu: float | None) -> str:
    stats = pstats.Stats(profile)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values())
    idle = sum(tt for k, (_, _, tt, _, _) in entries.items() if _idle(k))
    cpu_text = f", {cpu:.2f}s CPU unprofiled" if cpu is not None else ""
    lines = [f"== {name}: {total:.2f}s profiled, {idle:.2f}s of it waiting{cpu_text}"]
    by_self = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)
    lines.append("   self s   calls  (top by self time)")
    for key, (_, calls, tt, _, _) in by_self[:top]:
        mark = "  idle" if _idle(key) else ""
        lines.append(f"   {tt:6.2f} {calls:7d}  {_where(key)}{mark}")
    by_cum = sorted(entries.items(), key=lambda kv: kv[1][3], reverse=True)
    lines.append("   cum s    calls  (top by cumulative time, repository code)")
    shown = 0
    for key, (_, calls, _, ct, _) in by_cum:
        if not key[0].startswith(str(REPO)) or shown >= top:
            continue
        shown += 1
        lines.append(f"   {ct:6.2f} {calls:7d}  {_where(key)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", nargs="?", choices=("drain", "submit", "batch"), default="drain")
    parser.add_argument(
        "--n", type=int, help="tasks (default: drain 20,000, submit 5,000, batch 20,000)"
    )
    parser.add_argument("--top", type=int, default=12, help="functions listed per thread")
    parser.add_argument("--out", type=Path, help="directory of the .pstats files")
    args = parser.parse_args()
    n = args.n or (5_000 if args.shape == "submit" else 20_000)
    out = args.out or RESULTS / f"profile-{args.shape}"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.pstats"):  # a previous run's threads may have other names
        stale.unlink()

    with tempfile.TemporaryDirectory(prefix="taskmill-profile-") as tmp:
        started = time.process_time()
        rate, cpu = asyncio.run(workload(args.shape, n, Path(tmp) / "plain"))
        print(f"{args.shape}, {n:,} tasks, unprofiled: {rate:,.0f} tasks/s")
        print(f"process CPU {time.process_time() - started:.2f}s; per thread (unprofiled):")
        for name, seconds in sorted(cpu.items(), key=lambda kv: kv[1], reverse=True):
            if seconds >= 0.01:
                print(f"   {seconds:6.2f}s  {name}")
        profiles = ThreadProfiles()
        main_profile = profiles.install()
        main_profile.enable()
        try:
            rate, _ = asyncio.run(workload(args.shape, n, Path(tmp) / "profiled"))
        finally:
            main_profile.disable()
            profiles.uninstall()
    print(f"\nprofiled: {rate:,.0f} tasks/s (cProfile in every thread)\n")
    for name, profile in profiles.profiles:
        entries = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        busy = sum(tt for k, (_, _, tt, _, _) in entries.items() if not _idle(k))
        if busy < 0.05:
            continue  # a thread that only waited (an idle actor, a helper thread)
        cpu_name = "MainThread" if name.startswith("MainThread") else name
        print(listing(name, profile, args.top, cpu.get(cpu_name)))
        print()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        profile.dump_stats(str(out / f"{safe}.pstats"))
    print(f"pstats files: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
