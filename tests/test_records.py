"""exactcron.records makes the classes a quiet run builds as dataclasses does, without it."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactcron import records


@records.dataclass(frozen=True)
class Frozen:
    """A record as config.py writes them."""

    name: str
    count: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = records.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class FrozenByDataclasses:
    name: str
    count: int = 0
    tags: tuple[str, ...] = ()
    extra: dict[str, int] = dataclasses.field(default_factory=dict, compare=False)


@records.dataclass
class Mutable:
    """A record as update.py writes them: counted into, and one field not compared."""

    total: int = 0
    seen: list[str] = records.field(default_factory=list)
    changed: bool = records.field(default=False, compare=False, repr=False)
    cache: dict[str, int] = records.field(default_factory=dict, init=False, compare=False, repr=False)


values = st.tuples(st.text(max_size=5), st.integers(), st.lists(st.text(max_size=3), max_size=3).map(tuple))


@given(values, values)
def test_a_frozen_record_is_made_compared_shown_and_hashed_as_dataclasses_does(
    first: tuple[str, int, tuple[str, ...]], second: tuple[str, int, tuple[str, ...]]
) -> None:
    ours = Frozen(*first), Frozen(first[0], count=first[1], tags=first[2]), Frozen(*second)
    theirs = FrozenByDataclasses(*first), FrozenByDataclasses(*second)
    assert ours[0] == ours[1]
    assert hash(ours[0]) == hash(ours[1])
    assert (ours[0] == ours[2]) == (theirs[0] == theirs[1])
    assert repr(ours[0]).removeprefix("Frozen") == repr(theirs[0]).removeprefix("FrozenByDataclasses")
    changed = records.replace(ours[0], count=first[1] + 1)
    assert changed == Frozen(first[0], first[1] + 1, first[2])
    assert ours[0].count == first[1]


def test_a_frozen_record_cannot_be_changed_and_refuses_wrong_arguments() -> None:
    record = Frozen("a")
    with pytest.raises(records.FrozenInstanceError):
        record.count = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del record.name
    with pytest.raises(TypeError, match="missing required argument: 'name'"):
        Frozen()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        Frozen("a", colour=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'name'"):
        Frozen("a", name="b")  # type: ignore[misc]
    with pytest.raises(TypeError):
        Frozen("a", 1, (), {}, 5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="no field 'colour'"):
        records.replace(record, colour=1)
    other: object = FrozenByDataclasses("a")
    assert Frozen("a") != other  # a record equals only its own class's


def test_defaults_made_by_a_factory_are_not_shared() -> None:
    first, second = Mutable(), Mutable()
    first.seen.append("x")
    first.cache["x"] = 1
    assert second.seen == [] and second.cache == {}
    assert Frozen("a").extra is not Frozen("a").extra


def test_a_mutable_record_compares_its_compared_fields_and_is_not_hashable() -> None:
    record = Mutable(1, ["a"])
    record.total += 1
    record.changed = True
    assert record == Mutable(2, ["a"])  # `changed` and `cache` are not compared
    assert repr(record) == "Mutable(total=2, seen=['a'])"
    with pytest.raises(TypeError):
        hash(record)
    with pytest.raises(TypeError):
        Mutable(cache={})  # type: ignore[call-arg]  # init=False


def test_a_class_variable_is_refused_rather_than_made_a_field() -> None:
    from typing import ClassVar

    with pytest.raises(TypeError, match="no ClassVar"):

        @records.dataclass
        class Shared:
            limit: ClassVar[int] = 3
