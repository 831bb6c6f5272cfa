"""The thirteen built-in rules by name, each with its needles; each one's
forms (oneline_servers.py, twoline_servers.py) are compiled when a run first
reads lines with it.

Naming a rule compiles nothing: loading a configuration checks the names of
its sources' rules, and the quiet run compares their names and needles, but
only a run that reads lines needs the patterns.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from exactcron.rules.rule import Rule

if TYPE_CHECKING:
    from exactcron.rules.forms import Form, TwoLine

# tcp_wrappers' connect line, of the servers run from inetd (twoline_servers.py).
_TCPD = (b"connect from ",)

# Each rule's needles, in its order; its builder's own Rule must name the same ones (checked at build).
_NEEDLES: dict[str, tuple[bytes, ...]] = {
    "dovecot": (b"Login: ", b"Logged in: "),
    "courier": (b"LOGIN, user=",),
    "cyrus": (b"login: ", b"event=login.good "),
    "uw-imap": (b" user=",),
    "qpopper": (b"POP login by user ", b") Authenticated."),
    "perdition": (b"Auth: ",),
    "teapop": (b"Successful login for ",),
    "cucipop": (b"cucipop",),
    "solid-pop3d": (b" authenticated - ",),
    "gnu-pop3d": (
        b"' logged in with mailbox '",
        b"' logged in with mailbox `",
        *_TCPD,
        b"session ended for ",
        b" Connect from ",
    ),
    "vpopmail": (b" login success ", b"vchkpw: login ["),
    "popa3d": (
        b"Session from ",
        *_TCPD,
        b"Authentication ",
        b"Didn't attempt authentication",
        b") deleted, ",
        b"Premature disconnect",
        b"Connection timed out",
    ),
    "vm-pop3d": (b"onnect from ", b"' logged in"),
}
_TWO_LINE_SERVERS = frozenset({"popa3d", "gnu-pop3d", "vm-pop3d"})


def build(name: str) -> Rule:
    """The built-in rule `name` with its forms compiled (KeyError when there is none)."""
    needles = _NEEDLES[name]
    function = name.replace("-", "_")
    if name in _TWO_LINE_SERVERS:
        from exactcron.rules import twoline_servers as module
    else:
        from exactcron.rules import oneline_servers as module  # type: ignore[no-redef]
    rule: Rule = getattr(module, function)()
    if rule.name != name or rule.needles != needles:
        raise AssertionError(f"built-in rule {name}: its needles here and in {module.__name__} differ")
    return rule


def _forms_of(name: str) -> tuple[tuple[Form, ...], TwoLine | None]:
    rule = build(name)
    return rule.forms, rule.two_line


class _BuiltinRules(Mapping[str, Rule]):
    """The built-in rules by name, each built once, its forms compiled when
    first read: a run compiles only the rules it reads lines with."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}

    def __getitem__(self, name: str) -> Rule:
        rule = self._rules.get(name)
        if rule is None:
            needles = _NEEDLES[name]
            rule = self._rules[name] = Rule(name, needles, build=lambda: _forms_of(name))
        return rule

    def __contains__(self, name: object) -> bool:
        return name in _NEEDLES

    def __iter__(self) -> Iterator[str]:
        return iter(_NEEDLES)

    def __len__(self) -> int:
        return len(_NEEDLES)


BUILTIN_RULES: Mapping[str, Rule] = _BuiltinRules()
