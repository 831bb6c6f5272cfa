"""Hypothesis strategies for log lines of every shape, shared by the whole-run
property tests: stamps of every form and range, hosts, tags, messages and
hostile bytes (noise that must never stop a run nor hide a login)."""

from __future__ import annotations

import re

from hypothesis import assume
from hypothesis import strategies as st

from exactcron.rules.linear import MAX_PROGRAM, LinearPattern, RefusedPattern

_DIGITS = "0123456789"


def _number(width: int, low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda value: str(value).zfill(width))


def rfc3339_stamps() -> st.SearchStrategy[str]:
    """RFC 3339 stamps of every range, valid or not: years 0001 to 9999, Feb 30, :60,
    hour 24, fractions of any length, offsets to +-25:99, Z, none."""
    year = st.one_of(
        st.sampled_from(["0001", "1969", "1970", "2026", "9000", "9001", "9999"]), _number(4, 0, 9999)
    )
    offset = st.one_of(
        st.sampled_from(["", "Z", "z", "+00:00", "+14:00", "-12:00", "+24:00", "-24:00", "+23:59", "-00:60"]),
        st.builds(
            lambda sign, hours, minutes, colon: f"{sign}{hours}{colon}{minutes}",
            st.sampled_from("+-"),
            _number(2, 0, 25),
            _number(2, 0, 99),
            st.sampled_from([":", ""]),
        ),
    )
    fraction = st.one_of(st.just(""), st.text(_DIGITS, min_size=1, max_size=12).map(lambda text: "." + text))
    return st.builds(
        lambda y, mo, d, sep, h, mi, s, f, o: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{f}{o}",
        year,
        _number(2, 0, 13),
        _number(2, 0, 32),
        st.sampled_from("T "),
        _number(2, 0, 25),
        _number(2, 0, 60),
        _number(2, 0, 61),
        fraction,
        offset,
    )


def extreme_stamps() -> st.SearchStrategy[str]:
    """The edges of time at the offsets that push them over: what found the overflow."""
    return st.builds(
        lambda clock, fraction, offset: clock + fraction + offset,
        st.sampled_from(
            [
                "0001-01-01T00:00:00",
                "0001-01-01 11:59:59",
                "9999-12-31T23:59:59",
                "9999-12-31 12:00:00",
                "1970-01-01T00:00:00",
                "1969-12-31T23:59:59",
                "2026-02-30T10:00:00",
                "2026-11-25T17:59:60",
                "2026-11-25T24:00:00",
            ]
        ),
        st.sampled_from(["", ".5", ".999999999"]),
        st.sampled_from(["", "Z", "+12:00", "+14:00", "-12:00", "+24:00", "-23:59", "+1400"]),
    )


def bsd_stamps() -> st.SearchStrategy[str]:
    """`Mmm dd hh:mm:ss`, of real and false months, days 0 to 39, any padding, :60."""
    month = st.sampled_from(["Jan", "Feb", "Mar", "Oct", "Nov", "Dec", "Foo", "feb"])
    day = st.integers(0, 39).flatmap(lambda day: st.sampled_from([f"{day:2d}", f"{day:02d}", str(day)]))
    return st.builds(
        lambda m, d, h, mi, s: f"{m} {d} {h}:{mi}:{s}",
        month,
        day,
        _number(2, 0, 25),
        _number(2, 0, 60),
        _number(2, 0, 61),
    )


def stamps() -> st.SearchStrategy[str]:
    return st.one_of(extreme_stamps(), rfc3339_stamps(), bsd_stamps(), st.text(max_size=30))


def hosts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["mail", "MAIL", "vm", "", "mail:", "[mail]"]), st.text(max_size=20))


def tags() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            ["dovecot", "dovecot[1]", "dovecot[99999999999]", "imap-login", "pop3-login", "postfix/smtpd[7]"]
        ),
        st.text(max_size=20),
    )


def messages() -> st.SearchStrategy[str]:
    """Login lines' messages, some well formed (from noise addresses), some not."""
    address = st.sampled_from(
        ["192.0.2.50", "192.0.2.51", "2001:db8::5", "0.0.0.0", "999.1.1.1", "::ffff:192.0.2.52"]
    )
    well_formed = st.builds(
        lambda who, rip: (
            f"imap-login: Login: user=<{who}>, method=PLAIN, rip={rip}, lip=10.77.0.1, session=<Ab12>"
        ),
        st.text(max_size=20),
        address,
    )
    return st.one_of(
        well_formed,
        st.text(max_size=80).map(lambda text: "imap-login: Login: " + text),
        st.text(max_size=80).map(lambda text: "Logged in: " + text),
        st.text(max_size=80),
    )


def hostile_bytes() -> st.SearchStrategy[bytes]:
    """What no well-behaved writer sends: NUL, invalid UTF-8, CR, very long lines."""
    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"\x00", b"\xff\xfe", b"\r", b"\xc3", b"\xed\xa0\x80", b"\x1b[2J"]),
        st.integers(8000, 70_000).map(lambda size: b"Login: " + b"x" * size),
    )


def noise_lines() -> st.SearchStrategy[bytes]:
    """A log line of any shape: stamp, host, tag and message, with hostile bytes spliced in."""
    assembled = st.builds(
        lambda stamp, host, tag, message: f"{stamp} {host} {tag}: {message}".encode("utf-8", "surrogatepass"),
        stamps(),
        hosts(),
        tags(),
        messages(),
    )
    spliced = st.builds(
        lambda line, junk, where: line[:where] + junk + line[where:],
        assembled,
        hostile_bytes(),
        st.integers(0, 200),
    )
    return st.one_of(assembled, spliced, hostile_bytes())


# -- site rules from a grammar of patterns, each with lines it matches -----------
#
# A pattern is built as a tree whose every node knows both its text and how to
# write a string it matches, so a rule and its success lines come together.
# Filler (the text around the groups) is written only from FILLER_TEXT. The
# groups `ip` and `user` stand between delimiters holding a character of
# DELIMITER_CHARS found nowhere else in a success line, on the pattern's
# mandatory path: whatever way the pattern matches, each delimiter sits where
# it was written, so `ip` captures exactly the address put there (and `user`
# the user), however greedy or lazy the filler around them.

FILLER_TEXT = "abxyz -_1.é"
DELIMITER_CHARS = "[]<>=,;|#@"
# Begins the other way of an alternative around a group: no success line holds it.
NEVER_IN_A_LINE = "!"


class PatternNode:
    """A piece of a pattern, and the strings it matches that success lines use."""

    def __init__(self, pattern: str, written: st.SearchStrategy[str]) -> None:
        self.pattern = pattern
        self.written = written
        # Literal text every line this node writes holds, for lines that nearly match.
        self.literals: list[str] = []


def _literal(text: str) -> PatternNode:
    node = PatternNode(_escape(text), st.just(text))
    node.literals = [text]
    return node


def _escape(text: str) -> str:
    return "".join("\\" + char if char in r".^$*+?{}[]\|()" else char for char in text)


_FILLER_CHARS = [_literal(char) for char in "abxyz -_1.é"] + [
    PatternNode(pattern, st.sampled_from(chars))
    for pattern, chars in [
        ("[ab]", "ab"),
        ("[a-c]", "abc"),
        ("[^a]", "bxyz -_1.é"),
        ("[^]x]", "ab"),
        (r"\d", "1"),
        (r"\w", "abxyz_1é"),
        (r"\s", " "),
        (r"\S", "abx-_1.é"),
        (r"\W", " -."),
        (".", FILLER_TEXT),
        (r"[\d.]", "1."),
        ("[^ab\n]", "xyz -_1.é"),
    ]
]
# Zero-width assertions, with the characters that make them hold around them.
_ANCHORED_WORDS = [
    PatternNode(r" \bok\b ", st.just(" ok ")),
    PatternNode(r"o\Bk", st.just("ok")),
    PatternNode(r"-\bz", st.just("-z")),
]
_QUANTIFIERS = [("*", 0, None), ("+", 1, None), ("?", 0, 1), ("{2}", 2, 2), ("{0,2}", 0, 2)]
_QUANTIFIERS += [("{1,3}", 1, 3), ("{2,}", 2, None), ("{,2}", 0, 2)]


def _repeated(
    body: PatternNode, quantifier: tuple[str, int, int | None], lazy: bool, capture: bool
) -> PatternNode:
    text, low, high = quantifier
    most = low + 3 if high is None else high
    group = "(" if capture else "(?:"
    node = PatternNode(
        f"{group}{body.pattern}){text}{'?' if lazy else ''}",
        st.lists(body.written, min_size=low, max_size=most).map("".join),
    )
    node.literals = body.literals if low else []
    return node


def _sequence(parts: list[PatternNode]) -> PatternNode:
    node = PatternNode(
        "".join(part.pattern for part in parts), st.tuples(*(p.written for p in parts)).map("".join)
    )
    node.literals = [literal for part in parts for literal in part.literals]
    return node


def _alternative(parts: list[PatternNode]) -> PatternNode:
    return PatternNode(
        "(?:" + "|".join(part.pattern for part in parts) + ")", st.one_of(*(part.written for part in parts))
    )


def _dot_runs() -> st.SearchStrategy[PatternNode]:
    """`.*` runs, greedy or lazy: where a backtracking matcher tries every split. They
    write a few characters, or a few thousand (a success line near the 8 KB limit)."""
    return st.lists(st.sampled_from([".*", ".*?", ".+", ".+?"]), min_size=1, max_size=4).map(
        lambda runs: PatternNode("".join(runs), _dot_text(sum(run.startswith(".+") for run in runs)))
    )


def _dot_text(least: int) -> st.SearchStrategy[str]:
    short = st.lists(st.sampled_from(FILLER_TEXT), min_size=least, max_size=12).map("".join)
    long = st.builds(
        lambda unit, size: (unit * size)[: max(size, least)],
        st.sampled_from(["a", "x ", "1.", "é", "ab-", "ok "]),
        st.integers(1000, 4000),
    )
    return st.one_of(short, long)


def filler_patterns() -> st.SearchStrategy[PatternNode]:
    """Patterns of literals, classes, `.`, groups, alternatives, every repeat greedy and
    lazy, nested repeats like (a+)+ and (?:x*)*, `.*` runs and anchored words."""
    atoms = st.one_of(st.sampled_from(_FILLER_CHARS), st.sampled_from(_ANCHORED_WORDS), _dot_runs())
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=3).map(_sequence),
            st.lists(inner, min_size=2, max_size=3).map(_alternative),
            st.builds(_repeated, inner, st.sampled_from(_QUANTIFIERS), st.booleans(), st.booleans()),
        ),
        max_leaves=8,
    )


# Patterns for the `ip` group; each is used only for the addresses it matches whole.
IP_BODIES = [
    r"[^]]+",
    r"\S+",
    r".+",
    r".*?",
    r".+?",
    r"[0-9a-fA-F.:]+",
    r"[\d.:a-f]+",
    r"(?:[\da-f]+[.:]{0,2})+",
    r"(?:[\da-fA-F]|[.:])+?",
    r"\d+\.\d+\.\d+\.\d+",
    r"(?:\d{1,3}\.){3}\d{1,3}",
    r"[\w.:]*",
    r"[^\s>]+",
]
USER_BODIES = [r"\w+", r"[^>]+", r".*", r".+?", r"\S+", r"[a-z]+", r"(?:\w|\.)+", r"(\w+)*", r"(?:[a-z]+)+?"]


def user_names() -> st.SearchStrategy[str]:
    """User names as a client may send them: plain, or any text a success line can hold
    (no delimiter of the rule's groups, no line end)."""
    return st.one_of(
        st.from_regex(r"[a-z]{1,12}", fullmatch=True),
        st.text(
            st.characters(
                blacklist_characters=DELIMITER_CHARS + NEVER_IN_A_LINE + "\r\n", blacklist_categories=["Cs"]
            ),
            min_size=1,
            max_size=20,
        ),
    )


def address_forms(number: int) -> list[str]:
    """The `number`th fresh documentation address (192.0.2.0/24, 2001:db8::/32, never used by
    the noise) as a log may write it: a dotted quad, IPv6 compressed, in full, in capitals."""
    host = 100 + number % 150
    return [
        f"192.0.2.{host}",
        f"2001:db8:1::{number:x}",
        f"2001:0db8:0001:0000:0000:0000:0000:{number:04x}",
        f"2001:DB8:1::{number:X}",
    ]


class SiteRule:
    """A generated `[rule.NAME]`: its pattern, and lines it matches by construction."""

    def __init__(
        self, pattern: str, parts: list[PatternNode | str], ip_body: str, user_body: str | None
    ) -> None:
        self.pattern = pattern
        self.ip_body = ip_body
        # None: the rule has no group `user`.
        self.user_body = user_body
        # The message in order: nodes (filler, delimiters) and the names of the groups.
        self._parts = parts

    def messages(self, address: str, user: str) -> st.SearchStrategy[str]:
        """Success messages stating `address` (and `user`, if the rule has the group)."""
        fixed = {"ip": st.just(address), "user": st.just(user)}
        return st.tuples(
            *(fixed[part] if isinstance(part, str) else part.written for part in self._parts)
        ).map("".join)

    def writes(self, address: str) -> bool:
        """Whether the rule's `ip` group matches `address` as written."""
        return re.fullmatch(self.ip_body, address, re.DOTALL) is not None

    def writes_user(self, user: str) -> bool:
        """Whether the rule's `user` group (if it has one) matches `user`."""
        return self.user_body is None or re.fullmatch(self.user_body, user, re.DOTALL) is not None

    def near_misses(self) -> st.SearchStrategy[str]:
        """Messages of the rule's literal text with hostile filler between, up to 8 KB:
        what makes a backtracking matcher try every split."""
        literals = [*self.literals, ""]
        return st.builds(
            _interleave,
            st.just(literals),
            st.lists(_HOSTILE_UNITS, min_size=len(literals), max_size=len(literals)),
            st.integers(0, 8000),
        )

    @property
    def literals(self) -> list[str]:
        """The literal text of a success message, in order (fixed groups left out)."""
        return [literal for part in self._parts if not isinstance(part, str) for literal in part.literals]


_HOSTILE_UNITS = st.one_of(
    st.sampled_from(["a", "x", " ", "1.", "é", "ab", ":", "a ", "-z", "ok ", *DELIMITER_CHARS]),
    st.text(min_size=1, max_size=12),
)


def _interleave(literals: list[str], units: list[str], size: int) -> str:
    """Each literal after `size // len(units)` characters of repeated hostile text."""
    share = size // len(units)
    fillers = [(unit * (share // len(unit) + 1))[:share] for unit in units]
    return "".join(filler + literal for filler, literal in zip(fillers, literals, strict=True))


def _group(
    name: str, body: str, left: PatternNode | None, right: PatternNode | None, wrap: str
) -> tuple[str, list[PatternNode | str]]:
    """A named group between its delimiters, wrapped so that it stays on the mandatory path."""
    inner = (left.pattern if left else "") + f"(?P<{name}>{body})" + (right.pattern if right else "")
    wrapped = {
        "bare": inner,
        "group": f"(?:{inner})",
        "capture": f"({inner})",
        "once": f"(?:{inner}){{1}}",
        "plus": f"(?:{inner})+",
        "alternative": f"(?:{inner}|{NEVER_IN_A_LINE}x+)",
    }[wrap]
    return wrapped, [part for part in (left, name, right) if part is not None]


_WRAPS = ["bare", "group", "capture", "once", "plus", "alternative"]


@st.composite
def site_rules(draw: st.DrawFn) -> SiteRule:
    """A site rule from the grammar: filler before, between and after the groups `ip`
    and (perhaps) `user`, in either order, at the start, the middle or the end."""
    delimiters = iter(draw(st.permutations(DELIMITER_CHARS)))
    ip_body, user_body = "", None

    def delimiter() -> PatternNode:
        before = draw(st.sampled_from(["", " ", "rip", " from ", "user", "ip "]))
        after = draw(st.sampled_from(["", " ", "  "]))
        return _literal(before + next(delimiters) + after)

    groups = ["ip", "user"] if draw(st.booleans()) else ["ip"]
    groups = draw(st.permutations(groups))
    pattern = ""
    parts: list[PatternNode | str] = []
    for index, name in enumerate(groups):
        first, last = index == 0, index == len(groups) - 1
        # A group at the very start or end needs no delimiter there (and no filler).
        at_start = first and draw(st.booleans())
        at_end = last and draw(st.booleans())
        if not at_start:
            filler = draw(filler_patterns())
            pattern += filler.pattern
            parts.append(filler)
        left = None if at_start else delimiter()
        right = None if at_end else delimiter()
        bodies = IP_BODIES if name == "ip" else USER_BODIES
        body = draw(st.sampled_from(bodies))
        if name == "ip":
            ip_body = body
        else:
            user_body = body
        # A repeat around a group iterates once only because a delimiter in it is unique.
        wrap = draw(st.sampled_from(_WRAPS if left or right else [w for w in _WRAPS if w != "plus"]))
        text, group_parts = _group(name, body, left, right, wrap)
        pattern += text
        parts.extend(group_parts)
        if last and not at_end:
            filler = draw(filler_patterns())
            pattern += filler.pattern
            parts.append(filler)
    if draw(st.booleans()):
        pattern = draw(st.sampled_from(["^", r"\A"])) + pattern
    if draw(st.booleans()):
        pattern += draw(st.sampled_from(["$", r"\Z"]))
    try:
        program = len(LinearPattern(pattern, re.DOTALL))
    except RefusedPattern:
        program = MAX_PROGRAM + 1
    # Counted repeats nested deep spell out past what a site rule may take (exit 78).
    assume(program <= MAX_PROGRAM // 2)
    return SiteRule(pattern, parts, ip_body, user_body)
