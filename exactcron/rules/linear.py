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
possessive repeats. Inline flags are honoured as `re` honours them: (?s),
(?m), (?x) (the parser's), (?a), and (?i), whose every one-character test
is `re`'s own (so case folds as in `re`, Unicode included: K matches the
Kelvin sign, but not under (?a)).

Speed: the threads' moves are computed once per (set of instructions,
character, context) and cached: a lazily built DFA that also says which
captures each move records. A walk keeps only the moves that set captures
(at most one per character); the groups of the thread that matches are
read back from them at the end. Two shortcuts read many characters per
Python step: a state that characters leave as it is (`[^>]*`) gets a
skipper, re's match of one character class `[...]+` (linear: one class,
nothing after it), whose moves are recorded once at the run's end; a state
of one thread reading a literal gets its chain, the literal text from it,
read by `str.startswith`. Both are built only once a state has been met
often enough to pay for them, so a hostile line that visits new states
costs no more than before. A long line is first walked without captures,
with skippers over every character that stays, and fails there if it does
not match. The cache is emptied beyond MAX_CACHED_MOVES (weighed by
threads): the engine then computes moves again, still one step per
character, in time linear in the line and memory bounded.

Over 400 lines: the translation of `re`'s parse tree and the Pike VM that
runs it share one instruction set, and the DFA's shortcuts read its states.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

_parser: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")
_re_compiler: Any = importlib.import_module("re._compiler")

# The captures a site rule may have.
GROUPS = ("ip", "user", "session")
# Instructions a pattern may take once its counted repeats are spelt out.
MAX_PROGRAM = 20000
# Cached moves kept before the cache is emptied, each counted once per thread it
# moves (a state-set explosion, `[ab]*a[ab]{16}`, then stays within ~40 MB).
MAX_CACHED_MOVES = 1 << 17
# Characters that leave a state as it is, read one by one, before the state
# gets a skipper (a run of them read by re in one call).
STAYS_BEFORE_SKIP = 16
# Entries into a state of one literal thread before its chain is built, and a chain's longest text.
CHAIN_AFTER = 8
MAX_CHAIN = 64
# Longer texts are first walked without captures: most such lines do not match.
LONG_TEXT = 512

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
        self.folded: dict[tuple[Any, str, int], Callable[[str], object]] = {}
        # The instructions that read one given character, and which.
        self.literals: dict[int, str] = {}

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
        if flags & re.IGNORECASE and op in (_c.LITERAL, _c.NOT_LITERAL, _c.IN):
            self.emit(_CHAR, self.folded_test(op, value, flags))
        elif op is _c.LITERAL:
            char = chr(value)
            self.literals[self.emit(_CHAR, char.__eq__)] = char
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

    def folded_test(self, op: Any, value: Any, flags: int) -> Callable[[str], object]:
        """The test of one character item that ignores case: `re`'s own compiled
        one-character pattern, so that case folds exactly as `re` folds it
        (Unicode's simple case folding and re's extra pairs, such as K and
        the Kelvin sign; only ASCII under (?a)). One character cannot make
        `re` backtrack; the test only runs when a move is first computed."""
        key = (op, repr(value), flags & (re.IGNORECASE | re.ASCII))
        test = self.folded.get(key)
        if test is None:
            state = _parser.State()
            state.flags = flags
            one = _parser.SubPattern(state, [(op, value)])
            test = self.folded[key] = _re_compiler.compile(one, flags & (re.IGNORECASE | re.ASCII)).match
        return test

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
    """What `re.Match` gives of a site rule's match: its groups `ip`, `user` and `session`."""

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
        self.pattern = pattern
        self.groupindex = {name: number for name, number in parsed.state.groupdict.items()}
        compiler = _Compiler(self.groupindex)
        compiler.items(parsed, top_flags)
        compiler.emit(_MATCH)
        self._ops = compiler.ops
        self._args = compiler.args
        self._literals = compiler.literals
        self._names = [(name, 2 * index) for index, name in enumerate(GROUPS) if name in self.groupindex]
        codes = compiler.assert_codes
        self._needs_context = bool(codes)
        self._needs_words = any(
            isinstance(code, tuple) or code in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY) for code in codes
        )
        self._closures: dict[tuple[int, int], _Moves] = {}
        self._states: dict[tuple[int, ...], int] = {}
        self._state_pcs: list[tuple[int, ...]] = []
        # Per state: its moves by character (by (character, context) when the
        # pattern asserts), each (next state, the threads' moves or None).
        self._tables: list[dict[Any, tuple[int, _Moves | None]]] = []
        # Per state: re's match of a run of characters that leave it as it is
        # (a state's self-loop, `[^>]*`), or None; built once it has been
        # met often enough to pay (see _skipper).
        self._skippers: list[Callable[[str, int, int], re.Match[str] | None] | None] = []
        self._skip_moves: list[_Moves | None] = []
        # Per state: the same for a walk without captures, of every character that stays.
        self._state_skippers: list[Callable[[str, int, int], re.Match[str] | None] | None] = []
        self._stays: list[int] = []
        # Per state of one thread reading a given character: None until it has
        # been entered CHAIN_AFTER times, then its chain: the literal text read
        # from it one state of one literal thread after another, the state at
        # its end, and the moves made on the way that set captures, each with
        # its offset in the text (str.startswith reads it in one call); or False.
        self._chains: list[tuple[str, int, tuple[tuple[int, _Moves], ...]] | bool | None] = []
        self._entries: list[int] = []
        self._cached_moves = 0
        self._starts: dict[int, tuple[int, _Moves]] = {}

    def __len__(self) -> int:
        """Instructions in the program."""
        return len(self._ops)

    # -- matching ---------------------------------------------------------------

    def fullmatch(self, text: str) -> LinearMatch | None:
        """As `re.fullmatch`: the match of the whole text, or None."""
        if self._cached_moves > MAX_CACHED_MOVES:
            self._forget()
        length = len(text)
        needs_context = self._needs_context
        context = self._context(text, 0, length) if needs_context else 0
        start = self._starts.get(context)
        if start is None:
            start = self._starts[context] = self._state([self._closure(0, context)], context)
        state, first_moves = start
        if length > LONG_TEXT and not self._ends_in_match(text, state):
            return None
        # The moves that set captures, each with its position: the captures of
        # the thread that matches are read back from them at the end (cheaper
        # than carrying every thread's captures along; at most one per character).
        trail: list[tuple[int, _Moves]] = [(0, first_moves)]
        record = trail.append
        tables, skippers, skip_moves, chains = self._tables, self._skippers, self._skip_moves, self._chains
        # A skip never reads the last character (its context is the end's),
        # nor one before a newline when the pattern asserts (see _stayed).
        limit = length - 1 if needs_context else length
        position = 0
        while position < length:
            chain = chains[state]
            if chain:
                literal, target, effects = chain  # type: ignore[misc]
                if text.startswith(literal, position):
                    for offset, moves in effects:
                        record((position + offset, moves))
                    position += len(literal)
                    state = target
                    continue
            elif chain is None:
                self._entered(state)
            skip = skippers[state]
            if skip is not None:
                ran = skip(text, position, limit)
                if ran is not None:
                    end = ran.end()
                    if needs_context and text[end] == "\n":
                        end -= 1  # the character before a newline is read with its context
                    if end > position:
                        repeated = skip_moves[state]
                        if repeated is not None:
                            # The run's moves, once, at its end: the same as one by one (see _stayed).
                            record((end, repeated))
                        position = end
                        if position >= length:
                            break
            char = text[position]
            position += 1
            if needs_context:
                context = self._context(text, position, length)
                key: Any = (char, context)
            else:
                key = char
            step = tables[state].get(key)
            if step is None:
                step = self._new_step(state, key, char, context)
            following, moves = step
            if moves is not None:  # None: each thread goes on as it was, captures unchanged
                if not moves:
                    return None
                record((position, moves))
            if following == state and skip is None:
                self._stayed(state)
            state = following
        ops = self._ops
        for thread, pc in enumerate(self._state_pcs[state]):
            if ops[pc] == _MATCH:
                return LinearMatch(self._captures(text, trail, thread))
        return None

    def _captures(self, text: str, trail: list[tuple[int, _Moves]], thread: int) -> dict[str, str | None]:
        """The groups of `thread`, read back along its ancestors: each slot holds the
        position of the last move on the way that set it."""
        slots: list[int | None] = [None] * (2 * len(GROUPS))
        for position, moves in reversed(trail):
            thread, saves = moves[thread]
            for slot in saves:
                if slots[slot] is None:
                    slots[slot] = position
        found = {}
        for name, slot in self._names:
            start, end = slots[slot], slots[slot + 1]
            found[name] = None if start is None or end is None else text[start:end]
        return found

    def _ends_in_match(self, text: str, state: int) -> bool:
        """Whether reading `text` from `state` ends in a match: fullmatch's walk without
        its captures (a DFA), which costs a fraction of it on a long hostile line."""
        length = len(text)
        needs_context = self._needs_context
        context = 0
        tables, skippers, chains = self._tables, self._state_skippers, self._chains
        limit = length - 1 if needs_context else length
        position = 0
        while position < length:
            chain = chains[state]
            if chain:
                literal, target, _effects = chain  # type: ignore[misc]
                if text.startswith(literal, position):
                    position += len(literal)
                    state = target
                    continue
            elif chain is None:
                self._entered(state)
            skip = skippers[state]
            if skip is not None:
                ran = skip(text, position, limit)
                if ran is not None:
                    end = ran.end()
                    if needs_context and text[end] == "\n":
                        end -= 1
                    position = end
                    if position >= length:
                        break
            char = text[position]
            position += 1
            if needs_context:
                context = self._context(text, position, length)
                key: Any = (char, context)
            else:
                key = char
            step = tables[state].get(key)
            if step is None:
                step = self._new_step(state, key, char, context)
            following, moves = step
            if moves is not None and not moves:
                return False
            if following == state and skip is None:
                self._stayed(state)
            state = following
        ops = self._ops
        return any(ops[pc] == _MATCH for pc in self._state_pcs[state])

    def _new_step(self, state: int, key: Any, char: str, context: int) -> tuple[int, _Moves | None]:
        step = self._tables[state][key] = self._step(state, char, context)
        # Weighed by its threads: what a move holds in memory grows with them.
        self._cached_moves += 1 + len(step[1] or ())
        return step

    def _stayed(self, state: int) -> None:
        """Counts a character that left `state` as it was; at STAYS_BEFORE_SKIP, builds
        its skipper. Its cost (a move per ASCII character) is thus paid for by
        characters already read, and the whole run stays linear in the text."""
        self._stays[state] += 1
        if self._stays[state] != STAYS_BEFORE_SKIP or self._needs_words:
            return
        table = self._tables[state]
        # The characters that leave the state as it is, grouped by the threads'
        # moves, of which those that a run may apply once, at its end.
        staying: dict[_Moves | None, list[int]] = {}
        # And all of them, for the walk without captures.
        staying_at_all: list[int] = []
        for code in range(128):
            char = chr(code)
            if self._needs_context and char == "\n":
                continue  # a newline changes the context around it
            key = (char, 0) if self._needs_context else char
            step = table.get(key)
            if step is None:
                step = self._new_step(state, key, char, 0)
            following, moves = step
            if following != state:
                continue
            staying_at_all.append(code)
            if moves is None or _repeats_as_once(moves):
                staying.setdefault(moves, []).append(code)
        if staying_at_all:
            self._state_skippers[state] = _run_of(staying_at_all)
        if staying:
            moves, codes = max(staying.items(), key=lambda item: len(item[1]))
            self._skippers[state] = _run_of(codes)
            self._skip_moves[state] = moves

    def _entered(self, state: int) -> None:
        """Counts an entry into a state of one literal thread; at CHAIN_AFTER, builds
        its chain (at most MAX_CHAIN moves, paid for by the entries already counted)."""
        self._entries[state] += 1
        if self._entries[state] < CHAIN_AFTER:
            return
        text: list[str] = []
        # The moves that set captures on the way, each with where it is made in the text.
        effects: list[tuple[int, _Moves]] = []
        at = state
        while len(text) < MAX_CHAIN and self._chains[at] is not False:
            (pc,) = self._state_pcs[at]
            char = self._literals[pc]
            if self._needs_context and not self._context_free(pc + 1):
                break
            key = (char, 0) if self._needs_context else char
            step = self._tables[at].get(key)
            if step is None:
                step = self._new_step(at, key, char, 0)
            following, moves = step
            text.append(char)
            if moves is not None:
                effects.append((len(text), moves))
            at = following
        self._chains[state] = ("".join(text), at, tuple(effects)) if text else False

    def _context_free(self, pc: int) -> bool:
        """Whether no assertion is met on the way from `pc` to the next instructions that
        read a character: then the move into them is the same in every context."""
        ops, args = self._ops, self._args
        seen: set[int] = set()
        stack = [pc]
        while stack:
            at = stack.pop()
            if at in seen:
                continue
            seen.add(at)
            op = ops[at]
            if op == _ASSERT:
                return False
            if op == _JMP:
                stack.append(args[at])
            elif op == _SPLIT:
                stack.extend(args[at])
            elif op == _SAVE:
                stack.append(at + 1)
        return True

    def _forget(self) -> None:
        self._tables.clear()
        self._skippers.clear()
        self._skip_moves.clear()
        self._state_skippers.clear()
        self._stays.clear()
        self._chains.clear()
        self._entries.clear()
        self._cached_moves = 0
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
            self._tables.append({})
            self._skippers.append(None)
            self._skip_moves.append(None)
            self._state_skippers.append(None)
            self._stays.append(0)
            self._chains.append(None if len(key) == 1 and key[0] in self._literals else False)
            self._entries.append(0)
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


def _run_of(codes: list[int]) -> Callable[[str, int, int], re.Match[str] | None]:
    """re's match of a run of the ASCII characters `codes`: one class, `[...]+`,
    read in one pass without backtracking."""
    return re.compile("[" + "".join(f"\\x{code:02x}" for code in codes) + "]+").match


def _repeats_as_once(moves: _Moves) -> bool:
    """Whether applying `moves` at each of several positions leaves the captures that
    applying them once, at the last, leaves: each thread's source is its own source,
    and sets no slot that the thread does not set again."""
    for source, saves in moves:
        source_of_source, source_saves = moves[source]
        if source_of_source != source or not set(source_saves) <= set(saves):
            return False
    return True


def compile_linear(pattern: str, flags: int = 0) -> LinearPattern:
    """`pattern` for the linear engine. Raises RefusedPattern saying what it cannot do."""
    return LinearPattern(pattern, flags)
