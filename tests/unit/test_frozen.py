"""The faster ``__init__`` of frozen wire records behaves as the one ``dataclasses`` writes:
same signature, defaults, errors, equality, hashing and immutability."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import InitVar, dataclass, field

import pytest

from bus.codec import _decoders
from bus.frozen import speed_up_init
from bus.kinds import Submit
from bus.structs import Outcome, Submission, TaskRow


def twins() -> tuple[type, type]:
    """The same frozen, slotted dataclass twice: the second with the faster init."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Rec:
            name: str
            size: int = 3
            tags: tuple[str, ...] = ()

        return Rec

    plain, fast = make(), make()
    assert speed_up_init(fast)
    return plain, fast


CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    (("a",), {}),
    (("a", 5), {}),
    (("a", 5, ("x",)), {}),
    ((), {"name": "a", "tags": ("y",)}),
    (("a",), {"size": 9}),
    ((), {}),  # missing name
    (("a", 1, (), 4), {}),  # too many
    (("a",), {"name": "b"}),  # twice
    (("a",), {"colour": "red"}),  # unknown
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_every_call_gives_what_the_dataclass_init_gives(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    plain, fast = twins()
    try:
        expected = dataclasses.astuple(plain(*args, **kwargs))
    except TypeError:
        with pytest.raises(TypeError):
            fast(*args, **kwargs)
        return
    made = fast(*args, **kwargs)
    assert dataclasses.astuple(made) == expected
    assert made == fast(*args, **kwargs) and hash(made) == hash(fast(*args, **kwargs))


def test_the_record_stays_frozen_and_keeps_its_signature() -> None:
    plain, fast = twins()
    made = fast("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.size = 4  # type: ignore[misc]
    assert list(inspect.signature(fast).parameters) == list(inspect.signature(plain).parameters)
    assert repr(made) == repr(plain("a")).replace(plain.__qualname__, fast.__qualname__)


def test_classes_it_could_change_are_left_alone() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        n: int

    @dataclass(slots=True)
    class NotFrozen:
        n: int

    @dataclass(frozen=True, slots=True)
    class NotInInit:
        n: int
        m: int = field(default=0, init=False)

    for cls in (NoSlots, NotFrozen, NotInInit):
        before = cls.__init__
        assert not speed_up_init(cls), cls.__name__
        assert cls.__init__ is before


def rich_twins() -> tuple[type, type]:
    """A record with a keyword-only field, a factory default, an ``InitVar`` and a
    ``__post_init__`` (what the scheduler events have), twice: the second with the faster init."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Rich:
            name: str
            items: list[int] = field(default_factory=list)
            scale: InitVar[int] = 1
            size: int = field(default=3, kw_only=True)
            seen: list[str] = field(default_factory=list, kw_only=True, compare=False)

            def __post_init__(self, scale: int) -> None:
                object.__setattr__(self, "size", self.size * scale)

        return Rich

    plain, fast = make(), make()
    assert speed_up_init(fast)
    return plain, fast


RICH_CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    (("a",), {}),
    (("a", [1]), {}),
    (("a", [1], 2), {"size": 5}),
    ((), {"name": "a", "scale": 3, "seen": ["x"]}),
    (("a", [], 1, 4), {}),  # size is keyword-only
    ((), {}),  # missing name
    (("a",), {"colour": "red"}),  # unknown
]


@pytest.mark.parametrize(("args", "kwargs"), RICH_CALLS)
def test_keyword_only_factories_initvars_and_post_init_behave_as_the_dataclass(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    plain, fast = rich_twins()
    assert list(inspect.signature(fast).parameters) == list(inspect.signature(plain).parameters)
    try:
        expected = plain(*args, **kwargs)
    except TypeError:
        with pytest.raises(TypeError):
            fast(*args, **kwargs)
        return
    made = fast(*args, **kwargs)
    assert dataclasses.astuple(made) == dataclasses.astuple(expected)
    assert fast("a").items is not fast("a").items  # a fresh default each time


def test_the_hot_wire_records_have_it() -> None:
    for cls in (Submission, Outcome, TaskRow, Submit):
        assert cls in _decoders
        assert cls.__init__.__module__ == cls.__module__
        assert "set0" in cls.__init__.__code__.co_names, cls.__name__


def test_fields_inherited_from_a_slotted_base_are_set_too() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Child(Base):
        b: str = "x"

    assert speed_up_init(Child)
    made = Child(1, "y")
    assert (made.a, made.b) == (1, "y") and made == Child(a=1, b="y")
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.a = 2  # type: ignore[misc]
