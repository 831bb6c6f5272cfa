"""A site rule: a login rule from the configuration, run by the linear-time engine."""

from __future__ import annotations

import re
from collections.abc import Sequence

from exactcron.rules.forms import PROGRAM, Form, Phrase, TwoLine
from exactcron.rules.linear import LinearPattern, RefusedPattern
from exactcron.rules.patterns import MIN_NEEDLE_CHARS, required_literals
from exactcron.rules.rule import Rule


def _compiled(
    key: str, text: str, groups: set[str], required: str | None
) -> tuple[re.Pattern[str], LinearPattern]:
    """`text` as re reads it (to be read, never run) and as the linear engine runs it.
    Raises ValueError naming `key`."""
    try:
        pattern = re.compile(text, re.DOTALL)
    except re.error as error:
        raise ValueError(f"{key} is not a valid regular expression: {error}") from None
    if required is not None and required not in pattern.groupindex:
        raise ValueError(f"{key} has no named group {required!r} (write (?P<{required}>...))")
    unknown = set(pattern.groupindex) - groups
    if unknown:
        allowed = " and ".join(repr(group) for group in sorted(groups))
        raise ValueError(f"{key} has groups other than {allowed}: {', '.join(sorted(unknown))}")
    try:
        # Matched in time linear in the line, whatever the line: re could take hours on one.
        linear = LinearPattern(text, re.DOTALL)
    except RefusedPattern as error:
        raise ValueError(f"{key} {error}") from None
    return pattern, linear


def _needle(patterns: Sequence[re.Pattern[str]]) -> list[bytes]:
    """One literal per pattern (the longest every match contains), or [b""] when
    one of them has none long enough: every line of the source is then tried."""
    literals = []
    for pattern in patterns:
        found = [literal for literal in required_literals(pattern) if len(literal) >= MIN_NEEDLE_CHARS]
        if not found:
            return [b""]
        literals.append(found[0].encode())
    return list(dict.fromkeys(literals))


def site_rule(
    name: str,
    program: str,
    match: str,
    needles: Sequence[str] = (),
    connect: str | None = None,
    end: str | None = None,
) -> Rule:
    """A rule from the configuration. Raises ValueError with what is wrong.

    Its needles are `needles` when given, else the longest literal every
    match of `match` (and of `connect` and `end`) contains: like a built-in
    rule, it then only looks at the lines that hold one.

    With `connect`, a two-line rule (rules/pairing.py): `connect` names the
    address (`ip`), `match` the success of the same process (`user` only:
    the address a success may grant is the one its own connect line named,
    never one the success line holds), `end` a line that ends the session.
    A `session` group in both pairs by that token instead of the PID.
    """
    if connect is None:
        if end is not None:
            raise ValueError("end is only read with connect (a two-line rule)")
        pattern, linear = _compiled("match", match, {"ip", "user"}, "ip")
        forms: tuple[Form, ...] = (Form(frozenset({program}), pattern, linear=linear),)
        two_line = None
        patterns = [pattern]
    else:
        connect_pattern, connect_linear = _compiled("connect", connect, {"ip", "session"}, "ip")
        pattern, linear = _compiled("match", match, {"ip", "user", "session"}, None)
        if "ip" in pattern.groupindex:
            raise ValueError(
                "match must not have a group 'ip' in a rule with connect: the address granted is "
                "the one the connect line of the same process names"
            )
        if ("session" in pattern.groupindex) != ("session" in connect_pattern.groupindex):
            # One keyed by its token, the other by its PID: they would never pair.
            raise ValueError("connect and match must both have a group 'session', or neither")
        ends: tuple[Phrase, ...] = ()
        patterns = [connect_pattern, pattern]
        if end is not None:
            end_pattern, end_linear = _compiled("end", end, {"session"}, None)
            ends = (Phrase(end_pattern, end_linear),)
            patterns.append(end_pattern)
        forms = ()
        two_line = TwoLine(
            frozenset({program}),
            connects=(Phrase(connect_pattern, connect_linear),),
            successes=(Phrase(pattern, linear),),
            ends=ends,
        )
    if PROGRAM.fullmatch(program) is None:
        raise ValueError(f"program {program!r} is not a syslog tag")
    if needles:
        literals = [needle.encode() for needle in needles]
        if any(not literal for literal in literals):
            raise ValueError("needle must not be empty")
    else:
        literals = _needle(patterns)
    return Rule(name=name, needles=tuple(literals), forms=forms, two_line=two_line)
