"""`dataclass`, `field` and `replace`, as the dataclasses module has them, for
the classes a quiet `update` builds.

Cron starts a quiet `update` every minute. The dataclasses module costs it
about a third of its own CPU: importing it loads `inspect` (with `ast`,
`dis`, `tokenize`), and each class it makes compiles its methods from
generated source. Here the methods are shared functions, written once,
that read the class's fields: nothing is compiled at start-up. The
instances are built a little more slowly, which only matters for classes
made by the thousand (Lease, Login: not made here).

What it does, of what dataclasses does: fields from the class's own
annotations (and its bases' fields first), defaults and `field(default=,
default_factory=, init=, compare=, repr=)`; `__init__` (positional or by
name), `__repr__`, `__eq__` (same class, compared fields), `frozen=True`
(assignment raises FrozenInstanceError; hashable by its compared fields),
and a method the class writes itself is kept. mypy reads them as
dataclasses (`dataclass_transform`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record."""


class Field:
    """One field: its name, how it is given a value, and whether it is compared and shown."""

    __slots__ = ("compare", "default", "default_factory", "init", "name", "repr")

    def __init__(
        self,
        default: Any = MISSING,
        default_factory: Any = MISSING,
        init: bool = True,
        compare: bool = True,
        repr: bool = True,
    ) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.compare = compare
        self.repr = repr

    def value(self, owner: str) -> Any:
        """The value of a field not given."""
        if self.default is not MISSING:
            return self.default
        if self.default_factory is not MISSING:
            return self.default_factory()
        raise TypeError(f"{owner}.__init__() missing required argument: {self.name!r}")


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    init: bool = True,
    compare: bool = True,
    repr: bool = True,
) -> Any:
    return Field(default, default_factory, init, compare, repr)


@overload
def dataclass(cls: type[T], /) -> type[T]: ...
@overload
def dataclass(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...
@dataclass_transform(field_specifiers=(field, Field))
def dataclass(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    if cls is None:
        return lambda cls: _make(cls, frozen)
    return _make(cls, frozen)


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of `obj` with `changes`, made through its `__init__`."""
    fields: tuple[Field, ...] = obj.__record_fields__  # type: ignore[attr-defined]
    values = {spec.name: getattr(obj, spec.name) for spec in fields if spec.init}
    for name in changes:
        if name not in values:
            raise TypeError(f"{type(obj).__name__} has no field {name!r} to replace")
    values.update(changes)
    return type(obj)(**values)


def _make(cls: type[T], frozen: bool) -> type[T]:
    fields: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for spec in getattr(base, "__record_fields__", ()):
            fields[spec.name] = spec
    # The class's own annotations, as text (`from __future__ import annotations`): not inspect, which is the cost.
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():  # noqa: RUF063
        if str(annotation).split("[")[0].rpartition(".")[2] in ("ClassVar", "InitVar"):
            # Not fields for dataclasses; nothing here needs them, so they are refused, not misread.
            raise TypeError(f"{cls.__qualname__}.{name}: records.py makes no ClassVar or InitVar")
        given = cls.__dict__.get(name, MISSING)
        if isinstance(given, Field):
            spec = given
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
        else:
            spec = Field(default=given)
        spec.name = name
        fields[name] = spec
    every = tuple(fields.values())
    given_fields = tuple(spec for spec in every if spec.init)
    names = {spec.name for spec in given_fields}
    later = tuple(spec for spec in every if not spec.init)
    compared = tuple(spec.name for spec in every if spec.compare)
    shown = tuple(spec.name for spec in every if spec.repr)
    owner = cls.__qualname__
    setter = object.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(given_fields):
            raise TypeError(f"{owner}.__init__() takes {len(given_fields)} positional arguments")
        for spec, value in zip(given_fields, args, strict=False):
            if spec.name in kwargs:
                raise TypeError(f"{owner}.__init__() got multiple values for argument {spec.name!r}")
            kwargs[spec.name] = value
        for name in kwargs:
            if name not in names:
                raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {name!r}")
        for spec in given_fields:
            name = spec.name
            setter(self, name, kwargs[name] if name in kwargs else spec.value(owner))
        for spec in later:
            setter(self, spec.name, spec.value(owner))

    def __repr__(self: Any) -> str:
        return f"{owner}({', '.join(f'{name}={getattr(self, name)!r}' for name in shown)})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in compared)

    methods: dict[str, Any] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self: Any, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, name) for name in compared))

        methods |= {"__setattr__": __setattr__, "__delattr__": __delattr__, "__hash__": __hash__}
    own = cls.__dict__
    # A __hash__ of the class's own is kept; Python set it to None for an __eq__ of its own.
    explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
    for name, method in methods.items():
        if name in own and (name != "__hash__" or explicit_hash):
            continue
        method.__qualname__ = f"{owner}.{name}"
        setattr(cls, name, method)
    if not frozen and not explicit_hash:
        cls.__hash__ = None  # type: ignore[assignment]  # mutable and compared: unhashable, as dataclasses makes it
    cls.__record_fields__ = every  # type: ignore[attr-defined]
    return cls
