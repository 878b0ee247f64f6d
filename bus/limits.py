"""How large the text and bytes of a submission may be: one place for the client and the Store.

The Store enforces them (it is the authority, whatever client sent the submission);
``taskmill.TaskSubmission`` checks the same limits as values are set, so a user learns of a
too-long label where it was set, not from a reply. Text limits count characters; a character
takes at most four bytes in UTF-8, so the largest row stays far below the frame limit
(``bus.protocol.MAX_FRAME_BYTES``) beside its payload.
"""

from __future__ import annotations

MAX_PAYLOAD_BYTES = 1_048_576
"""The largest payload accepted (1 MiB); exactly this many bytes is still accepted."""
MAX_TASK_TYPE_CHARS = 256
MAX_KEY_CHARS = 1024
"""An explicit dedup key (hashed into the 64-hex key the Store sees)."""
MAX_LABEL_CHARS = 1024
MAX_GROUP_CHARS = 256
MAX_DEPENDENCIES = 10_000
"""The most dependencies one task may name (ids and members of its batch together): a fan-in
wider than this is a graph better joined through a task of its own, and the bound keeps one
submission's checks and edge writes within one short transaction and one frame."""

MAX_ERROR_CHARS = 8192
"""The longest error message kept (a task's ``last_error``, a failed event's ``error``): an
executor may raise an exception whose message is megabytes long, which would bloat every row,
event and reply that carries it. Longer ones are cut (``cut_text``), the cut said in the text."""


def check_text(name: str, value: str, max_chars: int) -> str:
    """``value`` if it is text that can travel (UTF-8, no lone surrogate) of at most
    ``max_chars`` characters; ``ValueError`` saying which limit it broke otherwise."""
    if len(value) > max_chars:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} is not valid text: {exc.reason} at position {exc.start}"
        ) from None
    return value


MAX_TAGS = 32
MAX_TAG_KEY_BYTES = 64
MAX_TAG_VALUE_BYTES = 256
"""Tags: at most 32 per submission, keys up to 64 and values up to 256 bytes of UTF-8."""

DUPLICATE_STRATEGIES = ("skip", "supersede", "reject")
"""What a submission does when an active task has its key (``Submission.on_duplicate``)."""


def tag_problem(tags: object) -> str | None:
    """Why ``tags`` cannot be a submission's tags (a dict of non-empty str keys to str values
    within the limits above), or None when they can."""
    if not isinstance(tags, dict):
        return "tags must be a dict of str to str"
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags; the limit is {MAX_TAGS}"
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return f"tag {key!r}: keys and values must be str"
        if not key:
            return "a tag key must not be empty"
        for what, text, limit in (
            ("key", key, MAX_TAG_KEY_BYTES),
            ("value", value, MAX_TAG_VALUE_BYTES),
        ):
            try:
                size = len(text.encode("utf-8"))
            except UnicodeEncodeError:
                return f"tag {what} {text!r} is not valid text"
            if size > limit:
                return f"tag {what} {text[:20]!r}... is {size} bytes; the limit is {limit}"
    return None


def cut_text(value: str, max_chars: int) -> str:
    """``value`` when it has at most ``max_chars`` characters; else its beginning and a marker
    saying how many characters were cut, ``max_chars`` characters in all: the start of a message
    says what went wrong, and a reader must see that the rest is missing."""
    if len(value) <= max_chars:
        return value
    kept = max(0, max_chars - 48)  # the marker takes fewer than 48 characters
    return f"{value[:kept]}… [{len(value) - kept} characters cut]"


MAX_SUBSCRIPTIONS = 10_000
"""Distinct topics subscribed to at once on one publishing socket (the event stream, the monitor's
readings) before it is closed and bound again (``bus.publishing``). A subscriber of taskmill holds
a few: its topics, shared with the others, and its own welcome topic."""
MAX_SUBSCRIPTION_TOPIC_BYTES = 256 * 1024
"""Bytes of those distinct topics, together: libzmq keeps a topic's every byte as a node of its
trie (some 40 bytes each), so long distinct topics cost far more than short ones."""
