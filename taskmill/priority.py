"""Task priority: an integer 0..=255 where a LOWER number is MORE urgent.

``Priority`` is an ``int`` subclass, so priorities compare, sort and serialise as plain numbers
(the queue order is ``(priority ASC, id ASC)``); the named tiers are class constants.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["Priority"]

_MIN = 0
_MAX = 255


class Priority(int):
    """A task priority, 0 (most urgent) to 255 (least urgent).

    ``Priority(n)`` raises ``ValueError`` when ``n`` is outside 0..=255 or is not an ``int``
    (``bool`` and ``float`` are refused too, so ``Priority(True)`` is an error, not 1).
    Named tiers: ``REALTIME`` 0, ``HIGH`` 64, ``NORMAL`` 128 (the default of a submission),
    ``BACKGROUND`` 192, ``IDLE`` 255. Any value in range is legal, not only the tiers.
    """

    REALTIME: ClassVar[Priority]
    """0: the most urgent tier; the default preemption threshold."""
    HIGH: ClassVar[Priority]
    """64."""
    NORMAL: ClassVar[Priority]
    """128: the default priority of a submission."""
    BACKGROUND: ClassVar[Priority]
    """192: held back by the default throttle policy above 50 % pressure."""
    IDLE: ClassVar[Priority]
    """255: the least urgent tier."""

    _NAMES: ClassVar[dict[int, str]] = {}

    def __new__(cls, value: int) -> Priority:
        if type(value) is cls:
            return value  # priorities are immutable: no need for a copy
        # bool is an int subclass; a priority of True is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"priority must be an int in 0..=255, got {value!r}")
        if not _MIN <= value <= _MAX:
            raise ValueError(f"priority must be in 0..=255, got {value}")
        return super().__new__(cls, value)

    @property
    def name(self) -> str | None:
        """The tier name (``"HIGH"``) when this value is a named tier, else ``None``."""
        return self._NAMES.get(int(self))

    def __repr__(self) -> str:
        name = self.name
        return f"Priority.{name}" if name is not None else f"Priority({int(self)})"

    def __str__(self) -> str:
        return str(int(self))

    def is_more_urgent_than(self, other: int) -> bool:
        """True when this priority is strictly more urgent (numerically lower) than ``other``."""
        return int(self) < int(other)


Priority.REALTIME = Priority(0)
Priority.HIGH = Priority(64)
Priority.NORMAL = Priority(128)
Priority.BACKGROUND = Priority(192)
Priority.IDLE = Priority(255)
Priority._NAMES = {0: "REALTIME", 64: "HIGH", 128: "NORMAL", 192: "BACKGROUND", 255: "IDLE"}
