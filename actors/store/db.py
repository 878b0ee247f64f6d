"""``StoreDB``: the only code that touches SQLite. Pure methods, one per Store message kind.

One apsw connection in WAL mode (``synchronous=NORMAL``: a commit survives a crash of the
process, and WAL keeps readers of the file off the writer's back). Every write runs in an
immediate transaction; ``batch()`` lets the Store actor run many requests in one transaction
(group commit, see ``actors.store.core.Batch``), and a failing request still rolls back only
itself. Times are epoch milliseconds from the injected clock. Every apsw error surfaces as
``DatabaseError``.

The rules are those of ``docs/semantics.md``; the state changes live in ``submit``
(submitting), ``lifecycle`` (finishing, cancelling, parents) and ``claim`` (starting), the reads
in ``queries``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import apsw

from actors.store import claim, dependencies, flow, lifecycle, metrics, queries, recurring, tags
from actors.store.checkpoint import Checkpointer
from actors.store.core import Batch, Core
from actors.store.retry import Retries
from actors.store.schema import BUSY, TASK_COLUMNS, migrate, task_row
from actors.store.submit import submit as apply_submissions
from bus.clock import Clock
from bus.errors import DatabaseError, InvalidRequest
from bus.kinds import (
    ClaimSpec,
    CountsReply,
    GroupsReply,
    History,
    HistoryReply,
    HistoryRow,
    LookupReply,
    Outcome,
    QueueCount,
    RetrySpec,
    ScheduleRow,
    Submission,
    TaskResult,
    TaskRow,
    TasksReply,
    ThroughputReply,
    Transition,
    TypeStatsReply,
)
from bus.kinds_flow import FlowReply, GroupAllocationRow, PausedGroupRow, RateLimitRow
from bus.limits import MAX_ERROR_CHARS, cut_text

BUSY_TIMEOUT_MS = 5_000
PRIVATE_MODE = 0o600
"""The database and its WAL and shm files hold payloads (secrets, maybe): their owner's only."""


def _make_private(path: str) -> None:
    """Create the database file with ``PRIVATE_MODE`` whatever the umask, and tighten files an
    earlier run left readable. SQLite gives the WAL and shm files it creates the database file's
    mode, so a private database keeps its companions private."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != PRIVATE_MODE:
            os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        try:
            if stat.S_IMODE(os.stat(path + suffix).st_mode) != PRIVATE_MODE:
                os.chmod(path + suffix, PRIVATE_MODE)
        except FileNotFoundError:
            continue


FlowPolicySpec = tuple[
    Mapping[str, tuple[int, int, int] | None],
    Mapping[str, float | None],
    Mapping[str, int | None],
    float | None,
]
"""(rates, weights, minimum slots, default weight): the flow policy a StoreDB opens with."""


class StoreDB:
    """The task database. Not thread-safe: the Store actor's thread is its only user."""

    def __init__(
        self,
        path: str,
        *,
        clock: Clock,
        retention_max_count: int | None = 10_000,
        retention_max_age_days: float | None = None,
        prune_every: int = 100,
        recover_running: bool = True,
        retry_policies: Mapping[str, RetrySpec] | None = None,
        default_retry: RetrySpec | None = None,
        ttls: Mapping[str, float] | None = None,
        default_ttl: float | None = None,
        group_limits: tuple[int, Mapping[str, int]] | None = None,
        flow_policy: FlowPolicySpec | None = None,
        aging: flow.Aging | None = None,
    ) -> None:
        """``recover_running``: on open, put ``running`` rows back to ``pending`` (the whole
        process restarted, so nothing runs them). A Store restarted alone in a multi-process
        deployment passes False: hosts may still be running those tasks, and the Dispatcher
        releases the ones no host reports.

        ``group_limits``: the (default, per-group) limits the application was built with, set
        as the group policy's ``configured`` layer on open — the GroupLimiter sets the same when
        it starts, but a claim may come before it does; ``flow_policy`` likewise, the rate
        limits and fair shares it was built with. ``aging``: priority aging in the claim."""
        self.aging = aging
        self.path = str(path)
        self.recover_running = recover_running
        self.retry_policies = dict(retry_policies or {})
        """Retry policies per task type (the builder's ``retry_policy``)."""
        self.default_retry = default_retry
        """The builder's ``default_retry_policy``; None: the v1 rule (``max_retries``, no delay)."""
        self._retries = Retries(self.retry_policies, default_retry)
        self.ttls = dict(ttls or {})
        """TTLs per task type (the builder's ``task_ttl``), for submissions that give none."""
        self.default_ttl = default_ttl
        try:
            _make_private(self.path)
            conn = apsw.Connection(self.path)
            conn.setbusytimeout(BUSY_TIMEOUT_MS)
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            conn.execute("PRAGMA synchronous = NORMAL")
            # The sub-journal (the pages a statement or savepoint may have to undo) stays in
            # memory instead of moving to a temporary file past 64 KiB: a full temporary
            # directory cannot fail a commit, and a commit of many results opens, writes and
            # deletes no file inside its transaction.
            conn.execute("PRAGMA temp_store = MEMORY")
            self._checkpointer = Checkpointer(self.path)
            conn.set_wal_hook(self._checkpointer.on_commit)
        except (apsw.Error, OSError) as exc:
            raise DatabaseError(f"cannot open the task database {self.path!r}: {exc}") from exc
        self._core = Core(
            conn,
            clock,
            retention_max_count=retention_max_count,
            retention_max_age_days=retention_max_age_days,
            prune_every=prune_every,
        )
        self._closed = False
        try:
            with self._core.atomic():
                migrate(conn)
        except (ValueError, apsw.Error) as exc:  # a newer schema; a failed upgrade, undone
            conn.close()
            raise DatabaseError(f"{self.path}: {exc}") from exc
        if group_limits is not None:
            default, limits = group_limits
            self.set_groups("configured", default, dict(limits), replace=True)
        if flow_policy is not None:
            self.set_flow("configured", *flow_policy, replace=True)
        self.recovered: list[Transition] = self.recover()
        """What recovery on open changed (resolved parents)."""

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def batch(self, isolated: bool = True) -> Iterator[Batch]:
        """One ``BEGIN IMMEDIATE`` transaction for many requests (see ``Batch``), committed when
        the block ends without error (rolled back when it raises, or when a request failed in a
        batch that is not ``isolated``).

        If the commit itself fails, everything is rolled back and ``DatabaseError`` raised.
        """
        if self._core.in_transaction:
            raise RuntimeError("StoreDB.batch() cannot be nested")
        tx = Batch(self._core, isolated)
        with self._core.atomic(undo=lambda: tx.undone):
            yield tx

    @property
    def retention_counters(self) -> dict[str, int]:
        return {
            "history_since_prune": self._core.terminal_since_prune,
            "history_pruned": self._core.pruned_total,
        }

    @property
    def statement_counters(self) -> dict[str, int]:
        """How often apsw's statement cache prepared a statement (parsed and planned) and how
        often it reused one prepared before, since the database was opened: a steady Store
        prepares nothing new. A statement SQLite itself prepares again, because a new binding
        expired it, shows in neither count (see ``store_core`` on ``+?``)."""
        cache = self._core.conn.cache_stats()
        return {"statements_prepared": cache["misses"], "statements_reused": cache["hits"]}

    # -- submitting --------------------------------------------------------------------------

    def submit(self, subs: Sequence[Submission], request_id: str | None = None) -> list[Outcome]:
        """Apply submissions in order in one transaction (all or nothing); one outcome each."""
        return self.submit_changes(subs, request_id)[0]

    def submit_changes(
        self, subs: Sequence[Submission], request_id: str | None = None
    ) -> tuple[list[Outcome], list[Transition]]:
        """``submit``, and what it did to other tasks: those it superseded, and their children
        cancelled with them (for the Dispatcher's events and running tasks)."""
        if self.ttls or self.default_ttl is not None:
            subs = [self._with_ttl(sub) for sub in subs]
        changes: list[Transition] = []
        with self._core.atomic():
            if any(getattr(sub, "recurring", None) is not None for sub in subs):
                return recurring.submit(self._core, subs, request_id, changes), changes
            return apply_submissions(self._core, subs, request_id, changes), changes

    def _with_ttl(self, sub: Submission) -> Submission:
        """The submission with its type's or the default TTL when it gives none (a child
        inherits its parent's instead)."""
        if sub.ttl_s is not None or sub.parent_id is not None or not isinstance(sub, Submission):
            return sub
        ttl = self.ttls.get(sub.task_type, self.default_ttl)
        return sub if ttl is None else dataclasses.replace(sub, ttl_s=ttl)

    # -- queries -----------------------------------------------------------------------------

    def get_task(self, id: int | None = None, key: str | None = None) -> TaskRow | None:
        row = queries.get_task(self._core, id, key)
        return None if row is None else queries.as_shown(self._core, [row])[0]

    def list_tasks(self, status: str, limit: int = 100, offset: int = 0) -> list[TaskRow]:
        return queries.list_tasks(self._core, status, limit, offset)

    def tasks_page(self, status: str, limit: int = 100, offset: int = 0) -> TasksReply:
        """``list_tasks`` as one reply: the rows that fit in a frame, and where the rest start."""
        return queries.tasks_page(self._core, status, limit, offset)

    def counts(self) -> CountsReply:
        return queries.counts(self._core)

    def depth(self) -> list[tuple[int, str | None, int]]:
        return queries.depth(self._core)

    def children(self, parent_id: int, limit: int = 100) -> list[TaskRow]:
        return queries.as_shown(self._core, queries.children(self._core, parent_id, limit))

    def dependencies(self, id: int, dependents: bool = False) -> list[int]:
        """The active tasks ``id`` waits for, or (``dependents``) the blocked tasks waiting
        for it, in id order."""
        return dependencies.dependencies(self._core, id, dependents)

    def queue_counts(self, type_split_limit: int = metrics.TYPE_SPLIT_LIMIT) -> list[QueueCount]:
        return metrics.queue_counts(self._core, type_split_limit)

    def running_by_group(self) -> dict[str, int]:
        return metrics.running_by_group(self._core)

    def lookup(self, key: str) -> LookupReply:
        return queries.lookup(self._core, key)

    def history(
        self,
        limit: int = 50,
        offset: int = 0,
        task_type: str | None = None,
        key: str | None = None,
        status: str | None = None,
    ) -> list[HistoryRow]:
        return queries.history(self._core, limit, offset, task_type, key, status)

    def result(self, task_id: int) -> list[HistoryRow]:
        """The newest terminal history row of a task, with its result: zero or one row."""
        return queries.result(self._core, task_id)

    def retry_dead_letter(self, history_id: int) -> list[Outcome]:
        """Submit a dead-lettered task again, as it was submitted (retry count 0), and remove its
        dead-letter row, in one transaction; one outcome (``duplicate`` when an active task
        holds its key: the row stays then)."""
        with self._core.atomic():
            row = queries.history_row_by_id(self._core, history_id)
            if row is None or row.status != "dead_letter":
                raise InvalidRequest(f"no dead-letter task with history id {history_id!r}")
            parent = row.parent_id
            if parent is not None and queries.get_task(self._core, id=parent) is None:
                parent = None  # its parent is gone: it runs on its own
            again = Submission(
                row.task_type,
                row.key,
                row.label,
                row.priority,
                row.payload,
                row.expected_read_bytes,
                row.expected_write_bytes,
                row.expected_net_rx_bytes,
                row.expected_net_tx_bytes,
                row.group_key,
                row.fail_fast,
                parent,
                tags=row.tags,
            )
            outcomes = apply_submissions(self._core, [again])
            if outcomes[0].kind != "duplicate":
                self._core.run("DELETE FROM history WHERE id = ?", (history_id,))
            return outcomes

    def history_page(self, query: History) -> HistoryReply:
        """``history`` as one reply: the rows that fit in a frame, and where the rest start."""
        return queries.history_page(self._core, query)

    def history_stats(self, task_type: str) -> TypeStatsReply:
        return queries.history_stats(self._core, task_type)

    def avg_throughput(self, task_type: str, n: int = 20) -> ThroughputReply:
        return queries.avg_throughput(self._core, task_type, n)

    def learned_io(
        self, types: Sequence[str], min_runs: int = 5, window: int = 20
    ) -> dict[str, list[float]]:
        return queries.learned_io(self._core, list(types), min_runs, window)

    def prune(self, keep: int | None = None, days: float | None = None) -> int:
        """Delete history beyond the newest ``keep`` rows and/or older than ``days``."""
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
            raise InvalidRequest(f"keep must be a non-negative integer, got {keep!r}")
        if days is not None and (isinstance(days, bool) or days < 0):
            raise InvalidRequest(f"days must be a non-negative number, got {days!r}")
        with self._core.atomic():
            return self._core.prune(keep, days)

    def retention_tick(self) -> int:
        """Apply the retention policy now and forget request ids older than an hour."""
        with self._core.atomic():
            return self._core.retention_tick()

    # -- dispatching -------------------------------------------------------------------------

    def peek(
        self, limit: int, max_priority: int = 255, preempt_priority: int = -1
    ) -> list[TaskRow]:
        """The rows ``claim_next`` would take now (payload left out), in dispatch order."""
        pick, _ = claim.walk(self._core, limit, max_priority, preempt_priority, aging=self.aging)
        return [] if pick is None else [task_row(r) for r in pick.out]

    def claim(self, ids: Sequence[int], now_ms: int = 0) -> list[TaskRow]:
        """Move the chosen rows still pending or paused to running, each while its group has
        room; the claimed rows, with payload, in dispatch order."""
        with self._core.atomic():
            return claim.claim_ids(self._core, ids, now_ms or self._core.now())

    def claim_next(
        self, limit: int, max_priority: int = 255, preempt_priority: int = -1, now_ms: int = 0
    ) -> tuple[list[TaskRow], bool]:
        """Walk the queue and claim (see ``actors.store.claim``); the claimed rows, and whether
        nothing more can be claimed until something changes."""
        with self._core.atomic():
            now = now_ms or self._core.now()
            return claim.claim_next(
                self._core, limit, max_priority, preempt_priority, now, self.aging
            )

    def expire(self, now_ms: int = 0, limit: int = 500) -> list[Transition]:
        """Tasks past their TTL that have not started go to history as ``expired``."""
        queries.check_limit(limit)
        with self._core.atomic():
            return lifecycle.expire(self._core, now_ms or self._core.now(), limit)

    def next_due(self) -> int | None:
        """When the earliest task scheduled for later is due (epoch ms), or None."""
        return claim.next_due(self._core)

    def groups(self) -> GroupsReply:
        return claim.groups(self._core)

    def set_groups(
        self,
        layer: str,
        default: int | None = None,
        limits: Mapping[str, int | None] | None = None,
        replace: bool = False,
    ) -> None:
        with self._core.atomic():
            claim.set_policy(self._core, layer, default, limits or {}, replace)

    def set_flow(
        self,
        layer: str,
        rates: Mapping[str, tuple[int, int, int] | None] | None = None,
        weights: Mapping[str, float | None] | None = None,
        min_slots: Mapping[str, int | None] | None = None,
        default_weight: float | None = None,
        replace: bool = False,
        reset_weights: bool = False,
    ) -> FlowReply:
        """Change one layer of the rate limits and fair shares (see ``flow.set_flow``); the
        flow policy in force after it."""
        with self._core.atomic():
            before = flow.load(self._core)
            flow.set_flow(
                self._core, layer, rates or {}, weights or {}, min_slots or {}, default_weight,
                replace, reset_weights,
            )  # fmt: skip
            after = flow.load(self._core)
            changes = [
                (group, before.weight(group), after.weight(group))
                for group in sorted(before.weights.keys() | after.weights.keys())
                if before.weight(group) != after.weight(group)
            ]
            return dataclasses.replace(self.flow_state(), weight_changes=changes)

    def pause_group(self, group: str, until_ms: int | None = None) -> tuple[int, int] | None:
        """Pause a group: (its waiting tasks, its running ones), or None if it was paused."""
        with self._core.atomic():
            return flow.pause_group(self._core, group, until_ms, self._core.now())

    def resume_group(self, group: str, due_only: bool = False) -> int | None:
        """Resume a group: its waiting tasks, or None if it was not paused."""
        with self._core.atomic():
            return flow.resume_group(self._core, group, self._core.now(), due_only)

    def flow_state(self) -> FlowReply:
        """The rate limits in force with their tokens, the paused groups, the fair shares."""
        now = self._core.now()
        policy = flow.load(self._core)
        aging = self.aging
        return FlowReply(
            [RateLimitRow(*row) for row in flow.rate_state(self._core, now)],
            [PausedGroupRow(*row) for row in flow.paused_state(self._core)],
            dict(policy.weights),
            policy.default_weight,
            dict(policy.min_slots),
            [GroupAllocationRow(*row) for row in claim.allocations(self._core)],
            None
            if aging is None
            else [aging.grace_ms, aging.interval_ms, aging.max_effective, aging.urgent],
        )

    def finish(self, results: Sequence[TaskResult], max_retries: int = 3) -> list[Transition]:
        """Apply executor results (see ``lifecycle.finish``); one transition each."""
        with self._core.atomic():
            return lifecycle.finish(self._core, results, max_retries, self._retries)

    def finish_and_claim(
        self, results: Sequence[TaskResult], max_retries: int, then: ClaimSpec | None
    ) -> tuple[list[Transition], list[TaskRow], bool]:
        """``finish``, then with ``then`` the next claim in the same transaction, which sees the
        slots and the group room the results freed."""
        with self._core.atomic():
            transitions = self.finish(results, max_retries)
            if then is None:
                return transitions, [], True
            claimed, exhausted = self.claim_next(
                then.limit, then.max_priority, then.preempt_priority, then.now_ms
            )
            return transitions, claimed, exhausted

    def preempt(self, ids: Sequence[int]) -> list[TaskRow]:
        """Running rows → paused (``started_at`` cleared, retry_count unchanged)."""
        paused: list[TaskRow] = []
        with self._core.atomic():
            for task_id in dict.fromkeys(ids):
                row = self._core.one(
                    "UPDATE tasks SET status = 'paused', started_at_ms = NULL "
                    f"WHERE id = ? AND status = 'running' RETURNING {TASK_COLUMNS}",
                    (task_id,),
                )
                if row is not None:
                    paused.append(task_row(row))
        return paused

    def cancel(self, id: int, recurring_too: bool = False) -> list[Transition]:
        """Cancel a task and its children (deepest first); [] when no active task has ``id``.
        ``recurring_too``: cancel the schedule ``id`` names instead (its active instances, and
        the schedule itself: a ``schedule_cancelled`` transition); [] when there is none."""
        with self._core.atomic():
            if not recurring_too:
                return lifecycle.cancel(self._core, id)
            schedule = recurring.find(self._core, id)
            if schedule is None:
                return []
            out: list[Transition] = []
            for (instance,) in self._core.all(
                "SELECT id FROM tasks WHERE schedule_id = ? ORDER BY id", (schedule.id,)
            ):
                out += lifecycle.cancel(self._core, instance)
            return [*out, recurring.cancelled(self._core, schedule)]

    # -- recurring schedules -----------------------------------------------------------------

    def pause_recurring(self, id: int) -> bool:
        """No next instance of the schedule ``id`` names until it is resumed; False: none."""
        with self._core.atomic():
            return recurring.pause(self._core, id)

    def resume_recurring(self, id: int) -> list[Outcome]:
        """Resume the schedule; its next instance is inserted at once when none is active."""
        with self._core.atomic():
            return recurring.resume(self._core, id)

    def recurring_schedules(self) -> list[ScheduleRow]:
        return recurring.schedules(self._core)

    def cancel_where(
        self,
        group: str | None = None,
        task_type: str | None = None,
        tag: tuple[str, str] | None = None,
    ) -> list[Transition]:
        """Cancel every active task of a group, of a type or with a tag (exactly one given),
        with their children, in one transaction (see ``tags.cancel_where``)."""
        with self._core.atomic():
            return tags.cancel_where(self._core, group, task_type, tag)

    def task_ids_by_tags(
        self, filters: Mapping[str, str], status: str | None = None, limit: int = 100_000
    ) -> list[int]:
        return tags.task_ids_by_tags(self._core, filters, status, limit)

    def count_by_tag(self, key: str) -> list[tuple[str, int]]:
        return tags.count_by_tag(self._core, key)

    def release(
        self,
        ids: Sequence[int],
        error: str = "executor host lost",
        max_retries: int | None = None,
        *,
        count_retry: bool = True,
    ) -> list[Transition]:
        """Running rows of a lost host → pending with retry_count + 1 and ``last_error``.

        With ``max_retries``, a row that has already used its retries fails instead, so a task
        that keeps crashing its host cannot loop forever. One transition per id (``ignored`` for
        rows not running).
        """
        out: list[Transition] = []
        error = cut_text(error, MAX_ERROR_CHARS)
        with self._core.atomic():
            for task_id in dict.fromkeys(ids):
                task = lifecycle.load(self._core, task_id)
                if task is None or task.row.status != "running":
                    out.append(Transition(id=task_id, result="ignored"))
                elif (
                    count_retry
                    and max_retries is not None
                    and task.row.retry_count >= self._retries.max_retries(task.row, max_retries)
                ):
                    now = self._core.now()
                    lifecycle.fail(self._core, task, error, now, out, status="dead_letter")
                else:
                    self._core.run(
                        "UPDATE tasks SET status = 'pending', retry_count = retry_count + ?, "
                        "last_error = ?, started_at_ms = NULL WHERE id = ?",
                        (1 if count_retry else 0, error, task_id),
                    )
                    retry = lifecycle.transition(task.row, "retry", error=error, was_running=True)
                    out.append(retry)
        return out

    # -- lifecycle of the database -----------------------------------------------------------

    def recover(self) -> list[Transition]:
        """After a restart: running rows → pending (retry_count kept); waiting parents whose
        children have all finished are resolved (finalize-ready or failed); dependencies on
        tasks no longer active are dropped, and blocked tasks left without any unblocked."""
        with self._core.atomic():
            if self.recover_running:
                self._core.run(
                    "UPDATE tasks SET status = 'pending', started_at_ms = NULL "
                    f"WHERE status = 'running' AND {BUSY}"
                )
            return lifecycle.resolve_waiting(self._core) + dependencies.recover(self._core)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._checkpointer.close()
        conn = self._core.conn
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except apsw.Error as exc:
            # Closing checkpoints too, and may report the failure again (a full disk): forced,
            # the connection closes all the same; the WAL keeps every commit for the next open.
            with contextlib.suppress(apsw.Error):
                conn.close(True)
            raise DatabaseError(f"closing {self.path}: {exc}") from exc
        conn.close()
