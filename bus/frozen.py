"""A faster ``__init__`` for frozen, slotted dataclasses.

``dataclasses`` builds a frozen class's ``__init__`` from one ``object.__setattr__(self, name,
value)`` per field: a global lookup, an attribute lookup and a call that looks the field up by
name again. A wire record has many fields (a ``Submission`` twelve), and a batch of 1,000
submissions builds two per task. The replacement sets each slot through its own descriptor
(``Cls.field.__set__``), which the class's frozen ``__setattr__`` never sees, in about half the
time. attrs' frozen classes take the same shortcut
(one bound ``object.__setattr__`` per instance) for the same reason.

Only classes this cannot change the meaning of are touched: frozen, slotted, every field in
``__init__``. Keyword-only fields, ``default_factory`` defaults, ``InitVar`` arguments and
``__post_init__`` (called with the ``InitVar`` values last, as ``dataclasses`` does) are handled
as the dataclass's own ``__init__`` handles them: the scheduler events have all four. The
signature, defaults, keyword arguments, errors for missing or unexpected arguments, equality,
hashing and immutability stay those of the dataclass.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any

_MISSING = dataclasses.MISSING


def speed_up_init(cls: type[Any]) -> bool:
    """Replace ``cls.__init__`` when it is safe (see the module docstring); whether it was."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        return False
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields):
        return False
    names = {f.name for f in fields}
    if _FIELD_INITVAR is None and hasattr(cls, "__post_init__"):
        return False  # InitVars cannot be told apart here: keep dataclasses' init
    initvars = [
        f
        for f in cls.__dataclass_fields__.values()
        if getattr(f, "_field_type", None) is _FIELD_INITVAR and f.name not in names
    ]
    env: dict[str, Any] = {"FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    order = {name: i for i, name in enumerate(cls.__dataclass_fields__)}
    for i, f in enumerate(sorted([*fields, *initvars], key=lambda f: order[f.name])):
        if f.default is not _MISSING:
            env[f"default{i}"] = f.default
            param = f"{f.name}=default{i}"
        elif f.default_factory is not _MISSING:
            env[f"factory{i}"] = f.default_factory
            param = f"{f.name}=FACTORY"
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        if f in initvars:
            continue
        slot = inspect.getattr_static(cls, f.name, None)  # maybe a base class's slot
        if not isinstance(slot, types.MemberDescriptorType):
            return False
        env[f"set{i}"] = slot.__set__
        value = f.name
        if f.default_factory is not _MISSING:
            value = f"factory{i}() if {f.name} is FACTORY else {f.name}"
        body.append(f"    set{i}(self, {value})")
    if hasattr(cls, "__post_init__"):
        body.append(f"    self.__post_init__({', '.join(f.name for f in initvars)})")
    if (names | {f.name for f in initvars}) & {"self", *env}:
        return False  # a field named like a name of the generated code: keep dataclasses' init
    params_src = ", ".join([*positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__(self, {params_src}):\n" + "\n".join(body or ["    pass"])
    exec(source, env)  # generated from the dataclass's own fields, as dataclasses does
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init
    return True


class _Factory:
    """The default of a field with a ``default_factory``: "call the factory" (never a value)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()
_FIELD_INITVAR = getattr(dataclasses, "_FIELD_INITVAR", None)
"""How ``dataclasses`` marks an ``InitVar`` among a class's fields (not public, hence the
guard above)."""
