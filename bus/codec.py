"""The message registry and the msgpack codec behind ``bus.protocol``.

A message's body is a msgpack map of its fields; a struct nested inside one (``@struct``) is a
msgpack array of its fields in declaration order; a member of a family of kinds (``family``: the
events) nested inside one is the array ``[name, body]``. ``docs/protocol.md`` ("Encoding") is the
authoritative description.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from bus.errors import ErrorCode, ProtocolError
from bus.frozen import speed_up_init

M = TypeVar("M", bound="Message")


class Message:
    """Base of every message kind: a frozen dataclass registered under ``KIND``.

    Slotted, as every kind is: without ``__slots__`` here each message would carry an empty
    ``__dict__`` besides its slots, which costs memory and time at every construction."""

    __slots__ = ()

    KIND: ClassVar[str] = ""
    REPLY: ClassVar[type[Message] | None] = None

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = _encoders[type(self)](self)
        return body


_registry: dict[bytes, type[Message]] = {}
_encoders: dict[type[Any], Callable[[Any], Any]] = {}
"""Instance -> body: a dict for a message, a list for a struct."""
_decoders: dict[type[Any], Callable[[Any], Any]] = {}
_general_decoders: dict[type[Any], Callable[[Any], Any]] = {}
_general_encoders: dict[type[Any], Callable[[Any], Any]] = {}
"""The field-by-field codecs the generated ones must agree with (tests compare them)."""


@dataclasses.dataclass(eq=False)
class _Family:
    """Message kinds named ``<prefix><name>`` whose classes derive from ``base`` (``family``)."""

    prefix: str
    base: type[Message]
    decode_unknown: Callable[[str, dict[str, Any]], Message]
    members: dict[str, Callable[[Any], Any]] = dataclasses.field(default_factory=dict)
    """Decoder of each member, by its name (the kind without the prefix)."""
    names: dict[type[Any], str] = dataclasses.field(default_factory=dict)
    """The name of each member class (an unknown one's is its own ``KIND``'s)."""


_families: dict[type[Any], _Family] = {}


def family(
    prefix: str,
    base: type[Message],
    unknown: type[Message],
    decode_unknown: Callable[[str, dict[str, Any]], Message],
    encode_unknown: Callable[[Any], dict[str, Any]],
) -> None:
    """Make the kinds ``<prefix><name>`` registered later with a class derived from ``base`` a
    family: one kind per class, and any of them in a field typed ``base`` (or a list of it), as
    the array ``[name, body]``. A kind under ``prefix`` that this version does not know is not an
    error: ``decode_unknown(kind, body)`` makes it an ``unknown`` (whose ``KIND`` is the kind
    received), which ``encode_unknown`` turns back into its body. Call it before registering the
    members."""
    _families[base] = _Family(prefix, base, decode_unknown)
    _encoders[unknown] = _general_encoders[unknown] = encode_unknown


def unknown_kind_decoder(kind: bytes) -> Callable[[dict[str, Any]], Message] | None:
    """How a body of the unregistered ``kind`` decodes: the unknown member of the family its
    prefix names, or None (not a family's: the kind is unknown)."""
    for fam in _families.values():
        if kind.startswith(fam.prefix.encode("ascii")):
            try:
                name = kind.decode("ascii")
            except UnicodeDecodeError:
                return None
            return lambda body: fam.decode_unknown(name, body)
    return None


def registry() -> dict[str, type[Message]]:
    """Every registered kind, by name (used by the protocol docs test)."""
    return {k.decode(): v for k, v in _registry.items()}


def message(kind: str, reply: type[Message] | None = None) -> Callable[[type[M]], type[M]]:
    """Register a frozen dataclass as the message kind ``kind`` (replying with ``reply``)."""

    def register(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        key = kind.encode("ascii")
        if key in _registry:
            raise ValueError(f"message kind {kind!r} registered twice")
        cls.KIND = kind
        cls.REPLY = reply
        _registry[key] = cls
        _build_codec(cls, as_array=False)
        for fam in _families.values():
            if kind.startswith(fam.prefix) and issubclass(cls, fam.base):
                fam.members[kind[len(fam.prefix) :]] = _decoders[cls]
                fam.names[cls] = kind[len(fam.prefix) :]
        return cls

    return register


S = TypeVar("S")


def struct(cls: type[S]) -> type[S]:
    """Register a dataclass used only nested inside messages (a record, an outcome): encoded as
    the array of its fields in declaration order, so new fields go at the end."""
    _build_codec(cls, as_array=True)
    return cls


def _build_codec(cls: type[Any], *, as_array: bool) -> None:
    speed_up_init(cls)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    converters: list[tuple[str, Callable[[Any], Any]]] = []
    nested_enc: dict[str, Callable[[Any], Any]] = {}
    for f in fields:
        conv, enc = _converter(hints[f.name])
        if conv is not None:
            converters.append((f.name, conv))
        if enc is not None:
            nested_enc[f.name] = enc
    typed = [(f.name, hints[f.name]) for f in fields]
    keywords = frozenset(f.name for f in fields if f.kw_only)
    if as_array:
        if any(not f.init or f.kw_only for f in fields):
            raise TypeError(f"{cls.__name__}: a struct's fields are positional, all in __init__")
        _build_array_codec(cls, typed, converters, nested_enc)
    else:
        _build_map_codec(cls, typed, converters, nested_enc, all(f.init for f in fields), keywords)


def _build_map_codec(
    cls: type[Any],
    typed: list[tuple[str, Any]],
    converters: list[tuple[str, Callable[[Any], Any]]],
    nested_enc: dict[str, Callable[[Any], Any]],
    positional: bool,
    keywords: frozenset[str],
) -> None:
    """A message's codec: the map of its fields. Unknown keys are ignored, missing ones take
    their defaults."""
    names = tuple(name for name, _ in typed)
    nameset = frozenset(names)

    def encode(obj: Any) -> dict[str, Any]:
        body = {n: getattr(obj, n) for n in names}
        for n, enc in nested_enc.items():
            body[n] = enc(body[n])
        return body

    def decode(body: dict[str, Any]) -> Any:
        if not isinstance(body, dict):
            raise ProtocolError(ErrorCode.MALFORMED, f"{cls.__name__} body must be a map")
        kwargs = {k: v for k, v in body.items() if k in nameset}
        for n, conv in converters:
            if n in kwargs:
                kwargs[n] = conv(kwargs[n])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, f"{cls.__name__}: {exc}") from None

    _general_encoders[cls] = encode
    _encoders[cls] = _fast_encoder(names, nested_enc)
    _general_decoders[cls] = decode
    _decoders[cls] = _fast_decoder(cls, typed, decode, keywords) if positional else decode


def _build_array_codec(
    cls: type[Any],
    typed: list[tuple[str, Any]],
    converters: list[tuple[str, Callable[[Any], Any]]],
    nested_enc: dict[str, Callable[[Any], Any]],
) -> None:
    """A struct's codec: the array of its fields in order. A shorter array leaves the trailing
    fields to their defaults, a longer one's extra items are ignored (fields added later)."""
    names = tuple(name for name, _ in typed)
    count = len(names)
    by_index = [(names.index(n), conv) for n, conv in converters]

    def encode(obj: Any) -> list[Any]:
        return [
            nested_enc[n](getattr(obj, n)) if n in nested_enc else getattr(obj, n) for n in names
        ]

    def decode(body: Any) -> Any:
        if not isinstance(body, list):
            raise ProtocolError(ErrorCode.MALFORMED, f"{cls.__name__} must be an array")
        values = body[:count]
        for i, conv in by_index:
            if i < len(values):
                values[i] = conv(values[i])
        try:
            return cls(*values)
        except TypeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED, f"{cls.__name__}: {exc}") from None

    _general_encoders[cls] = encode
    _encoders[cls] = _fast_encoder(names, nested_enc, as_array=True)
    _general_decoders[cls] = decode
    _decoders[cls] = _fast_decoder(cls, typed, decode, as_array=True)


def _fast_encoder(
    names: tuple[str, ...], nested: dict[str, Callable[[Any], Any]], *, as_array: bool = False
) -> Callable[[Any], Any]:
    """The body of an instance as one generated dict (or list) display (field names are
    identifiers).

    Kept beside the field-by-field encoder (tests hold them to the same output) because every
    message on the hot path goes through one, and a batch of submissions through one per task:
    the generated code is a large share of what encoding a batch costs less end to end."""
    env: dict[str, Any] = {f"e_{n}": enc for n, enc in nested.items()}
    values = [f"e_{n}(obj.{n})" if n in nested else f"obj.{n}" for n in names]
    if as_array:
        display = "[" + ", ".join(values) + "]"
    else:
        display = "{" + ", ".join(f"{n!r}: {v}" for n, v in zip(names, values, strict=True)) + "}"
    source = f"def encode(obj):\n    return {display}"
    exec(source, env)  # generated from the dataclass's own fields, as dataclasses does
    fast: Callable[[Any], Any] = env["encode"]
    return fast


def _fast_decoder(
    cls: type[Any],
    typed: list[tuple[str, Any]],
    general: Callable[[Any], Any],
    keywords: frozenset[str] = frozenset(),
    *,
    as_array: bool = False,
) -> Callable[[Any], Any]:
    """``general``'s result, sooner for the usual body: every field present, nothing else.

    Generated code reads each field, lets a value of exactly the expected type through with one
    ``type()`` test and hands anything else to the field's converter (which converts, or raises
    the same error as ``general``); any other body (fields missing or unknown, not a map or an
    array of the struct's length) goes to ``general``, which fills defaults and ignores unknown
    fields. Same results, same errors (tests compare the two). Kept for the same reason as
    ``_fast_encoder``: decoding is on every hop of a task, and once per task in a batch.
    """
    env: dict[str, Any] = {"cls": cls, "general": general, "ProtocolError": ProtocolError}
    env["MALFORMED"] = ErrorCode.MALFORMED
    args = ", ".join(f"a{i}" for i in range(len(typed)))
    call = ", ".join(
        [f"a{i}" for i, (name, _) in enumerate(typed) if name not in keywords]
        + [f"{name}=a{i}" for i, (name, _) in enumerate(typed) if name in keywords]
    )  # keyword-only fields by name (a subclass's own fields come after them)
    if as_array:  # one unpacking of the whole array (its length was just checked)
        fetch = [f"        {args}, = body"] if typed else []
    else:
        fetch = [f"        a{i} = body[{name!r}]" for i, (name, _) in enumerate(typed)]
    lines = [
        "def decode(body):",
        f"    if type(body) is not {'list' if as_array else 'dict'} or len(body) != {len(typed)}:",
        "        return general(body)",
        "    try:",
        "        pass",
        *fetch,
    ]
    checks: list[str] = []
    for i, (_, tp) in enumerate(typed):
        conv, _ = _converter(tp)
        if conv is None:
            continue
        env[f"c{i}"] = conv
        exact = _exact_types(tp)
        if exact is None:
            checks.append(f"    a{i} = c{i}(a{i})")
        elif len(exact) == 1:
            env[f"t{i}"] = next(iter(exact))
            checks.append(f"    if type(a{i}) is not t{i}: a{i} = c{i}(a{i})")
        else:
            env[f"t{i}"] = exact
            checks.append(f"    if type(a{i}) not in t{i}: a{i} = c{i}(a{i})")
    lines += ["    except KeyError:", "        return general(body)", *checks]
    lines += [
        "    try:",
        f"        return cls({call})",
        "    except TypeError as exc:",
        "        raise ProtocolError(MALFORMED, f'{cls.__name__}: {exc}') from None",
    ]
    exec("\n".join(lines), env)  # generated from the dataclass's own fields, as dataclasses does
    fast: Callable[[Any], Any] = env["decode"]
    return fast


def _exact_types(tp: Any) -> frozenset[type] | None:
    """The types a field's converter passes through unchanged (None: always convert)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        exact = _exact_types(inner[0]) if len(inner) == 1 else None
        return None if exact is None else exact | {type(None)}
    if tp in _SCALARS:
        return frozenset(_SCALARS[tp])
    if origin is dict:
        return frozenset({dict})
    return None


def _converter(
    tp: Any,
) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """(decode converter, encode converter) for a field type; None where the value passes as is."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            dec, enc = _converter(inner[0])
            return (
                (lambda v: None if v is None else dec(v)) if dec else None,
                (lambda v: None if v is None else enc(v)) if enc else None,
            )
        return None, None
    if isinstance(tp, type) and tp in _decoders:
        d, e = _decoders[tp], _encoders[tp]
        return d, e
    if isinstance(tp, type) and tp in _families:
        return _member_codec(_families[tp])
    if tp in _SCALARS:
        return _checker(tp, _SCALARS[tp]), None
    if origin is dict:
        return _checker(dict, (dict,)), None
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return _as_tuple, None
    if origin in (list, tuple, Sequence) and args:
        item_dec, item_enc = _converter(args[0])
        wrap: Callable[[Any], Any] = tuple if origin is tuple else list

        def dec_seq(v: Any) -> Any:
            if not isinstance(v, (list, tuple)):
                raise ProtocolError(ErrorCode.MALFORMED, "expected a list")
            return wrap([item_dec(x) for x in v]) if item_dec else wrap(v)

        enc_seq = (lambda v: [item_enc(x) for x in v]) if item_enc else None
        return dec_seq, enc_seq
    return None, None


def _member_codec(fam: _Family) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """A family member as ``[name, body]``: its kind without the prefix, and its map."""
    cut = len(fam.prefix)
    members = fam.members
    names = fam.names

    def encode(obj: Any) -> list[Any]:
        cls = type(obj)
        name = names.get(cls)
        return [obj.KIND[cut:] if name is None else name, _encoders[cls](obj)]

    def decode(value: Any) -> Any:
        if type(value) is not list or len(value) != 2 or type(value[0]) is not str:
            raise ProtocolError(ErrorCode.MALFORMED, f"a {fam.base.__name__} must be [kind, body]")
        name, body = value
        member = members.get(name)
        if member is not None:
            return member(body)
        if not name.isascii():  # a kind is ASCII, as on its own frame
            raise ProtocolError(ErrorCode.MALFORMED, f"kind {fam.prefix}{name[:64]!r} is not ASCII")
        if type(body) is not dict or not all(type(k) is str for k in body):
            raise ProtocolError(ErrorCode.MALFORMED, f"{fam.prefix}{name} body must be a map")
        return fam.decode_unknown(fam.prefix + name, body)

    return decode, encode


_SCALARS: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bytes: (bytes,),
    bool: (bool,),
    dict: (dict,),
}


def _as_tuple(v: Any) -> tuple[Any, ...]:
    if not isinstance(v, (list, tuple)):
        raise ProtocolError(ErrorCode.MALFORMED, "expected a list")
    return tuple(v)


def _checker(tp: Any, accepted: tuple[type, ...]) -> Callable[[Any], Any]:
    name = getattr(tp, "__name__", str(tp))

    rejects_bool = bool not in accepted  # bool is an int subclass: refuse it for numbers

    def check(v: Any) -> Any:
        if not isinstance(v, accepted) or (rejects_bool and isinstance(v, bool)):
            raise ProtocolError(ErrorCode.MALFORMED, f"expected {name}, got {type(v).__name__}")
        return v

    return check
