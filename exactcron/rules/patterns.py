"""What the hot path needs to know about a rule's regular expression.

A pattern is looked at through the `re` module's own parser, so that what is
read here is exactly what `re` compiles: the literals every match contains
(a site rule's needles), and whether the pattern means the same over raw
bytes as over decoded text (then lines are matched undecoded). Site rules
themselves are run by the linear-time engine (linear.py), not by `re`.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# re's parser is what re.compile itself uses; it has no public name.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")

_REPEATS = {_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT}
# Items that match no character: they neither break nor extend a literal run.
_ZERO_WIDTH = {_constants.AT, _constants.ASSERT, _constants.ASSERT_NOT}
# Shorter literals are found on too many lines to be worth a search.
MIN_NEEDLE_CHARS = 3


def _parse(pattern: re.Pattern[str]) -> Any:
    return _parser.parse(pattern.pattern, pattern.flags)


def required_literals(pattern: re.Pattern[str]) -> list[str]:
    """Runs of literal text that every match of `pattern` contains, longest first."""
    if pattern.flags & re.IGNORECASE:
        return []
    runs: list[str] = []
    current: list[str] = []

    def flush() -> None:
        if current:
            runs.append("".join(current))
            current.clear()

    def walk(items: Any) -> None:
        for op, value in items:
            if op is _constants.LITERAL:
                current.append(chr(value))
            elif op is _constants.SUBPATTERN:
                _group, add_flags, _del_flags, inner = value
                if add_flags & re.IGNORECASE:
                    flush()
                else:
                    walk(inner)
            elif op is _constants.ATOMIC_GROUP:
                walk(value)
            elif op in _REPEATS:
                low, _high, inner = value
                flush()
                if low >= 1:
                    # The body occurs at least once; its literals are required,
                    # but a repeat may put anything between two of them.
                    walk(inner)
                    flush()
            elif op in _ZERO_WIDTH:
                continue
            else:
                flush()

    walk(_parse(pattern))
    flush()
    return sorted(runs, key=len, reverse=True)


def _parts(op: Any, value: Any) -> list[Any]:
    """The item lists inside one parsed item: a group's, a repeat's, each branch's."""
    if op in _REPEATS:
        return [value[2]]
    if op is _constants.SUBPATTERN:
        return [value[3]]
    if op is _constants.BRANCH:
        return list(value[1])
    if op is _constants.ATOMIC_GROUP:
        return [value]
    if op in (_constants.ASSERT, _constants.ASSERT_NOT):
        return [value[1]]
    return []


# Items whose meaning differs between str and bytes patterns (\d, \s, \w, \b:
# Unicode classes over text, ASCII over bytes).
_UNICODE_SENSITIVE = {_constants.CATEGORY, _constants.AT_BOUNDARY, _constants.AT_NON_BOUNDARY}


def bytes_pattern(pattern: re.Pattern[str]) -> re.Pattern[bytes] | None:
    """`pattern` compiled for raw bytes, or None when it would match differently there.

    An ASCII pattern compiled with re.ASCII means the same over UTF-8 bytes as
    over the decoded text, as far as any ASCII field it reads. Without
    re.ASCII, character classes such as \\s are Unicode's: such a pattern is
    kept for decoded text.
    """
    source = pattern.pattern
    if not source.isascii() or pattern.flags & re.IGNORECASE:
        return None
    parsed = _parse(pattern)
    if _ignores_case(parsed):
        # Unicode case folding (K matches the Kelvin sign) has no bytes equivalent.
        return None
    if not pattern.flags & re.ASCII and _mentions(parsed, _UNICODE_SENSITIVE):
        return None
    try:
        return re.compile(source.encode("ascii"), pattern.flags & (re.DOTALL | re.MULTILINE | re.VERBOSE))
    except re.error:
        return None


def _ignores_case(items: Any) -> bool:
    return any(
        (op is _constants.SUBPATTERN and value[1] & re.IGNORECASE)
        or any(_ignores_case(inner) for inner in _parts(op, value))
        for op, value in items
    )


def _mentions(items: Any, wanted: set[Any]) -> bool:
    return any(_holds(item, wanted) for item in items)


def _holds(value: Any, wanted: set[Any]) -> bool:
    if isinstance(value, tuple | list):
        return any(_holds(part, wanted) for part in value)
    if isinstance(value, _parser.SubPattern):
        return _mentions(value, wanted)
    # By identity: the parser's opcodes are ints, and so are the literals beside them.
    return any(value is opcode for opcode in wanted)
