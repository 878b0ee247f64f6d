"""One run of one shape in this (fresh) process: ``python -m bench.child NAME [--quick]``.

Prints the metrics as the last line, ``RESULT {json}``, with this process's peak RSS
(``peak_rss_mb``: for an embedded shape, every actor thread's memory is in it). ``--cpus 0``
confines the run (and every process it starts) to CPU 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from bench.catalog import Options, run_once
from bench.common import peak_rss_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpus", help="confine this process to these CPUs (e.g. 0 or 0,1)")
    args = parser.parse_args()
    if args.cpus and args.cpus != "all":  # before any thread or process starts: all inherit it
        os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    metrics = run_once(args.shape, Options(quick=args.quick, big=args.big, seed=args.seed))
    metrics["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(metrics), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
