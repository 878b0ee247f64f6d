"""``TypedTask``: a task described by a class of its own (a dataclass, typically), submitted
with its canonical JSON as payload and decoded back by its executor."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from taskmill.payload import decode_payload
from taskmill.priority import Priority
from taskmill.task import TaskSubmission

__all__ = ["TypedTask"]

T = TypeVar("T")


def _typed_task_type(cls: type[TypedTask]) -> str:
    # A module function, not a method: a user dataclass may well have a field named task_type.
    task_type = getattr(cls, "TASK_TYPE", None)
    if not isinstance(task_type, str) or not task_type:
        raise TypeError(f"{cls.__name__} must define TASK_TYPE: ClassVar[str]")
    return task_type


class TypedTask:
    """Base class for typed task payloads, meant for dataclasses.

    Subclasses set ``TASK_TYPE`` and may override the estimate methods. A typed task is
    submitted with its canonical JSON encoding as payload and no explicit key, so two equal
    instances are one task (payload dedup). ``ctx.payload(MyTask)`` decodes it back.
    """

    TASK_TYPE: ClassVar[str]
    """The task type this class is submitted and executed as."""

    def expected_read_bytes(self) -> int:
        """Disk bytes the task expects to read (default 0)."""
        return 0

    def expected_write_bytes(self) -> int:
        """Disk bytes the task expects to write (default 0)."""
        return 0

    def expected_net_rx_bytes(self) -> int:
        """Network bytes the task expects to receive (default 0)."""
        return 0

    def expected_net_tx_bytes(self) -> int:
        """Network bytes the task expects to send (default 0)."""
        return 0

    def priority(self) -> Priority:
        """The priority it is submitted at by default (``Priority.NORMAL``)."""
        return Priority.NORMAL

    def group_key(self) -> str | None:
        """Its concurrency group (default: none)."""
        return None

    def label(self) -> str | None:
        """A human label for events and dashboards (default: the task type). Not part of the
        dedup key: two tasks differing only in label are still one task."""
        return None

    def to_submission(self, priority: int | None = None) -> TaskSubmission:
        """The submission for this task, at ``priority`` or else at ``self.priority()`` (its
        type's priority, which a child's aged parent may raise: see ``TaskContext.spawn_child``)."""
        submission = (
            TaskSubmission(_typed_task_type(type(self)), label=self.label())
            .payload_json(self)
            .expected_io(self.expected_read_bytes(), self.expected_write_bytes())
            .expected_net_io(self.expected_net_rx_bytes(), self.expected_net_tx_bytes())
            .group(self.group_key())
        )
        if priority is None:
            return submission._default_priority(self.priority())
        return submission.priority(priority)

    @classmethod
    def decode(cls: type[T], data: bytes | None) -> T:
        """Decode a payload produced by ``to_submission`` back into this class."""
        return decode_payload(data, cls)
