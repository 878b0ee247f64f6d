"""What tags cost the Store, counted in SQLite virtual-machine steps rather than timed.

    python bench/tag_steps.py [--n N]

``StoreDB`` called directly on a file: ``N`` tasks submitted in batches of 1,000, then drained
(claims of 32, each followed by the ``finish`` of what it claimed), and 1,000 single submissions;
once untagged and once with one tag each (skipped on a version without tags). SQLite counts the
steps of its virtual machine through a progress handler called at each one: the same figure on
every run and every machine, which a loaded machine's timings are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from actors.store.db import StoreDB
from bus.clock import FakeClock
from bus.kinds import Submission, TaskResult
from taskmill.task import generate_dedup_key


def steps(db: StoreDB, action: Callable[[], object]) -> int:
    count = 0

    def step() -> bool:
        nonlocal count
        count += 1
        return False

    conn = db._core.conn  # the Store's own connection: only this probe reaches in
    conn.set_progress_handler(step, 1)
    try:
        action()
    finally:
        conn.set_progress_handler(None)
    return count


def measure(n: int, tagged: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = StoreDB(str(Path(tmp) / "tasks.db"), clock=FakeClock())
        subs = [Submission("t", generate_dedup_key("t", str(i).encode()), "t") for i in range(n)]
        singles = [
            Submission("u", generate_dedup_key("u", str(i).encode()), "u") for i in range(1000)
        ]
        if tagged:
            subs = [
                dataclasses.replace(s, tags={"tenant": f"t{i % 10}"}) for i, s in enumerate(subs)
            ]

        def drain() -> None:
            while rows := db.claim_next(32)[0]:
                db.finish([TaskResult(r.id, "ok") for r in rows])

        batched = steps(db, lambda: [db.submit(subs[i : i + 1000]) for i in range(0, n, 1000)])
        drained = steps(db, drain)
        single = steps(db, lambda: [db.submit([s]) for s in singles])
        db.close()
    return {
        "batch submit": batched / n,
        "claim + finish": drained / n,
        "single submit": single / len(singles),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    n = parser.parse_args().n
    kinds = ["untagged"]
    if "tags" in {f.name for f in dataclasses.fields(Submission)}:
        kinds.append("one tag")
    for kind in kinds:
        figures = measure(n, kind != "untagged")
        print(kind + ": " + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) + " steps/task")


if __name__ == "__main__":
    main()
