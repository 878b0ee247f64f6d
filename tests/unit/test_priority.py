"""Priority: range, tiers, repr, ordering."""

from __future__ import annotations

import pickle

import pytest

from taskmill.priority import Priority


def test_named_tiers_have_their_documented_values() -> None:
    assert (Priority.REALTIME, Priority.HIGH, Priority.NORMAL) == (0, 64, 128)
    assert (Priority.BACKGROUND, Priority.IDLE) == (192, 255)
    for tier in (Priority.REALTIME, Priority.HIGH, Priority.NORMAL, Priority.BACKGROUND):
        assert type(tier) is Priority


def test_repr_names_tiers_and_shows_other_values() -> None:
    assert repr(Priority.HIGH) == "Priority.HIGH"
    assert repr(Priority.IDLE) == "Priority.IDLE"
    assert repr(Priority(42)) == "Priority(42)"
    assert repr(Priority(64)) == "Priority.HIGH"
    assert str(Priority(42)) == "42"
    assert f"{Priority.NORMAL}" == "128"


@pytest.mark.parametrize("value", [0, 1, 127, 254, 255])
def test_every_value_in_range_is_legal(value: int) -> None:
    assert Priority(value) == value


@pytest.mark.parametrize("value", [-1, 256, 1000])
def test_out_of_range_raises_value_error(value: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.=255"):
        Priority(value)


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
def test_non_int_raises_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        Priority(value)  # type: ignore[arg-type]


def test_lower_number_is_more_urgent_and_sorts_first() -> None:
    priorities = [Priority.IDLE, Priority.HIGH, Priority(10), Priority.REALTIME]
    assert sorted(priorities) == [0, 10, 64, 255]
    assert Priority.HIGH.is_more_urgent_than(Priority.NORMAL)
    assert not Priority.NORMAL.is_more_urgent_than(Priority.NORMAL)


def test_name_and_pickle_round_trip() -> None:
    assert Priority.BACKGROUND.name == "BACKGROUND"
    assert Priority(7).name is None
    restored = pickle.loads(pickle.dumps(Priority(7)))
    assert type(restored) is Priority and restored == 7
