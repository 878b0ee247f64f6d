"""A producer in its own process: ``python -m tests.system_client N`` submits N tasks.

It finds the deployment in ``TASKMILL_*`` (``Client()``), submits three quarters of the tasks as
batches of no-op tasks and the rest one by one as sleepy tasks, and prints one JSON object:
``{"ids": [...], "kinds": {kind: count}}``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

from taskmill.sync_client import Client
from taskmill.task import TaskSubmission


def main(n: int) -> None:
    quick = n * 3 // 4
    batch = [TaskSubmission("noop", key=f"noop-{i}", label=f"noop {i}") for i in range(quick)]
    outcomes = []
    with Client() as client:
        for start in range(0, len(batch), 50):
            outcomes += client.submit_batch(batch[start : start + 50])
        for i in range(n - quick):
            outcomes.append(
                client.submit(
                    TaskSubmission("sleepy", key=f"sleepy-{i}", label=f"sleepy {i}").payload_json(
                        {"seconds": 0.02}
                    )
                )
            )
    kinds = Counter(o.kind.value for o in outcomes)
    print(json.dumps({"ids": [o.id for o in outcomes], "kinds": dict(kinds)}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
