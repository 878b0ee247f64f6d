"""``LabelCap``: keeps a metric label's values bounded."""

from __future__ import annotations

MAX_LABEL_VALUES = 200
"""Distinct values one label (event type, task type, group, host) may take; later ones are
counted as other."""


class LabelCap:
    """Keeps a label bounded: the first ``limit`` distinct values pass, the rest become other."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = value if isinstance(value, str) else str(value)
        if text in self._seen:
            return text
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(text)
        return text
