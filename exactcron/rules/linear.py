"""Site rules matched in time linear in the line: a Pike VM of our own.

Python's `re` backtracks: `OK user=(?P<user>.*) from .*\\[(?P<ip>[^]]+)\\]`
takes seconds on one 8 KB line, `(?:a|a)*` longer than the run may last.
A site rule is written by an administrator, but the lines it reads are
written by anyone who can reach the POP server; so its pattern is parsed
with `re`'s own parser (the syntax is exactly Python's) and run here, on a
Thompson NFA simulated by a Pike VM: every thread advances one character at
a time and threads that reach the same instruction are merged, so a line of
n characters costs at most n times the program's size, whatever the pattern.

The match is `re.fullmatch`'s: among the ways the pattern matches the whole
line, the one a backtracking matcher tries first (greedy repeats take as
much as they can, lazy ones as little, alternatives left to right). The
captures `ip` and `user` are those of that way, as `re` gives them; one
difference: when a repeated part can match the empty string (`(?:a*)*`),
which empty iterations count may differ from `re`'s, so a group inside such
a part may capture differently (the line matches or not all the same).

What a linear engine cannot do is refused when the configuration is read:
backreferences, lookahead and lookbehind, conditionals, atomic groups and
possessive repeats, and case-insensitive matching (whose Unicode folding
we do not reproduce).

Speed: the threads' moves are computed once per (set of instructions,
character, context) and cached (a lazily built DFA that also says which
captures each move records), so the common line costs a dictionary lookup
and a few tuple copies per character.

Over 400 lines: the translation of `re`'s parse tree and the Pike VM that
runs it share one instruction set.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

# The captures a site rule may have.
GROUPS = ("ip", "user")
# Instructions a pattern may take once its counted repeats are spelt out.
MAX_PROGRAM = 20000
# Cached moves kept before the cache is emptied (each holds a few tuples).
MAX_CACHED_MOVES = 1 << 16

_CHAR, _SPLIT, _JMP, _SAVE, _ASSERT, _MATCH = range(6)

# Context bits of a position, for the assertions (^ $ \A \Z \b \B).
_AT_START = 1
_AT_END = 2
_BEFORE_FINAL_NL = 4  # the last character, a newline, follows
_AFTER_NL = 8
_BEFORE_NL = 16
_AFTER_WORD = 32
_BEFORE_WORD = 64
_AFTER_ASCII_WORD = 128
_BEFORE_ASCII_WORD = 256
_EMPTY = 512

_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ASCII_SPACE = frozenset(" \t\n\r\f\v")
_ASCII_DIGIT = frozenset("0123456789")


# Per thread of the next state: (the thread it comes from, the capture slots it sets).
_Moves = tuple[tuple[int, tuple[int, ...]], ...]
_Captures = tuple[int | None, ...]


class RefusedPattern(ValueError):
    """A pattern the linear engine cannot run; the message says what to write instead."""


def _unicode_word(char: str) -> bool:
    return char.isalnum() or char == "_"


_CATEGORIES: dict[Any, tuple[Callable[[str], bool], Callable[[str], bool]]] = {
    # (Unicode test, ASCII test), as `re` defines \d \s \w over str.
    _c.CATEGORY_DIGIT: (str.isdecimal, _ASCII_DIGIT.__contains__),
    _c.CATEGORY_SPACE: (str.isspace, _ASCII_SPACE.__contains__),
    _c.CATEGORY_WORD: (_unicode_word, _ASCII_WORD.__contains__),
}
_NEGATED_CATEGORIES = {
    _c.CATEGORY_NOT_DIGIT: _c.CATEGORY_DIGIT,
    _c.CATEGORY_NOT_SPACE: _c.CATEGORY_SPACE,
    _c.CATEGORY_NOT_WORD: _c.CATEGORY_WORD,
}

_REFUSED = {
    _c.GROUPREF: "a backreference ((?P=name) or \\N)",
    _c.GROUPREF_EXISTS: "a conditional ((?(group)yes|no))",
    _c.ASSERT: "a lookahead or lookbehind ((?=...) or (?<=...))",
    _c.ASSERT_NOT: "a negative lookahead or lookbehind ((?!...) or (?<!...))",
    _c.ATOMIC_GROUP: "an atomic group ((?>...))",
    _c.POSSESSIVE_REPEAT: "a possessive repeat (*+, ++, ?+ or {m,n}+)",
}


def _category_test(category: Any, ascii_only: bool) -> Callable[[str], bool]:
    negated = category in _NEGATED_CATEGORIES
    unicode_test, ascii_test = _CATEGORIES[_NEGATED_CATEGORIES.get(category, category)]
    test = ascii_test if ascii_only else unicode_test
    if negated:
        return lambda char: not test(char)
    return test


def _set_test(items: Any, ascii_only: bool) -> Callable[[str], bool]:
    """The test of a character class `[...]`."""
    negate = False
    chars: set[str] = set()
    ranges: list[tuple[int, int]] = []
    tests: list[Callable[[str], bool]] = []
    for op, value in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            chars.add(chr(value))
        elif op is _c.RANGE:
            ranges.append(value)
        elif op is _c.CATEGORY:
            tests.append(_category_test(value, ascii_only))
        else:
            raise RefusedPattern(f"a class item this engine does not know ({op})")
    frozen = frozenset(chars)

    def test(char: str) -> bool:
        if char in frozen:
            return not negate
        code = ord(char)
        found = any(low <= code <= high for low, high in ranges) or any(each(char) for each in tests)
        return found != negate

    return test


class _Compiler:
    def __init__(self, groups: dict[str, int]) -> None:
        # Group number -> first of its two capture slots.
        self.slots = {number: 2 * index for index, name in enumerate(GROUPS) if (number := groups.get(name))}
        self.ops: list[int] = []
        self.args: list[Any] = []
        self.assert_codes: set[Any] = set()

    def emit(self, op: int, arg: Any = None) -> int:
        if len(self.ops) >= MAX_PROGRAM:
            raise RefusedPattern(
                "is too large once its counted repeats ({m,n}) are spelt out; use smaller counts"
            )
        self.ops.append(op)
        self.args.append(arg)
        return len(self.ops) - 1

    def items(self, items: Any, flags: int) -> None:
        for op, value in items:
            self.item(op, value, flags)

    def item(self, op: Any, value: Any, flags: int) -> None:
        ascii_only = bool(flags & re.ASCII)
        if op in _REFUSED:
            raise RefusedPattern(f"uses {_REFUSED[op]}, which cannot be matched in time linear in the line")
        if op is _c.LITERAL:
            char = chr(value)
            self.emit(_CHAR, char.__eq__)
        elif op is _c.NOT_LITERAL:
            char = chr(value)
            self.emit(_CHAR, char.__ne__)
        elif op is _c.ANY:
            self.emit(_CHAR, (lambda char: True) if flags & re.DOTALL else "\n".__ne__)
        elif op is _c.IN:
            self.emit(_CHAR, _set_test(value, ascii_only))
        elif op is _c.AT:
            code = value
            if flags & re.MULTILINE:
                code = {_c.AT_BEGINNING: _c.AT_BEGINNING_LINE, _c.AT_END: _c.AT_END_LINE}.get(code, code)
            if code in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY) and ascii_only:
                code = (code, "ascii")
            self.assert_codes.add(code)
            self.emit(_ASSERT, code)
        elif op is _c.BRANCH:
            self.branch(value[1], flags)
        elif op is _c.SUBPATTERN:
            number, add_flags, del_flags, inner = value
            inner_flags = (flags | add_flags) & ~del_flags
            if inner_flags & re.IGNORECASE:
                raise RefusedPattern("ignores case ((?i)), which site rules do not do; write [Oo][Kk]")
            slot = self.slots.get(number)
            if slot is not None:
                self.emit(_SAVE, slot)
            self.items(inner, inner_flags)
            if slot is not None:
                self.emit(_SAVE, slot + 1)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            self.repeat(value, greedy=op is _c.MAX_REPEAT, flags=flags)
        else:
            raise RefusedPattern(f"uses {op}, which this engine does not know")

    def branch(self, alternatives: list[Any], flags: int) -> None:
        jumps = []
        for index, alternative in enumerate(alternatives):
            if index < len(alternatives) - 1:
                split = self.emit(_SPLIT)
                self.items(alternative, flags)
                jumps.append(self.emit(_JMP))
                self.args[split] = (split + 1, len(self.ops))
            else:
                self.items(alternative, flags)
        for jump in jumps:
            self.args[jump] = len(self.ops)

    def repeat(self, value: Any, greedy: bool, flags: int) -> None:
        low, high, body = value
        for _ in range(low):
            self.items(body, flags)
        if high == _c.MAXREPEAT:
            loop = self.emit(_SPLIT)
            self.items(body, flags)
            self.emit(_JMP, loop)
            self.args[loop] = self.choice(loop + 1, len(self.ops), greedy)
            return
        splits = []
        for _ in range(high - low):
            splits.append(self.emit(_SPLIT))
            self.items(body, flags)
        for split in splits:
            self.args[split] = self.choice(split + 1, len(self.ops), greedy)

    @staticmethod
    def choice(body: int, out: int, greedy: bool) -> tuple[int, int]:
        """A split's two ways, the preferred first."""
        return (body, out) if greedy else (out, body)


def _assert_holds(code: Any, context: int) -> bool:
    if code is _c.AT_BEGINNING or code is _c.AT_BEGINNING_STRING:
        return bool(context & _AT_START)
    if code is _c.AT_BEGINNING_LINE:
        return bool(context & (_AT_START | _AFTER_NL))
    if code is _c.AT_END:
        return bool(context & (_AT_END | _BEFORE_FINAL_NL))
    if code is _c.AT_END_LINE:
        return bool(context & (_AT_END | _BEFORE_NL))
    if code is _c.AT_END_STRING:
        return bool(context & _AT_END)
    if isinstance(code, tuple):
        after, before, code = bool(context & _AFTER_ASCII_WORD), bool(context & _BEFORE_ASCII_WORD), code[0]
    else:
        after, before = bool(context & _AFTER_WORD), bool(context & _BEFORE_WORD)
    if context & _EMPTY:
        return False  # as `re`: neither \b nor \B matches the empty string
    if code is _c.AT_BOUNDARY:
        return after != before
    return after == before  # AT_NON_BOUNDARY


class LinearMatch:
    """What `re.Match` gives of a site rule's match: its groups `ip` and `user`."""

    __slots__ = ("_groups",)

    def __init__(self, groups: dict[str, str | None]) -> None:
        self._groups = groups

    def group(self, name: str) -> str | None:
        return self._groups[name]

    def groupdict(self) -> dict[str, str | None]:
        return dict(self._groups)


class LinearPattern:
    """A pattern with `re`'s syntax, matched in time linear in the text."""

    def __init__(self, pattern: str, flags: int = 0) -> None:
        try:
            parsed = _parser.parse(pattern, flags)
        except re.error as error:
            raise RefusedPattern(f"is not a valid regular expression: {error}") from None
        top_flags = parsed.state.flags
        if top_flags & re.IGNORECASE:
            raise RefusedPattern("ignores case ((?i)), which site rules do not do; write [Oo][Kk]")
        self.pattern = pattern
        self.groupindex = {name: number for name, number in parsed.state.groupdict.items()}
        compiler = _Compiler(self.groupindex)
        compiler.items(parsed, top_flags)
        compiler.emit(_MATCH)
        self._ops = compiler.ops
        self._args = compiler.args
        self._names = [(name, 2 * index) for index, name in enumerate(GROUPS) if name in self.groupindex]
        codes = compiler.assert_codes
        self._needs_context = bool(codes)
        self._needs_words = any(
            isinstance(code, tuple) or code in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY) for code in codes
        )
        self._closures: dict[tuple[int, int], _Moves] = {}
        self._states: dict[tuple[int, ...], int] = {}
        self._state_pcs: list[tuple[int, ...]] = []
        self._moves: dict[tuple[int, str, int], tuple[int, _Moves | None]] = {}
        self._starts: dict[int, tuple[int, _Moves]] = {}

    def __len__(self) -> int:
        """Instructions in the program."""
        return len(self._ops)

    # -- matching ---------------------------------------------------------------

    def fullmatch(self, text: str) -> LinearMatch | None:
        """As `re.fullmatch`: the match of the whole text, or None."""
        if len(self._moves) > MAX_CACHED_MOVES:
            self._forget()
        length = len(text)
        context = self._context(text, 0, length) if self._needs_context else 0
        start = self._starts.get(context)
        if start is None:
            start = self._starts[context] = self._state([self._closure(0, context)], context)
        state, first_moves = start
        empty: _Captures = (None,) * (2 * len(GROUPS))
        captures = [_saved(empty, saves, 0) for _source, saves in first_moves]
        cache = self._moves
        needs_context = self._needs_context
        for index, char in enumerate(text):
            position = index + 1
            context = self._context(text, position, length) if needs_context else 0
            key = (state, char, context)
            step = cache.get(key)
            if step is None:
                step = cache[key] = self._step(state, char, context)
            state, moves = step
            if moves is not None:  # None: each thread goes on as it was, captures unchanged
                if not moves:
                    return None
                captures = [
                    captures[source] if not saves else _saved(captures[source], saves, position)
                    for source, saves in moves
                ]
        ops = self._ops
        for pc, found in zip(self._state_pcs[state], captures, strict=True):
            if ops[pc] == _MATCH:
                return LinearMatch({name: _captured(text, found, slot) for name, slot in self._names})
        return None

    def _forget(self) -> None:
        self._moves.clear()
        self._starts.clear()
        self._states.clear()
        self._state_pcs.clear()

    def _context(self, text: str, position: int, length: int) -> int:
        context = 0
        before = text[position - 1] if position > 0 else ""
        after = text[position] if position < length else ""
        if position == 0:
            context |= _AT_START
        if position == length:
            context |= _AT_END
        if length == 0:
            context |= _EMPTY
        if after == "\n":
            context |= _BEFORE_NL
            if position == length - 1:
                context |= _BEFORE_FINAL_NL
        if before == "\n":
            context |= _AFTER_NL
        if self._needs_words:
            if before and _unicode_word(before):
                context |= _AFTER_WORD
            if after and _unicode_word(after):
                context |= _BEFORE_WORD
            if before in _ASCII_WORD and before:
                context |= _AFTER_ASCII_WORD
            if after in _ASCII_WORD and after:
                context |= _BEFORE_ASCII_WORD
        return context

    def _closure(self, pc: int, context: int) -> _Moves:
        """The instructions that read a character (or match) reachable from `pc` without
        reading one, in priority order, each with the capture slots set on the way."""
        key = (pc, context)
        found = self._closures.get(key)
        if found is not None:
            return found
        ops, args = self._ops, self._args
        reached: list[tuple[int, tuple[int, ...]]] = []
        seen: set[int] = set()
        stack: list[tuple[int, tuple[int, ...]]] = [(pc, ())]
        while stack:
            at, saves = stack.pop()
            if at in seen:
                continue
            seen.add(at)
            op = ops[at]
            if op == _JMP:
                stack.append((args[at], saves))
            elif op == _SPLIT:
                preferred, other = args[at]
                stack.append((other, saves))
                stack.append((preferred, saves))
            elif op == _SAVE:
                stack.append((at + 1, (*saves, args[at])))
            elif op == _ASSERT:
                if _assert_holds(args[at], context):
                    stack.append((at + 1, saves))
            else:
                reached.append((at, saves))
        result = self._closures[key] = tuple(reached)
        return result

    def _state(self, sources: list[_Moves], context: int) -> tuple[int, _Moves]:
        """The state reached from each source thread's pending instructions (in priority
        order): its id and, per new thread, (its source thread, slots it sets)."""
        del context  # the closures given were computed for it
        pcs: list[int] = []
        moves: list[tuple[int, tuple[int, ...]]] = []
        seen: set[int] = set()
        for source, reached in enumerate(sources):
            for pc, saves in reached:
                if pc not in seen:
                    seen.add(pc)
                    pcs.append(pc)
                    moves.append((source, saves))
        key = tuple(pcs)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = len(self._state_pcs)
            self._state_pcs.append(key)
        return state, tuple(moves)

    def _step(self, state: int, char: str, context: int) -> tuple[int, _Moves | None]:
        """The next state on `char`, and the threads' moves (None when every thread
        goes on in place and sets no capture: the common case, which copies nothing)."""
        ops, args = self._ops, self._args
        current = self._state_pcs[state]
        sources: list[_Moves] = []
        for pc in current:
            if ops[pc] == _CHAR and args[pc](char):
                sources.append(self._closure(pc + 1, context))
            else:
                sources.append(())
        following, moves = self._state(sources, context)
        in_place = len(moves) == len(current) and all(
            source == index and not saves for index, (source, saves) in enumerate(moves)
        )
        return following, None if in_place and moves else moves


def _captured(text: str, captures: _Captures, slot: int) -> str | None:
    start, end = captures[slot], captures[slot + 1]
    return None if start is None or end is None else text[start:end]


def _saved(captures: _Captures, saves: tuple[int, ...], position: int) -> _Captures:
    if not saves:
        return captures
    updated = list(captures)
    for slot in saves:
        updated[slot] = position
    return tuple(updated)


def compile_linear(pattern: str, flags: int = 0) -> LinearPattern:
    """`pattern` for the linear engine. Raises RefusedPattern saying what it cannot do."""
    return LinearPattern(pattern, flags)
