"""Decoding JSON payloads back into Python values and dataclasses (``TaskContext.payload``).

The inverse of ``taskmill.task.canonical_json`` for the shapes it produces: a dataclass is
rebuilt from its field dict, recursively for fields annotated with dataclasses, ``list[...]``,
``tuple[...]``, ``dict[str, ...]``, ``X | None`` and enums. Keys the class does not know are
ignored (a newer producer may add fields); a missing required field or a value of the wrong
basic type is a ``SerializationError``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections import abc
from typing import Any, TypeVar, overload

from bus.errors import SerializationError

__all__ = ["decode_payload"]

T = TypeVar("T")


@overload
def decode_payload(data: bytes | None, cls: None = None) -> Any: ...
@overload
def decode_payload(data: bytes | None, cls: type[T]) -> T: ...
def decode_payload(data: bytes | None, cls: type[Any] | None = None) -> Any:
    """Decode a JSON payload; into ``cls`` when given, else as plain dict/list/str/number.

    With no ``cls`` a missing payload gives ``None``; with a ``cls`` it is a
    ``SerializationError``, as are invalid JSON and JSON that does not fit ``cls``.
    """
    if data is None:
        if cls is None:
            return None
        raise SerializationError(f"task has no payload to decode into {_name(cls)}")
    try:
        value = json.loads(bytes(data))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise SerializationError(f"payload is not valid JSON: {exc}") from exc
    if cls is None:
        return value
    if not (dataclasses.is_dataclass(cls) or cls in _BASIC or issubclass(cls, enum.Enum)):
        raise SerializationError(f"cannot decode a payload into {_name(cls)}")
    return _convert(value, cls, "payload")


_BASIC: dict[Any, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
    dict: (dict,),
    list: (list,),
    tuple: (list,),
}


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def _mismatch(path: str, expected: Any, value: Any) -> SerializationError:
    return SerializationError(
        f"{path}: expected {_name(expected)}, got {type(value).__name__} {value!r:.60}"
    )


def _convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` (decoded JSON) converted to the annotation ``tp``; unknown annotations pass."""
    if tp is Any or tp is object or isinstance(tp, str | typing.TypeVar):
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, typing.get_args(tp), path)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise _mismatch(path, tp, value)
        return value
    if origin is not None:
        return _convert_generic(value, origin, typing.get_args(tp), path)
    if tp is None or tp is type(None):
        if value is not None:
            raise _mismatch(path, None, value)
        return None
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return _convert_dataclass(value, tp, path)
        if issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError as exc:
                raise _mismatch(path, tp, value) from exc
        accepted = _BASIC.get(tp)
        if accepted is not None:
            # bool is an int: refuse True for an int field, but let 1 stand for a float.
            if not isinstance(value, accepted) or (tp is not bool and isinstance(value, bool)):
                raise _mismatch(path, tp, value)
            decoded: Any = value
            if tp is float:
                return float(decoded)
            return tuple(decoded) if tp is tuple else decoded
    return value


def _convert_union(value: Any, arms: tuple[Any, ...], path: str) -> Any:
    if value is None and type(None) in arms:
        return None
    errors: list[str] = []
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return _convert(value, arm, path)
        except SerializationError as exc:
            errors.append(str(exc))
    raise SerializationError("; ".join(errors) or f"{path}: no union arm accepts {value!r:.60}")


def _convert_generic(value: Any, origin: Any, args: tuple[Any, ...], path: str) -> Any:
    if origin in (list, set, frozenset, abc.Sequence, abc.MutableSequence):
        if not isinstance(value, list):
            raise _mismatch(path, list, value)
        item = args[0] if args else Any
        items = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return origin(items) if origin in (set, frozenset) else items
    if origin is tuple:
        if not isinstance(value, list):
            raise _mismatch(path, tuple, value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise SerializationError(f"{path}: expected {len(args)} items, got {len(value)}")
        types_ = args or (Any,) * len(value)
        return tuple(
            _convert(v, t, f"{path}[{i}]")
            for i, (v, t) in enumerate(zip(value, types_, strict=True))
        )
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        if not isinstance(value, dict):
            raise _mismatch(path, dict, value)
        item = args[1] if len(args) == 2 else Any
        return {k: _convert(v, item, f"{path}[{k!r}]") for k, v in value.items()}
    return value


def _convert_dataclass(value: Any, cls: type[Any], path: str) -> Any:
    if not isinstance(value, dict):
        raise _mismatch(path, cls, value)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: convert nothing
        hints = {}
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise SerializationError(f"{path}: missing field {f.name!r} of {cls.__name__}")
            continue
        kwargs[f.name] = _convert(value[f.name], hints.get(f.name, Any), f"{path}.{f.name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"{path}: cannot build {cls.__name__}: {exc}") from exc
