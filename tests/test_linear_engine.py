"""The linear-time engine of site rules (exactcron/rules/linear.py).

It must say what `re.fullmatch` says (match or not, and the `ip`/`user`
captures), refuse at load what it cannot run in linear time, and return on
the hostile lines that made `re` hang a run.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from exactcron.rules import linear
from exactcron.rules.linear import LinearPattern, RefusedPattern

REALISTIC = r"OK user=(?P<user>.*) from .*\[(?P<ip>[^]]+)\]"


# -- agreement with re, on patterns from a grammar -------------------------------

_LITERALS = ["a", "b", "x", "A", "k", "s", " ", "-", r"\.", r"\[", r"\]", "1", "=", "\n"]
_CLASSES = ["[ab]", "[^a]", "[a-c]", "[^]x]", r"\d", r"\w", r"\s", r"\S", r"\W", ".", r"[\d.]", "[^ab\n]"]
_ANCHORS = ["^", "$", r"\b", r"\B", r"\A", r"\Z"]
_QUANTIFIERS = ["*", "+", "?", "{2}", "{0,2}", "{1,3}", "{2,}"]


def _quantified(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda body, quantifier, lazy: f"(?:{body}){quantifier}{'?' if lazy else ''}",
        inner,
        st.sampled_from(_QUANTIFIERS),
        st.booleans(),
    )


# Inline flags a linear engine honours, for a part of the pattern ((?i:...)) or all of it ((?i)).
_SCOPED_FLAGS = ["i", "-i", "s", "-s", "m", "-m", "a", "x", "ix"]
_GLOBAL_FLAGS = ["", "", "i", "s", "m", "x", "a", "ia", "ms", "ix", "imsx"]

_atoms = st.sampled_from(_LITERALS + _CLASSES) | st.sampled_from(_ANCHORS)
_expressions = st.recursive(
    _atoms,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3).map("".join)
        | st.lists(inner, min_size=2, max_size=3).map(lambda parts: "(?:" + "|".join(parts) + ")")
        | _quantified(inner)
        | st.builds(lambda flags, body: f"(?{flags}:{body})", st.sampled_from(_SCOPED_FLAGS), inner)
    ),
    max_leaves=8,
)


@st.composite
def _patterns(draw: st.DrawFn) -> str:
    """A site rule: text around the groups `ip` and (perhaps) `user`, in either order."""
    parts = [draw(_expressions) for _ in range(3)]
    ip = f"(?P<ip>{draw(_expressions)})"
    user = f"(?P<user>{draw(_expressions)})" if draw(st.booleans()) else ""
    groups = [ip, user] if draw(st.booleans()) else [user, ip]
    pattern = parts[0] + groups[0] + parts[1] + groups[1] + parts[2]
    if draw(st.booleans()):
        # A group inside a repeat: the last iteration's text is captured.
        pattern = f"(?:{pattern}){draw(st.sampled_from(_QUANTIFIERS))}"
    flags = draw(st.sampled_from(_GLOBAL_FLAGS))
    return f"(?{flags}){pattern}" if flags else pattern


# With the characters case folding treats apart: the Kelvin sign folds to k, the long s to s.
_lines = st.text(alphabet="ab x.-[]1=\nüAÜKk\u212a\u017fsS", max_size=10)
# Runs of one character or of a few: what a state's skipper reads in one call.
_long_lines = st.lists(
    st.builds(
        lambda text, count: text * count,
        st.text(alphabet="ab x.[]1\nAk", min_size=1, max_size=3),
        st.integers(1, 12),
    ),
    max_size=4,
).map("".join)


def _matches_empty_in_a_repeat(pattern: str) -> bool:
    """Whether some repeated part of `pattern` can match the empty string: there
    the engine may count other empty iterations than re (see linear.py)."""
    parsed = re._parser.parse(pattern, re.DOTALL)  # type: ignore[attr-defined]

    def walk(items: object) -> bool:
        for op, value in items:  # type: ignore[attr-defined]
            name = str(op)
            if name in ("MAX_REPEAT", "MIN_REPEAT"):
                inner = [value[2]]
                if value[1] > 1 and _nullable(value[2]):
                    return True
            elif name == "SUBPATTERN":
                inner = [value[3]]
            elif name == "BRANCH":
                inner = list(value[1])
            else:
                inner = []
            if any(walk(each) for each in inner):
                return True
        return False

    return walk(parsed)


def _nullable(items: object) -> bool:
    for op, value in items:  # type: ignore[attr-defined]
        name = str(op)
        if name in ("AT",):
            continue
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            if value[0] == 0 or _nullable(value[2]):
                continue
            return False
        if name == "SUBPATTERN":
            if _nullable(value[3]):
                continue
            return False
        if name == "BRANCH":
            if any(_nullable(branch) for branch in value[1]):
                continue
            return False
        return False
    return True


class _ReTooSlow(Exception):
    pass


@contextlib.contextmanager
def _re_time_limit(seconds: float) -> Iterator[None]:
    """re backtracks: a generated pattern may take it minutes even on a short line
    (the very fault this engine removes). re checks for signals while it matches."""

    def expire(_signal: int, _frame: object) -> None:
        raise _ReTooSlow

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _eager(eager: bool) -> Iterator[None]:
    """The engine with its shortcuts (a state's skipper, a literal chain, the walk
    without captures first) taken at once, so that a few short lines exercise them."""
    if not eager:
        yield
        return
    saved = (linear.STAYS_BEFORE_SKIP, linear.CHAIN_AFTER, linear.LONG_TEXT)
    linear.STAYS_BEFORE_SKIP, linear.CHAIN_AFTER, linear.LONG_TEXT = 1, 1, 0
    try:
        yield
    finally:
        linear.STAYS_BEFORE_SKIP, linear.CHAIN_AFTER, linear.LONG_TEXT = saved


def _says_what_re_says(pattern: str, lines: list[str], eager: bool) -> None:
    try:
        expected = re.compile(pattern, re.DOTALL)
    except re.error:
        reject()  # flags that cannot go together, (?a) and (?u)
    engine = LinearPattern(pattern, re.DOTALL)
    captures_comparable = not _matches_empty_in_a_repeat(pattern)
    with _eager(eager):
        # Each line twice: the second reading takes the moves cached by the first.
        for line in [*lines, *lines]:
            try:
                with _re_time_limit(2):
                    found = expected.fullmatch(line)
            except _ReTooSlow:
                reject()
            got = engine.fullmatch(line)
            assert (got is None) == (found is None), (pattern, line)
            if found is not None and got is not None and captures_comparable:
                assert got.group("ip") == found.group("ip"), (pattern, line)
                assert got.groupdict().get("user") == found.groupdict().get("user"), (pattern, line)


@settings(max_examples=400, deadline=None)
@given(_patterns(), st.lists(_lines, min_size=1, max_size=6))
def test_the_engine_says_what_re_says(pattern: str, lines: list[str]) -> None:
    _says_what_re_says(pattern, lines, eager=False)


@settings(max_examples=400, deadline=None)
@given(_patterns(), st.lists(_lines | _long_lines, min_size=1, max_size=6))
def test_the_engine_with_its_shortcuts_at_once_says_what_re_says(pattern: str, lines: list[str]) -> None:
    _says_what_re_says(pattern, lines, eager=True)


@pytest.mark.parametrize(
    ("pattern", "line"),
    [
        # A run read in one call, its capture moves applied once at its end.
        (r"OK user=<(?P<user>[^>]*)>, (?P<ip>[0-9.]+)", "OK user=<someone>, 192.0.2.1"),
        (r"(?:(?P<ip>a))*b", "aaaab"),  # each a starts the group anew: only the last counts
        (r"(?:(?P<ip>a)|b)*c", "abbbc"),
        (r"(?:x(?P<ip>a*))*", "xaaaxaa"),
        # The character before a newline is read with the newline's context.
        (r"(?P<ip>a*)$\n", "aaaa\n"),
        (r"(?m)(?P<ip>a*)$\n(?P<user>b*)$", "aaaa\nbbb"),
        (r"(?P<ip>[^b]*)\b(?P<user>b+)", "aaaa bbb"),
        # A literal chain that the text leaves, or ends inside.
        (r"Login: (?P<ip>a+)|Logout: (?P<user>b)", "Login: aaa"),
        (r"abcdef(?P<ip>a*)", "abcde"),
        (r"(?i)login: (?P<ip>a+)", "LOGIN: aAa"),
    ],
)
def test_the_shortcuts_read_as_one_character_at_a_time(pattern: str, line: str) -> None:
    _says_what_re_says(pattern, [line, line[:-1], line + line[-1]], eager=True)


@given(_lines.map(lambda line: "OK user=" + line + " from h [" + line + "]"))
def test_the_realistic_rule_captures_as_re_does(line: str) -> None:
    found = re.fullmatch(REALISTIC, line, re.DOTALL)
    got = LinearPattern(REALISTIC, re.DOTALL).fullmatch(line)
    assert (None if got is None else got.groupdict()) == (None if found is None else found.groupdict())


@pytest.mark.parametrize(
    ("pattern", "line", "expected"),
    [
        (r"(?P<ip>\d+)\.", "12.", {"ip": "12"}),
        (r"(?a:(?P<ip>\w+))", "é", None),
        (r"(?P<ip>\w+)", "é", {"ip": "é"}),
        (r"(?P<ip>.+)$", "x\n", {"ip": "x\n"}),
        (r"(?P<ip>[^\n]+)$\n", "x\n", {"ip": "x"}),
        (r"(?-s:(?P<ip>.+))", "x\ny", None),
        (r"(?m:a$\n^(?P<ip>b))", "a\nb", {"ip": "b"}),
        (r"(?:(?P<ip>a)|b)+", "ab", {"ip": "a"}),
        (r"(?i)ok (?P<ip>[a-c]+)", "Ok aBC", {"ip": "aBC"}),
        (r"(?i:ok) (?P<ip>a)", "OK A", None),
        (r"(?i)(?P<ip>k)", "\u212a", {"ip": "\u212a"}),  # the Kelvin sign folds to k, as in re
        (r"(?ia)(?P<ip>k)", "\u212a", None),  # but not under (?a)
        (r"(?i)(?P<ip>[^s]+)", "\u017f", None),  # nor does the long s escape [^s]
        (r"(?x) (?P<ip> a b ) # comment", "ab", {"ip": "ab"}),
        (r"(?m)(?P<ip>a$\n^b)", "a\nb", {"ip": "a\nb"}),
    ],
)
def test_flags_and_anchors_as_re(pattern: str, line: str, expected: dict[str, str] | None) -> None:
    found = LinearPattern(pattern, re.DOTALL).fullmatch(line)
    assert (None if found is None else found.groupdict()) == expected
    python = re.fullmatch(pattern, line, re.DOTALL)
    assert (None if python is None else python.groupdict()) == expected


# -- what a linear engine cannot do is refused ---------------------------------------


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(?P<ip>a)(?P=ip)", "backreference"),
        (r"(?P<ip>a)\1", "backreference"),
        (r"(?=a)(?P<ip>a)", "lookahead"),
        (r"(?P<ip>a)(?<!b)", "lookbehind"),
        (r"(?P<ip>a)?(?(ip)b|c)", "conditional"),
        (r"(?>a+)(?P<ip>a)", "atomic"),
        (r"a++(?P<ip>a)", "possessive"),
        (r"(?:(?:(?:a{100}){100}){100})(?P<ip>a)", "too large"),
    ],
)
def test_what_cannot_run_in_linear_time_is_refused(pattern: str, says: str) -> None:
    with pytest.raises(RefusedPattern, match=says):
        LinearPattern(pattern, re.DOTALL)


# -- the hostile lines that hung a run -----------------------------------------------

HOSTILE = 8192


def _hostile_results() -> list[object]:
    """Runs in a child process, so that a hang fails the test instead of blocking the suite."""
    script = f"""
import json
import re
from exactcron.rules.linear import LinearPattern
n = {HOSTILE}
cases = [
    ({REALISTIC!r}, "OK user=" + " from [x]" * (n // 9)),
    ({REALISTIC!r}, "OK user=" + " from [x" * (n // 8)),
    (r"(?:\\w+){{10}}(?P<ip>!)", "a" * n),
    (r"(?:a|a)*(?P<ip>)", "a" * n + "b"),
    (r"(?:a|a)*(?P<ip>)", "a" * n),
    (r"\\S*\\S*\\S*(?P<ip>)", "a" * n + " "),
    (r"\\S*\\S*\\S*(?P<ip>)", "a" * n),
]
for pattern, line in cases:
    found = LinearPattern(pattern, re.DOTALL).fullmatch(line)
    print(json.dumps(None if found is None else found.groupdict()))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_lines_that_hung_re_are_matched() -> None:
    results = _hostile_results()
    # Greedy: `user` runs to the last ` from `, as re would have it.
    assert results == [
        {"user": " from [x]" * (HOSTILE // 9 - 1), "ip": "x"},
        None,
        None,
        None,
        {"ip": ""},
        None,
        {"ip": ""},
    ]


# -- the built-in rules' patterns, as the engine reads them --------------------------


def _corpus_messages() -> list[str]:
    """The message part (after `tag[pid]: `) of every line of the test corpus."""
    from pathlib import Path

    messages = []
    for path in sorted((Path(__file__).parent / "data" / "corpus").rglob("*")):
        if path.is_file():
            for line in path.read_bytes().decode("utf-8", "replace").splitlines():
                _head, colon, message = line.partition(": ")
                if colon:
                    messages.append(message)
                    messages.append(message.partition(": ")[2])
    return messages


def test_every_built_in_pattern_is_one_the_engine_runs_and_reads_alike() -> None:
    """Our own patterns stay on re, but none needs what a linear engine cannot do,
    and on every corpus message the engine and re agree: the engine is checked on
    the largest real patterns we have, and a built-in pattern could move to it."""
    from exactcron.rules.builtin import BUILTIN_RULES

    messages = _corpus_messages()
    assert len(messages) > 100
    for name in BUILTIN_RULES:
        for form in BUILTIN_RULES[name].forms:
            linear = LinearPattern(form.pattern.pattern, form.pattern.flags & ~re.UNICODE)
            groups = [group for group in ("ip", "user") if group in form.pattern.groupindex]
            for message in messages:
                found = form.pattern.fullmatch(message)
                got = linear.fullmatch(message)
                assert (got is None) == (found is None), (name, message)
                if found is not None and got is not None:
                    for group in groups:
                        assert got.group(group) == found.group(group), (name, message, group)
