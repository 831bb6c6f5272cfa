"""A rule: its name, the needles every line it grants on holds, and its forms,
built when first read.

Apart from forms.py, so that naming a rule compiles nothing: the
configuration names the rules of each source and the quiet run compares
their names and needles (commands/quiet.py), but only a run that reads lines
needs their patterns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from exactcron.addresses import normalize_address
from exactcron.model import Login
from exactcron.rules.grant import line_refusal

if TYPE_CHECKING:
    from exactcron.rules.forms import Form, TwoLine


class Rule:
    """A rule's `name`, `needles` (literals of which every success line holds
    at least one: lines without any rule's needle are never decoded or split),
    `forms`, and `two_line` (the lines of a server that logs the address and
    the login apart, rules/pairing.py; its needles are among `needles`).

    With `build`, the forms and two_line are what it returns, asked at their first use.
    """

    __slots__ = ("_build", "_forms", "_two_line", "name", "needles")

    def __init__(
        self,
        name: str,
        needles: tuple[bytes, ...],
        forms: tuple[Form, ...] = (),
        two_line: TwoLine | None = None,
        build: Callable[[], tuple[tuple[Form, ...], TwoLine | None]] | None = None,
    ) -> None:
        self.name = name
        self.needles = needles
        self._forms = forms
        self._two_line = two_line
        self._build = build

    def _built(self) -> None:
        if self._build is not None:
            self._forms, self._two_line = self._build()
            self._build = None

    @property
    def forms(self) -> tuple[Form, ...]:
        self._built()
        return self._forms

    @property
    def two_line(self) -> TwoLine | None:
        self._built()
        return self._two_line

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Rule):
            return NotImplemented
        return (self.name, self.needles, self.forms, self.two_line) == (
            other.name,
            other.needles,
            other.forms,
            other.two_line,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.needles))

    def __repr__(self) -> str:
        return f"Rule(name={self.name!r}, needles={self.needles!r})"

    def login(self, time: datetime, program: str, message: str) -> Login | None:
        """The login a line's message states, logged under `program` at `time`, or None."""
        for form in self.forms:
            if not form.accepts(program):
                continue
            matched, fields = form.fields(message)
            if not matched:
                continue
            if fields is None:
                return None
            user, text, local = fields
            address = normalize_address(text)
            if line_refusal(user, address, local) is not None:
                return None
            return Login.at(time, self.name, user, address)  # type: ignore[arg-type]
        return None
