"""A site rule: a login rule from the configuration, run by the linear-time engine."""

from __future__ import annotations

import re
from collections.abc import Sequence

from exactcron.rules.forms import PROGRAM, Form, Rule
from exactcron.rules.linear import LinearPattern, RefusedPattern
from exactcron.rules.patterns import MIN_NEEDLE_CHARS, required_literals


def site_rule(name: str, program: str, match: str, needles: Sequence[str] = ()) -> Rule:
    """A rule from the configuration. Raises ValueError with what is wrong.

    Its needles are `needles` when given, else the longest literal every
    match of `match` contains: like a built-in rule, it then only looks at
    the lines that hold one.
    """
    try:
        pattern = re.compile(match, re.DOTALL)
    except re.error as error:
        raise ValueError(f"match is not a valid regular expression: {error}") from None
    if "ip" not in pattern.groupindex:
        raise ValueError("match has no named group 'ip' (write (?P<ip>...))")
    unknown = set(pattern.groupindex) - {"ip", "user"}
    if unknown:
        raise ValueError(f"match has groups other than 'ip' and 'user': {', '.join(sorted(unknown))}")
    try:
        # Matched in time linear in the line, whatever the line: re could take hours on one.
        linear = LinearPattern(match, re.DOTALL)
    except RefusedPattern as error:
        raise ValueError(f"match {error}") from None
    if PROGRAM.fullmatch(program) is None:
        raise ValueError(f"program {program!r} is not a syslog tag")
    if needles:
        literals = [needle.encode() for needle in needles]
        if any(not literal for literal in literals):
            raise ValueError("needle must not be empty")
    else:
        # No literal at all (every line is split and tried) when none is long enough.
        found = [literal for literal in required_literals(pattern) if len(literal) >= MIN_NEEDLE_CHARS]
        literals = [found[0].encode()] if found else [b""]
    return Rule(
        name=name, needles=tuple(literals), forms=(Form(frozenset({program}), pattern, linear=linear),)
    )
