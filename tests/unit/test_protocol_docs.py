"""``docs/protocol.md`` against the code: every kind, every struct, every field, every error code.

The document is authoritative, so it must not drift from the registry. It is parsed by the simple,
consistent format it uses:

* a message kind is a section headed ``### `kind` ``, a struct one headed ``### Struct `Name` ``;
* a section's metadata are bullets ``- **Name:** value`` (Pattern, Reply, Version, ...);
* its fields are the table ``| Field | Type | Default | Meaning |``, one row per field in
  declaration order, with the name, the type (the annotation as written in ``bus/kinds*.py``,
  ``|`` escaped as ``\\|``) and the default (``required``, or a Python literal) in backticks;
  a kind without fields says ``No fields.``.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

import bus  # noqa: F401  (registers every kind)
from actors.publisher.actor import SCHEDULER_EVENTS, TASK_EVENTS, topic_for
from bus import kinds, kinds_flow, kinds_run, structs
from bus.errors import ErrorCode, error_from_reply
from bus.events import EVENT_TYPES
from bus.protocol import Message, registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

KIND_HEADING = re.compile(r"^### `([^`]+)`$")
STRUCT_HEADING = re.compile(r"^### Struct `([^`]+)`$")
META = re.compile(r"^- \*\*(.+?):\*\* (.+)$")
FIELD_HEADER = ["Field", "Type", "Default", "Meaning"]


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)


def sections(text: str) -> list[Section]:
    """Split the document at every ``##`` and ``###`` heading."""
    out: list[Section] = [Section("")]
    for line in text.splitlines():
        if line.startswith(("## ", "### ")):
            out.append(Section(line.strip()))
        else:
            out[-1].lines.append(line)
    return out


def cells(line: str) -> list[str]:
    """The cells of a markdown table row; ``\\|`` is a literal pipe."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def tables(lines: list[str]) -> list[list[list[str]]]:
    """Every table of a section, as rows of cells (header and separator included)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in lines:
        if line.startswith("|"):
            if current is None:
                current = []
                found.append(current)
            current.append(cells(line))
        else:
            current = None
    return found


def unquote(cell: str) -> str:
    if len(cell) >= 2 and cell[0] == cell[-1] == "`":
        return cell[1:-1]
    return cell


def field_rows(section: Section) -> list[tuple[str, str, str]]:
    """The (name, type, default) rows of the section's field table; [] for ``No fields.``."""
    field_tables = [t for t in tables(section.lines) if t and t[0] == FIELD_HEADER]
    if not field_tables:
        assert any(line.strip() == "No fields." for line in section.lines), (
            f"{section.title}: neither a field table nor 'No fields.'"
        )
        return []
    assert len(field_tables) == 1, f"{section.title}: more than one field table"
    rows = field_tables[0][2:]  # header, separator
    return [(unquote(r[0]), unquote(r[1]), unquote(r[2])) for r in rows]


def metadata(section: Section) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in map(META.match, section.lines) if m}


def documented(pattern: re.Pattern[str]) -> dict[str, Section]:
    found: dict[str, Section] = {}
    for section in sections(DOC.read_text(encoding="utf-8")):
        match = pattern.match(section.title)
        if match:
            name = match.group(1)
            assert name not in found, f"{name} documented twice"
            found[name] = section
    return found


def struct_classes() -> dict[str, type]:
    """Every nested record of the protocol: the non-message dataclasses of the kinds and structs
    modules."""
    found: dict[str, type] = {}
    for module in (kinds, kinds_flow, kinds_run, structs):
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and dataclasses.is_dataclass(obj)
                and not issubclass(obj, Message)
                and obj.__module__ == module.__name__
            ):
                found[name] = obj
    return found


def field_problems(section: Section, cls: type) -> list[str]:
    """How the section's field table differs from the dataclass (empty: it matches)."""
    problems: list[str] = []
    rows = field_rows(section)
    fields = dataclasses.fields(cls)
    doc_names = [r[0] for r in rows]
    code_names = [f.name for f in fields]
    if doc_names != code_names:
        return [f"fields {doc_names} documented, {code_names} in the code"]
    for (name, type_text, default_text), f in zip(rows, fields, strict=True):
        if type_text != f.type:
            problems.append(f"{name}: type {type_text!r} documented, {f.type!r} in the code")
        if f.default is not dataclasses.MISSING:
            expected: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            expected = f.default_factory()
        else:
            if default_text != "required":
                problems.append(f"{name}: documented default {default_text!r}, but required")
            continue
        try:
            value = ast.literal_eval(default_text)
        except (ValueError, SyntaxError):
            problems.append(f"{name}: default {default_text!r} is not a literal ({expected!r})")
            continue
        if type(value) is not type(expected) or value != expected:
            problems.append(f"{name}: default {default_text!r} documented, {expected!r} in code")
    return problems


KINDS = documented(KIND_HEADING)
STRUCTS = documented(STRUCT_HEADING)
VERSIONS = set(re.findall(r"^### (\d+\.\d+)$", DOC.read_text(encoding="utf-8"), re.MULTILINE))
"""The versions the Changes section records."""
REPLY_KINDS = {cls.REPLY.KIND for cls in registry().values() if cls.REPLY is not None} | {"error"}


# -- the checker itself ---------------------------------------------------------------------


def test_the_field_checker_notices_a_wrong_table() -> None:
    """A doc table that lies (type, default, a missing field) is reported, not waved through."""
    lines = [
        "| Field | Type | Default | Meaning |",
        "|---|---|---|---|",
        "| `status` | `int` | required | wrong type |",
        "| `limit` | `int` | `50` | wrong default |",
        "| `offset` | `int` | `0` | right |",
    ]
    problems = field_problems(Section("### `store.tasks`", lines), kinds.ListTasks)
    assert len(problems) == 2
    missing = field_problems(Section("### `store.tasks`", lines[:3]), kinds.ListTasks)
    assert missing and "documented" in missing[0]
    escaped = cells("| `request_id` | `str \\| None` | `None` | x |")
    assert escaped == ["`request_id`", "`str | None`", "`None`", "x"]


# -- kinds and structs ----------------------------------------------------------------------


def test_every_registered_kind_is_documented_and_nothing_else() -> None:
    assert len(registry()) > 40  # the registry was populated by importing bus
    assert sorted(set(registry()) - set(KINDS)) == [], "kinds missing from docs/protocol.md"
    assert sorted(set(KINDS) - set(registry())) == [], "documented kinds not in the registry"


def test_every_struct_is_documented_and_nothing_else() -> None:
    structs = struct_classes()
    assert "Submission" in structs and "RunningTask" in structs
    assert sorted(set(structs) ^ set(STRUCTS)) == []


@pytest.mark.parametrize("kind", sorted(registry()))
def test_kind_fields_match_the_dataclass(kind: str) -> None:
    assert kind in KINDS, f"{kind} is not documented"
    assert field_problems(KINDS[kind], registry()[kind]) == []


@pytest.mark.parametrize("name", sorted(struct_classes()))
def test_struct_fields_match_the_dataclass(name: str) -> None:
    assert name in STRUCTS, f"struct {name} is not documented"
    assert field_problems(STRUCTS[name], struct_classes()[name]) == []


@pytest.mark.parametrize("kind", sorted(registry()))
def test_kind_metadata_match_the_registry(kind: str) -> None:
    assert kind in KINDS, f"{kind} is not documented"
    cls = registry()[kind]
    meta = metadata(KINDS[kind])
    version = meta.get("Version", "").split(" ", 1)[0]  # "1.0 (`field`: 2.1)": the kind's
    assert version in VERSIONS, "a kind's version must be one of the Changes"
    assert meta.get("Sender → receiver"), "who sends it to whom is not documented"
    assert meta.get("Socket"), "the socket is not documented"
    reply = "none" if cls.REPLY is None else f"`{cls.REPLY.KIND}`"
    assert meta.get("Reply") == reply
    if cls.REPLY is not None:
        pattern = "request"
    elif kind in REPLY_KINDS:
        pattern = "reply"
    else:
        pattern = "one-way"
    assert meta.get("Pattern") == pattern


# -- error codes and events -----------------------------------------------------------------


def section_table(title: str) -> list[list[str]]:
    found = [s for s in sections(DOC.read_text(encoding="utf-8")) if s.title == title]
    assert len(found) == 1, f"no single section {title!r}"
    (table,) = tables(found[0].lines)
    return table[2:]


def test_error_code_table_lists_every_code_with_its_exception() -> None:
    rows = {int(r[0]): (unquote(r[1]), unquote(r[2])) for r in section_table("### Error codes")}
    assert sorted(rows) == sorted(int(c) for c in ErrorCode)
    for code in ErrorCode:
        exception = type(error_from_reply(int(code), "reason")).__name__
        assert rows[int(code)] == (code.name, exception), code


def test_event_type_table_lists_every_type_with_its_topic() -> None:
    rows = {unquote(r[0]): unquote(r[1]) for r in section_table("### Event types")}
    assert set(rows) == TASK_EVENTS | SCHEDULER_EVENTS == set(EVENT_TYPES)
    for event_type, topic in rows.items():
        data = {"task_id": 1} if event_type in TASK_EVENTS else {}
        assert topic == topic_for(event_type, data).decode()
        assert topic == EVENT_TYPES[event_type].TOPIC.decode()  # what the publisher uses


def test_every_event_type_is_its_own_documented_kind() -> None:
    """Each event type names the kind it travels as, and that kind's section says it goes on
    the event type's topic."""
    kinds = {unquote(r[0]): r[2] for r in section_table("### Event types")}
    for event_type, cls in EVENT_TYPES.items():
        assert f"`{cls.KIND}`" in kinds[event_type]
        assert registry()[cls.KIND] is cls
        socket = metadata(KINDS[cls.KIND])["Socket"]
        assert f"topic `{cls.TOPIC.decode()}`" in socket, socket


def test_changes_record_every_version_newest_first() -> None:
    titles = [s.title for s in sections(DOC.read_text(encoding="utf-8"))]
    assert "## Changes" in titles
    recorded = [
        tuple(int(n) for n in t[4:].split("."))
        for t in titles[titles.index("## Changes") + 1 :]
        if re.fullmatch(r"### \d+\.\d+", t)
    ]
    assert recorded[-1] == (1, 0)
    assert recorded == sorted(recorded, reverse=True)
    for newer, older in itertools.pairwise(recorded):  # no version left out
        assert newer in ((older[0], older[1] + 1), (older[0] + 1, 0)), (newer, older)


def test_the_title_names_the_latest_version_in_changes() -> None:
    title = DOC.read_text(encoding="utf-8").splitlines()[0]
    latest = max(VERSIONS, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert title.endswith(f"version {latest}"), title


def test_the_documented_version_and_header_are_the_codes() -> None:
    from bus.protocol import PROTOCOL, PROTOCOL_MAJOR

    text = DOC.read_text(encoding="utf-8")
    title = re.search(r"^# .*version (\d+)\.(\d+)$", text, re.MULTILINE)
    assert title is not None and int(title.group(1)) == PROTOCOL_MAJOR
    newest = max(VERSIONS, key=lambda v: tuple(int(n) for n in v.split(".")))
    assert newest == f"{title.group(1)}.{title.group(2)}", "the title names the newest change"
    header = f'`b"{PROTOCOL.decode()}"`'
    assert header in text and f"major version, `{PROTOCOL_MAJOR}`" in text


# -- the envelope: frames, header, limits --------------------------------------------------------


def framing_section() -> list[str]:
    [section] = [s for s in sections(DOC.read_text(encoding="utf-8")) if s.title == "## Framing"]
    return section.lines


def test_the_frame_table_is_what_the_encoder_sends() -> None:
    from bus.kinds import Ping
    from bus.protocol import PROTOCOL, PROTOCOL_MAJOR, PROTOCOL_NAME, encode

    [table] = tables(framing_section())
    rows = table[2:]
    frames = encode(Ping(), b"7")
    assert [r[0] for r in rows] == [str(i) for i in range(1, len(frames) + 1)]
    assert [r[1] for r in rows] == ["header", "kind", "correlation id", "body"]
    assert f'`b"{PROTOCOL.decode()}"`' in rows[0][2]
    assert f"`{PROTOCOL_NAME}`" in rows[0][2] and f"`{PROTOCOL_MAJOR}`" in rows[0][2]
    assert frames[:3] == [PROTOCOL, b"ping", b"7"]
    assert msgpack.unpackb(frames[3]) == {}  # the body: one map of the fields (none here)


def test_the_worked_example_is_what_the_codec_sends() -> None:
    from bus.kinds import Error
    from bus.protocol import decode, encode

    [block] = re.findall(r"```\n(.*?)```", "\n".join(framing_section()), re.DOTALL)
    request_line, reply_line = block.strip().splitlines()
    request = ast.literal_eval(request_line)
    message, correlation = decode(request)
    assert encode(message, correlation) == request
    cut = reply_line.index("reason") + len("reason")  # the reason's text is left out
    *head, body_start = ast.literal_eval(reply_line[:cut] + '"]')
    reply = encode(Error(int(ErrorCode.UNKNOWN_KIND), "dispatcher does not handle it"), correlation)
    assert reply[:3] == head
    assert reply[3][: len(body_start)] == body_start


def test_the_envelope_is_split_by_position_as_documented() -> None:
    from bus.kinds import Ping
    from bus.protocol import encode, split_envelope

    text = " ".join(" ".join(framing_section()).split())
    assert "takes the **last four frames** as the message" in text
    frames = encode(Ping(), b"1")
    for envelope in ([b"TMP4"], [b"id", b""], [b"TMP"]):  # opaque, even when it looks like a header
        assert split_envelope([*envelope, *frames]) == (envelope, frames)


@pytest.mark.parametrize(
    ("header", "code"),
    [(b"TMP1", ErrorCode.VERSION_MISMATCH), (b"TMP12", ErrorCode.VERSION_MISMATCH),
     (b"TMPX", ErrorCode.MALFORMED), (b"HTTP", ErrorCode.MALFORMED)],
)  # fmt: skip
def test_a_foreign_header_is_refused_as_documented(header: bytes, code: ErrorCode) -> None:
    from bus.errors import ProtocolError
    from bus.protocol import decode

    text = " ".join(DOC.read_text(encoding="utf-8").split())
    assert "whose header is `TMP` followed by ASCII digits" in text
    with pytest.raises(ProtocolError) as caught:
        decode([header, b"ping", b"", b"\x80"])
    assert caught.value.code == code


def test_the_documented_limits_are_the_codes() -> None:
    from bus import limits
    from bus.protocol import MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, MAX_SUBSCRIPTION_BYTES

    text = " ".join(DOC.read_text(encoding="utf-8").split())
    units = {"KiB": 1024, "MiB": 1024**2}

    def documented_size(name: str) -> int:
        match = re.search(rf"`{name}` = (\d+) (KiB|MiB)", text)
        assert match, f"{name} is not documented as `{name}` = <n> KiB|MiB"
        return int(match.group(1)) * units[match.group(2)]

    assert documented_size("MAX_FRAME_BYTES") == MAX_FRAME_BYTES
    assert documented_size("MAX_MESSAGE_BYTES") == MAX_MESSAGE_BYTES
    assert documented_size("MAX_SUBSCRIPTION_BYTES") == MAX_SUBSCRIPTION_BYTES
    assert f"4 MiB ({MAX_FRAME_BYTES:,} bytes)" in text
    assert f"at 1 MiB ({limits.MAX_PAYLOAD_BYTES:,} bytes)" in text
    submission = re.search(
        r"task type 1\.\.([\d,]+) characters; label ([\d,]+) characters; group ([\d,]+) "
        r"characters; an explicit dedup key ([\d,]+) characters",
        text,
    )
    assert submission, "the limits of a submission are not where they were"
    assert [int(n.replace(",", "")) for n in submission.groups()] == [
        limits.MAX_TASK_TYPE_CHARS,
        limits.MAX_LABEL_CHARS,
        limits.MAX_GROUP_CHARS,
        limits.MAX_KEY_CHARS,
    ]
