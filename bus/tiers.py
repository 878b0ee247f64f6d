"""Priority tiers: the named priorities as ranges, so a metric label has five values, not 256.

A priority belongs to the named tier it is at or past (numerically):
0..63 ``realtime``, 64..127 ``high``, 128..191 ``normal``, 192..254 ``background``, 255 ``idle``.
The Store counts its queue by tier and the EventPublisher labels waits by tier, so both read the
ranges from here.
"""

from __future__ import annotations

TIERS: tuple[tuple[str, int], ...] = (
    ("realtime", 0),
    ("high", 64),
    ("normal", 128),
    ("background", 192),
    ("idle", 255),
)
"""(name, lowest priority of the tier), most urgent first."""


def tier_of(priority: int) -> str:
    """The tier of ``priority`` (0..255; anything outside is clamped into the nearest tier)."""
    name = TIERS[0][0]
    for tier, floor in TIERS:
        if priority >= floor:
            name = tier
    return name
