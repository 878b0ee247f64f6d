"""Reaching a running deployment: what ``Client`` and ``AsyncClient`` share.

Both talk to a deployment (the Procfile processes, or any set of actors on known endpoints) over
the bus: submissions and queries go to the Store, controls and the running set to the
Dispatcher, flow control to the GroupLimiter. Nothing here schedules.

Every ``Submit`` carries a fresh ``request_id``. When the Store does not answer in time
(``ActorUnavailable``: it is restarting, say) the same message is sent again, a few times with a
doubling pause; the Store remembers request ids and answers a repeat with the outcomes it stored
the first time, so a submission is applied exactly once however many times it was sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import zmq

from bus.client import AsyncRequester, RequestClient
from bus.kinds import (
    Submit,
    SubmitReply,
)
from bus.security import CurveSecurity
from bus.subscribe import Configure
from bus.topology import Topology
from taskmill.deploy import DeploymentConfig
from taskmill.records import (
    SubmitOutcome,
)
from taskmill.task import TaskSubmission, wire_batch
from taskmill.typed import TypedTask

__all__ = [
    "DEFAULT_RETRIES", "DEFAULT_TIMEOUT_S", "FIRST_BACKOFF_S", "Endpoints", "Submittable",
    "Target", "check_options", "connect", "curve_configure", "dedup_data", "outcomes",
    "submit_message", "topology_of",
]  # fmt: skip

Target = DeploymentConfig | Topology | None
R = TypeVar("R", RequestClient, AsyncRequester)
Submittable = TaskSubmission | TypedTask

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
FIRST_BACKOFF_S = 0.25


def topology_of(target: Target) -> tuple[Topology, CurveSecurity | None]:
    """The endpoints, and the CURVE settings a deployment on tcp asks for."""
    if isinstance(target, Topology):
        return target, None
    cfg = target if target is not None else DeploymentConfig.load()
    return cfg.topology(), cfg.security()


def curve_configure(security: CurveSecurity | None, endpoint: str) -> Configure | None:
    return security.configure_client(endpoint) if security is not None else None


def check_options(timeout: float, retries: int) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if not timeout > 0:  # also refuses NaN
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def connect(
    target: Target, context: zmq.Context[Any] | None
) -> tuple[Topology, CurveSecurity | None, zmq.Context[Any], bool]:
    """Endpoints, CURVE settings, the zmq context and whether the client owns it."""
    topology, security = topology_of(target)
    return topology, security, context if context is not None else zmq.Context(), context is None


class Endpoints(Generic[R]):
    """What both clients share: the deployment's endpoints, and a requester (blocking or
    asyncio, ``kind``) for each actor a client talks to."""

    def __init__(
        self,
        kind: type[R],
        target: Target,
        timeout: float,
        retries: int,
        context: zmq.Context[Any] | None,
    ) -> None:
        check_options(timeout, retries)
        self.retries = retries
        self.topology, self.security, self._context, self._own_context = connect(target, context)
        self._store: R = self._requester(kind, self.topology.store, timeout)
        self._dispatcher: R = self._requester(kind, self.topology.dispatcher, timeout)
        self._limiter: R = self._requester(kind, self.topology.limiter, timeout)
        self._closed = False

    def _requester(self, kind: type[R], endpoint: str, timeout: float) -> R:
        configure = curve_configure(self.security, endpoint)
        return kind(self._context, endpoint, timeout=timeout, configure=configure)


def submit_message(submissions: Sequence[Submittable]) -> Submit | None:
    wire = wire_batch([s.to_submission() if isinstance(s, TypedTask) else s for s in submissions])
    return Submit(wire, request_id=uuid.uuid4().hex) if wire else None


def outcomes(reply: SubmitReply) -> list[SubmitOutcome]:
    return [SubmitOutcome.from_wire(o) for o in reply.outcomes]


def dedup_data(data: bytes | str | None) -> bytes | None:
    return data.encode("utf-8") if isinstance(data, str) else data
