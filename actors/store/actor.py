"""The Store actor: the task database behind a ROUTER, with group commit.

Owns: the SQLite database (through ``StoreDB``, opened in the actor's own thread by ``setup`` and
closed — WAL checkpointed — in ``on_stop``). The Store is at the bottom of the actor graph: it
asks nobody.

Sockets:

* ROUTER bound at ``endpoint`` — requests from clients, the Dispatcher, the GroupLimiter,
  executor hosts and the CLI, served by ``bus.server.RequestServer``; and, to the Dispatcher (the
  sender of the latest claim), the one-way ``store.changed``, behind the replies sent to it.

Handles every ``store.*`` kind of ``docs/protocol.md`` (each answered with its reply kind, or
``error`` with a code); plus ``ping``/``stats``/``stop`` like every actor.

Emits: ``store.changed`` after a commit in which Submits inserted, upgraded, requeued or
superseded tasks (with the transitions of what they superseded: never folded), or the group
policy changed — unless an earlier notification is still unanswered (no claim since,
and sent less than ``UNANSWERED_FOR_S`` ago), this one is not more urgent, and it cannot preempt
(``urgent_priority``): the Dispatcher looks at the queue then anyway. With the Dispatcher's
standing claim (``_claim_standing``) the notice carries the rows claimed for it.

Group commit: the loop hands over every request that arrived together; they run in one
``BEGIN IMMEDIATE`` transaction, then the transaction commits, and only then is any reply sent or
notification sent — an acknowledged submission is durable. If the commit itself fails, every
request of the batch gets the database error. A failing request is rolled back alone and answered
with its error: the batch runs first without savepoints, and when one of several requests fails,
that transaction is rolled back and the batch runs again with each request in a savepoint (in
the common case no savepoint statements, and no sub-journal for SQLite to write).

Timers: every 60 s the retention policy is applied and request ids older than an hour are
forgotten (besides the pruning done every ``prune_every`` terminal transitions).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import zmq

from actors.store.core import Batch
from actors.store.db import StoreDB
from bus.clock import Clock, SystemClock
from bus.errors import DatabaseError, ErrorCode, InvalidRequest, TaskmillError
from bus.kinds import (
    AvgThroughput,
    Cancel,
    CancelReply,
    CancelWhere,
    Children,
    Claim,
    ClaimNext,
    ClaimNextReply,
    ClaimSpec,
    CountByTag,
    Counts,
    DeadLetter,
    Dependencies,
    Depth,
    DepthReply,
    Error,
    Expire,
    Finish,
    FinishReply,
    GetGroups,
    GetResult,
    GetStoreMetrics,
    GetTask,
    History,
    HistoryReply,
    HistoryStats,
    IdsReply,
    LearnedIO,
    LearnedReply,
    ListTasks,
    Lookup,
    Ok,
    PauseRecurring,
    Peek,
    Preempt,
    Prune,
    RecurringReply,
    RecurringSchedules,
    Release,
    ResumeRecurring,
    RetryDeadLetter,
    SetGroups,
    StoreChanged,
    StoreMetrics,
    Submit,
    SubmitReply,
    TagCountsReply,
    TaskIdsByTags,
    TaskReply,
    TasksReply,
    Transition,
)
from bus.kinds_flow import GetFlow, GroupPauseReply, PauseGroup, ResumeGroup, SetFlow
from bus.latency import Latencies
from bus.protocol import Message, encode
from bus.runtime import Actor, ActorLoop
from bus.server import Request, RequestServer

log = logging.getLogger("taskmill.store")

MAINTENANCE_INTERVAL_S = 60.0
UNANSWERED_FOR_S = 1.0
"""How long an unanswered ``store.changed`` stands for later changes (see ``_folds``)."""

StoreHandler = Callable[[Any], Message]

_NO_CHANGE = ("duplicate", "rejected")
"""Submit outcomes that changed nothing."""


@dataclass(frozen=True, slots=True)
class _Standing:
    envelope: list[bytes]
    spec: ClaimSpec


def _left_standing(request: Request, reply: Message) -> _Standing | None:
    """The claim a Dispatcher's request leaves standing: what its claim could still have taken,
    when it found nothing more to take (``exhausted``)."""
    message = request.message
    spec = message.claim if isinstance(message, ClaimNext | Finish) else None
    if isinstance(reply, ClaimNextReply):
        taken, exhausted = len(reply.tasks), reply.exhausted
    elif isinstance(reply, FinishReply):
        taken, exhausted = len(reply.claimed), reply.exhausted
    else:
        return None
    return None if spec is None else _rest(request.envelope, spec, taken, exhausted)


def _rest(envelope: list[bytes], spec: ClaimSpec, taken: int, exhausted: bool) -> _Standing | None:
    """What a claim of ``spec`` that took ``taken`` rows leaves standing: the rest, only when it
    found nothing more to take. One cut short (its reply full) says so, and the Dispatcher
    claims again: standing on, the Store would start tasks for the slots that claim fills too."""
    if not exhausted or taken >= spec.limit:
        return None
    return _Standing(envelope, replace(spec, limit=spec.limit - taken, now_ms=0))


def _looks(message: Message) -> bool:
    """Whether the Dispatcher looks at the queue with this request (answering a
    ``store.changed``); the sender of the latest such request is who ``store.changed`` goes to."""
    if isinstance(message, Finish):
        return message.claim is not None
    return isinstance(message, ClaimNext | Peek | Claim)


def _ok(change: Callable[..., None], *args: Any) -> Ok:
    change(*args)
    return Ok()


def _paused(counts: tuple[int, int] | None) -> GroupPauseReply:
    return GroupPauseReply(False) if counts is None else GroupPauseReply(True, *counts)


def _resumed(count: int | None) -> GroupPauseReply:
    return GroupPauseReply(False) if count is None else GroupPauseReply(True, count)


_POLICY_CHANGES = (SetGroups, SetFlow, ResumeGroup)
"""Changes that may let waiting work start: the Dispatcher hears of them."""


def _claim(db: StoreDB, spec: ClaimSpec) -> ClaimNextReply:
    """A claim: first the tasks past their TTL expire (they never start), then the walk."""
    expired = db.expire(spec.now_ms)
    rows, exhausted = db.claim_next(
        spec.limit, spec.max_priority, spec.preempt_priority, spec.now_ms
    )
    return ClaimNextReply(rows, exhausted, db.next_due(), expired)


def _finish(db: StoreDB, message: Finish) -> FinishReply:
    if message.claim is None:
        transitions = db.finish(message.results, message.max_retries)
        # A recurring task's next instance may be due later: the Dispatcher's alarm must know.
        due = db.next_due() if any(t.result == "recurring" for t in transitions) else None
        return FinishReply(transitions, next_due_ms=due)
    transitions = db.finish(message.results, message.max_retries)
    claimed = _claim(db, message.claim)
    return FinishReply(
        transitions + claimed.transitions, claimed.tasks, claimed.exhausted, claimed.next_due_ms
    )


def _pair(tag: list[str] | None) -> tuple[str, str] | None:
    if tag is None:
        return None
    if not isinstance(tag, list | tuple) or len(tag) != 2:
        raise InvalidRequest("a tag is a [key, value] pair")
    return tag[0], tag[1]


def store_handlers(db: StoreDB) -> dict[type[Message], StoreHandler]:
    """The pure handler of every Store kind: a decoded request in, its reply out."""
    return {
        Submit: lambda m: SubmitReply(*db.submit_changes(m.submissions, m.request_id)),
        GetTask: lambda m: TaskReply(db.get_task(m.id, m.key)),
        ListTasks: lambda m: db.tasks_page(m.status, m.limit, m.offset),
        Counts: lambda m: db.counts(),
        Depth: lambda m: DepthReply(db.depth()),
        Children: lambda m: TasksReply(db.children(m.parent_id, m.limit)),
        Lookup: lambda m: db.lookup(m.key),
        Dependencies: lambda m: IdsReply(db.dependencies(m.id, m.dependents)),
        History: db.history_page,
        HistoryStats: lambda m: db.history_stats(m.task_type),
        AvgThroughput: lambda m: db.avg_throughput(m.task_type, m.n),
        LearnedIO: lambda m: LearnedReply(db.learned_io(m.task_types, m.min_runs, m.window)),
        Prune: lambda m: Ok(db.prune(m.keep, m.days)),
        Peek: lambda m: TasksReply(
            db.peek(m.claim.limit, m.claim.max_priority, m.claim.preempt_priority), db.next_due()
        ),
        GetResult: lambda m: HistoryReply(db.result(m.task_id)),
        DeadLetter: lambda m: db.history_page(History(m.limit, m.offset, status="dead_letter")),
        RetryDeadLetter: lambda m: SubmitReply(db.retry_dead_letter(m.history_id)),
        Claim: lambda m: TasksReply(db.claim(m.ids, m.now_ms)),
        ClaimNext: lambda m: _claim(db, m.claim),
        Finish: lambda m: _finish(db, m),
        Expire: lambda m: FinishReply(db.expire(limit=m.limit)),
        Preempt: lambda m: TasksReply(db.preempt(m.ids)),
        GetGroups: lambda m: db.groups(),
        SetGroups: lambda m: _ok(db.set_groups, m.layer, m.default, m.limits, m.replace),
        SetFlow: lambda m: db.set_flow(
            m.layer, m.rates, m.weights, m.min_slots, m.default_weight, m.replace, m.reset_weights
        ),
        PauseGroup: lambda m: _paused(db.pause_group(m.group, m.until_ms)),
        ResumeGroup: lambda m: _resumed(db.resume_group(m.group, m.due_only)),
        GetFlow: lambda m: db.flow_state(),
        Cancel: lambda m: CancelReply(db.cancel(m.id, m.recurring)),
        CancelWhere: lambda m: CancelReply(db.cancel_where(m.group, m.task_type, _pair(m.tag))),
        TaskIdsByTags: lambda m: IdsReply(db.task_ids_by_tags(m.tags, m.status, m.limit)),
        CountByTag: lambda m: TagCountsReply(db.count_by_tag(m.key)),
        PauseRecurring: lambda m: Ok(db.pause_recurring(m.id)),
        ResumeRecurring: lambda m: SubmitReply(db.resume_recurring(m.id)),
        RecurringSchedules: lambda m: RecurringReply(db.recurring_schedules()),
        Release: lambda m: FinishReply(
            db.release(m.ids, m.error, m.max_retries, count_retry=m.count_retry)
        ),
    }


class StoreActor(Actor):
    """Serves the task database over the bus (see the module docstring)."""

    name = "store"

    def __init__(
        self,
        db_factory: Callable[[], StoreDB],
        endpoint: str,
        *,
        urgent_priority: int = 0,
    ) -> None:
        """``urgent_priority``: the Dispatcher's preemption threshold; a submission at or above
        it (numerically at or below) is always notified, never folded into an earlier one."""
        self._db_factory = db_factory
        self.urgent_priority = urgent_priority
        self._clock: Clock = SystemClock()
        self.endpoint = endpoint
        self._db: StoreDB | None = None
        self._server: RequestServer | None = None
        self._handlers: dict[type[Message], StoreHandler] = {}
        self.counters: dict[str, int] = {
            "requests": 0,
            "batches": 0,
            "commits": 0,
            "rollbacks": 0,
            "reruns": 0,
            "failed_commits": 0,
            "errors": 0,
            "max_batch": 0,
            "inserted": 0,
            "upgraded": 0,
            "requeued": 0,
            "duplicates": 0,
            "notifications": 0,
            "notifications_saved": 0,
            "standing_claims": 0,
            "pushes_discounted": 0,
        }
        self.transactions = Latencies()
        """How long each batch's transaction took, commit included (``store.metrics``)."""
        self._standing: _Standing | None = None
        """The rest of the Dispatcher's last claim, to apply to work as it arrives."""
        self._pushed: ClaimNextReply | None = None
        """What the standing claim took in the batch just committed, for ``store.changed``."""
        self._push = time.time_ns()
        """The number of the latest push (``StoreChanged.push``): from the time of the start, so
        that a restarted Store numbers its pushes past every one the Dispatcher saw before."""
        self._unseen: list[tuple[int, int]] = []
        """(push, rows) of the pushes since the Dispatcher's last claim was read: a claim of its
        that had not handled one of them counted the slots its rows took as free."""
        self._watcher: list[bytes] | None = None
        """The routing envelope of the Dispatcher (the sender of the latest claim)."""
        self._unanswered: tuple[int, float] | None = None
        """(``min_priority``, when) of the last ``store.changed`` while no peek or claim
        followed it."""

    @property
    def db(self) -> StoreDB:
        if self._db is None:
            raise RuntimeError("the Store actor is not set up")
        return self._db

    def setup(self, loop: ActorLoop) -> None:
        # The database is opened here, in the actor's thread, which is then its only user.
        db = self._db_factory()
        try:
            router = loop.socket(zmq.ROUTER)
            loop.bind(router, self.endpoint)
        except BaseException:
            db.close()  # on_stop is not called when setup fails
            raise
        self._db = db
        self._handlers = store_handlers(db)
        self._handlers[GetStoreMetrics] = lambda m: self._metrics()
        self._server = RequestServer(loop, router, self, self._on_batch)
        self._clock = loop.clock
        loop.call_every(MAINTENANCE_INTERVAL_S, self._maintenance)
        if db.recovered:
            log.info("store: recovery resolved %d task(s)", len(db.recovered))

    def on_stop(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except DatabaseError as exc:
                # The checkpoint on close needs room the disk may not have (it is full): every
                # commit is already safe in the WAL, and the next open applies it. A stop is
                # still a clean stop.
                log.warning("store: closed without moving the WAL into the database: %s", exc)

    def stats(self) -> dict[str, Any]:
        counters: dict[str, Any] = dict(self.counters)
        if self._db is not None:
            counters.update(self._db.retention_counters)
            counters.update(self._db.statement_counters)
            counters["path"] = self._db.path
        return counters

    # -- the batch handler -------------------------------------------------------------------

    def _on_batch(self, requests: list[Request]) -> None:
        self.counters["requests"] += len(requests)
        self.counters["batches"] += 1
        self.counters["max_batch"] = max(self.counters["max_batch"], len(requests))
        replies: list[Message] | None
        started = self._clock.monotonic()
        self._discount_pushes(requests)
        try:
            replies = self._attempt(requests, isolated=False)
            if replies is None:
                # A request failed among others: the batch's transaction was rolled back whole.
                # Once more, each request in a savepoint, so the failure undoes only its own.
                self.counters["reruns"] += 1
                replies = self._attempt(requests, isolated=True)
                assert replies is not None
        except TaskmillError as exc:  # BEGIN or COMMIT failed: nothing of the batch was written
            self.counters["failed_commits"] += 1
            log.error("store: batch of %d requests not committed: %s", len(requests), exc)
            replies = [Error(int(exc.code), exc.message) for _ in requests]
        self.transactions.observe(self._clock.monotonic() - started)
        # Only now, after the commit, does anyone hear about the batch.
        for request, reply in zip(requests, replies, strict=True):
            if isinstance(reply, Error):
                self.counters["errors"] += 1
            request.reply(reply)
        if any(_looks(r.message) for r in requests):
            self._unanswered = None  # the Dispatcher looked at the queue: the next change is news
        self._claim_standing(requests, replies)
        self._notify(requests, replies)

    def _discount_pushes(self, requests: list[Request]) -> None:
        """A claim of the Dispatcher's counted its free slots before it handled the rows pushed
        since the push it names (they crossed on the pipe): those slots are taken, so its limit
        is lowered by their rows. Every push so far goes out before this claim's reply, so the
        Dispatcher has handled them all by its next claim."""
        for request in requests:
            message = request.message
            if not isinstance(message, ClaimNext | Finish) or message.claim is None:
                continue
            spec = message.claim
            unseen = sum(rows for push, rows in self._unseen if push > spec.pushes_seen)
            if unseen:
                spec = replace(spec, limit=max(0, spec.limit - unseen))
                request.message = replace(message, claim=spec)
                self.counters["pushes_discounted"] += unseen
            self._unseen.clear()

    def _attempt(self, requests: list[Request], *, isolated: bool) -> list[Message] | None:
        """Run the batch in one transaction and commit it; the replies. Not ``isolated`` (no
        savepoints), a failing request rolls the transaction back: a request alone is answered
        with its error, a batch of several gives None, to be run again isolated."""
        replies: list[Message] = []
        with self.db.batch(isolated=isolated) as tx:
            for request in requests:
                replies.append(self._run_one(tx, request.message))
                if tx.undone and len(requests) > 1:
                    break
        if not tx.undone:
            self.counters["commits"] += 1
            return replies
        if len(requests) > 1:
            return None
        self._rolled_back(replies[0])
        return replies

    def _metrics(self) -> StoreMetrics:
        db = self.db
        return StoreMetrics(
            db.queue_counts(),
            db.running_by_group(),
            submitted=self.counters["inserted"],
            transactions=self.transactions.to_wire(),
        )

    def _claim_standing(self, requests: list[Request], replies: list[Message]) -> None:
        """Apply the Dispatcher's standing claim to work this batch brought.

        A claim of the Dispatcher's that found less than it could take leaves the rest standing
        (``_standing``): when work arrives, the Store claims it at once and sends the rows with
        the ``store.changed`` that announces them — no round trip for the Dispatcher to make,
        and never two claims at once (its next claim replaces this one). The claim is a
        transaction of its own, after the batch's replies went out: a submitter never waits
        for it."""
        standing, arrived = self._standing, False
        for request, reply in zip(requests, replies, strict=False):
            message = request.message
            if _looks(message):
                standing, arrived = _left_standing(request, reply), False
            elif isinstance(reply, SubmitReply):
                arrived = arrived or any(o.kind not in _NO_CHANGE for o in reply.outcomes)
            elif isinstance(message, _POLICY_CHANGES) and not isinstance(reply, Error):
                arrived = True
        self._standing, self._pushed = standing, None
        if standing is None or not arrived:
            return
        spec = standing.spec
        try:
            with self.db.batch() as tx:
                reply = tx.run(lambda: _claim(self.db, spec))
            self.counters["commits"] += 1
        except TaskmillError as exc:
            log.warning("store: standing claim not made: %s", exc)
            return
        self._pushed = reply
        self._standing = _rest(standing.envelope, spec, len(reply.tasks), reply.exhausted)
        self.counters["standing_claims"] += 1

    def _rolled_back(self, reply: Message) -> None:
        """A request alone in its batch failed: its transaction was rolled back, not committed."""
        self.counters["rollbacks"] += 1
        if isinstance(reply, Error) and reply.code == ErrorCode.DATABASE:
            log.error("store: request not committed: %s", reply.reason)

    def _run_one(self, tx: Batch, message: Message) -> Message:
        handler = self._handlers.get(type(message))
        if handler is None:
            return Error(int(ErrorCode.UNKNOWN_KIND), f"the store does not handle {message.KIND}")
        try:
            return tx.run(lambda: handler(message))
        except TaskmillError as exc:
            return Error(int(exc.code), exc.message)
        except Exception as exc:  # a bug: answer, log, keep serving; the savepoint is undone
            log.exception("store: handler for %s failed", message.KIND)
            return Error(int(ErrorCode.INTERNAL), f"{type(exc).__name__}: {exc}")

    def _notify(self, requests: list[Request], replies: list[Message]) -> None:
        count = 0
        most_urgent = 255
        policy_changed = False
        changes: list[Transition] = []
        for request, reply in zip(requests, replies, strict=True):
            if _looks(request.message):
                self._watcher = request.envelope
            if isinstance(request.message, _POLICY_CHANGES) and not isinstance(reply, Error):
                policy_changed = True  # a limit may have been raised: a group may have room
            if not isinstance(reply, SubmitReply):
                continue
            changes += reply.transitions
            # A dead letter submitted again (store.retry_dead_letter) wakes the Dispatcher; it
            # never preempts (its outcome has no submission of the request's own to look at).
            subs = request.message.submissions if isinstance(request.message, Submit) else []
            kinds = Counter(outcome.kind for outcome in reply.outcomes)
            for kind, n in kinds.items():
                key = "duplicates" if kind == "duplicate" else kind
                self.counters[key] = self.counters.get(key, 0) + n
            count += len(reply.outcomes) - kinds["duplicate"] - kinds["rejected"]
            # A child never preempts (spawn_child has no preemption): it wakes the Dispatcher
            # without carrying its priority.
            urgent = (
                outcome.priority
                for submission, outcome in zip(subs, reply.outcomes, strict=False)
                if outcome.kind not in _NO_CHANGE and submission.parent_id is None
            )
            most_urgent = min(most_urgent, min(urgent, default=255))
        pushed, self._pushed = self._pushed, None
        if not count and not policy_changed:
            return
        now = self._clock.monotonic()
        if pushed is None and not policy_changed and not changes and self._folds(most_urgent, now):
            self.counters["notifications_saved"] += 1
            return
        self._unanswered = (most_urgent, now)
        self.counters["notifications"] += 1
        if pushed is None:
            frames = encode(StoreChanged(most_urgent, count, transitions=changes))
        else:
            push = 0
            if pushed.tasks:
                self._push = push = self._push + 1
                self._unseen.append((push, len(pushed.tasks)))
            frames = encode(
                StoreChanged(
                    most_urgent,
                    count,
                    pushed.tasks,
                    pushed.exhausted,
                    pushed.next_due_ms,
                    standing=True,
                    transitions=changes + pushed.transitions,
                    push=push,
                )
            )
        # On the Dispatcher's own request pipe, behind the replies already sent to it: a claim's
        # reply and a change that committed after that claim never cross.
        watcher, server = self._watcher, self._server
        if watcher is not None and server is not None and not server.send_frames(watcher, frames):
            self._watcher = None  # gone: its next claim names the new one

    def _folds(self, most_urgent: int, now: float) -> bool:
        """Whether a change needs no notification of its own: the last one is unanswered (no
        peek or claim since), recent (a notification nobody received must not silence the next
        ones for long), no less urgent, and this change cannot preempt."""
        if self._unanswered is None or most_urgent <= self.urgent_priority:
            return False
        priority, sent = self._unanswered
        return most_urgent >= priority and now - sent < UNANSWERED_FOR_S

    def _maintenance(self) -> None:
        try:
            deleted = self.db.retention_tick()
        except DatabaseError as exc:
            log.error("store: retention failed: %s", exc)
            return
        if deleted:
            log.debug("store: retention pruned %d history rows", deleted)
