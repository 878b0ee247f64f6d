"""Event subscriptions: ``EventSubscription`` (from ``Scheduler.subscribe``) and
``EventSubscriber`` (any process, given the EventPublisher's endpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

from bus.events import SchedulerEvent
from bus.subscribe import AsyncSubscription, Configure, Subscription

__all__ = ["EventSubscriber", "EventSubscription"]

TOPICS = (b"",)


class EventSubscription:
    """An async iterator of ``SchedulerEvent``s; live once it has been returned."""

    def __init__(self, sub: AsyncSubscription) -> None:
        self._sub = sub

    @classmethod
    async def open(
        cls,
        context: zmq.Context[Any],
        endpoint: str,
        topics: Sequence[bytes] = TOPICS,
        timeout: float = 10.0,
        *,
        configure: Configure | None = None,
    ) -> EventSubscription:
        sub = await AsyncSubscription.open(context, endpoint, topics, timeout, configure=configure)
        return cls(sub)

    @property
    def missed(self) -> int:
        """Events the publisher dropped for this subscriber because it read too slowly."""
        return int(self._sub.missed)

    @property
    def malformed(self) -> int:
        """Messages received that were no event (undecodable, or of a wrong field): dropped."""
        return int(self._sub.malformed)

    async def recv(self) -> SchedulerEvent:
        """The next event: a ``SchedulerEvent`` subclass, ``UnknownEvent`` for a type this
        version does not know."""
        return await self._sub.recv()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> SchedulerEvent:
        """The next event; ``async for`` ends once the subscription (or its scheduler) closed."""
        return await self._sub.__anext__()

    async def close(self) -> None:
        await self._sub.aclose()

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EventSubscriber:
    """Follow a scheduler's events from another process (blocking; iterate it).

    ``EventSubscriber("ipc:///run/taskmill/events.sock")`` — live once constructed.
    """

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[bytes] = TOPICS,
        *,
        timeout: float = 10.0,
        context: zmq.Context[Any] | None = None,
        configure: Configure | None = None,
    ) -> None:
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._sub = Subscription(
            self._context, endpoint, list(topics), timeout=timeout, configure=configure
        )

    @property
    def malformed(self) -> int:
        """Messages received that were no event (undecodable, or of a wrong field): dropped."""
        return int(self._sub.malformed)

    def recv(self, timeout: float | None = None) -> SchedulerEvent | None:
        """The next event, or None after ``timeout`` seconds (default: the subscription's)."""
        return self._sub.recv(timeout)

    def __iter__(self) -> EventSubscriber:
        return self

    def __next__(self) -> SchedulerEvent:
        while True:
            event = self.recv(1.0)
            if event is not None:
                return event

    def close(self) -> None:
        self._sub.close()
        if self._own_context:
            self._context.term()

    def __enter__(self) -> EventSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
