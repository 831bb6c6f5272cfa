"""The rule tester behind `exactcron check`: what a log would grant, and why not.

Pure: lines in, a report out. It reads no state and writes none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from exactcron.addresses import Network, normalize_address, sort_key
from exactcron.leases import Grant, believed_login
from exactcron.model import Login
from exactcron.rules.grant import Refusal
from exactcron.rules.parser import MAX_LINE_BYTES, LineParser
from exactcron.rules.rule import Rule
from exactcron.timestamps import TimestampParser

# How many unmatched login-like lines, and lines a rule matched that speak
# of failure, the report quotes (the rest are counted).
EXAMPLES = 5
# How many logins, and addresses per verdict, the report lists unless asked
# for all: beyond that, a log is summed up per rule.
LISTED = 20
# How much of each quoted line.
EXAMPLE_CHARS = 160

# A line "looks like a login" when it speaks of logging in (or a successful
# authentication) and holds an address, but says nothing of failure. Those
# are the lines an administrator wonders about when a user is not granted.
_LOGIN_WORD = re.compile(rb"(?i)log(?:ged)?[ -]?in|authenticated|\bauth\b")
_FAILURE_WORD = re.compile(
    rb"(?i)fail|bad|abort|den(?:y|ied)|invalid|error|refus|disabled|excessive|reject|unknown user|mismatch"
)
_ADDRESS_CANDIDATE = re.compile(rb"[0-9A-Fa-f:.]{7,45}")
# Words of a failed or refused login, as whole words: a line a rule takes
# for a success should hold none of them outside the user name.
_FAILURE_TEXT = re.compile(
    r"(?i)\b(?:fail\w*|abort\w*|invalid|den(?:y|ied)|refus\w*|reject\w*|disabled|errors?|mismatch|bad\w*"
    r"|incorrect|wrong|unknown user|not (?:allowed|permitted))\b"
)


@dataclass(frozen=True)
class UnmatchedLine:
    number: int
    text: str  # printable: control characters and non-ASCII escaped


@dataclass
class RuleSummary:
    """What one rule matched in the log."""

    addresses: set[str] = field(default_factory=set)
    users: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    # Matched lines that speak of failure: a rule that takes them is wrong.
    failure_lines: int = 0
    failure_examples: list[UnmatchedLine] = field(default_factory=list)


@dataclass
class CheckReport:
    rules: tuple[str, ...]
    lines: int = 0
    logins: list[Login] = field(default_factory=list)  # the first `listed`, in log order
    login_count: int = 0
    matched: dict[str, int] = field(default_factory=dict)  # rule name -> lines
    summaries: dict[str, RuleSummary] = field(default_factory=dict)  # rule name -> what it matched
    looked_like_logins: int = 0  # login-like lines no rule matched
    examples: list[UnmatchedLine] = field(default_factory=list)
    too_long: int = 0
    unreadable: int = 0  # lines that could hold a login whose stamp names no time
    granted: list[str] = field(default_factory=list)  # sorted
    too_old: list[str] = field(default_factory=list)  # logged before now - timeout
    # Sorted: granted nothing, each login stamped more than a minute ahead of the clock.
    ahead: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # in `ignore`
    special: list[str] = field(default_factory=list)  # unspecified, broadcast, multicast, link-local
    other_hosts: int = 0  # login lines from a host not in `hosts`
    # Login lines of two-line rules with no open session of their own (no connect line read).
    unpaired: int = 0


# How much of an over-long line is read at a time while it is skipped.
_SKIP_CHUNK = 1 << 16


def bounded_lines(stream: Any, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a binary stream, each at most `limit` bytes (and its LF); of a
    longer line, only its first `limit + 1` bytes, the rest read and dropped in
    chunks: memory stays bounded whatever the log (a line with no end included)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            # Over-long: the rest of it, up to its LF, is skipped.
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(_SKIP_CHUNK)
        yield line


def check_log(
    lines: Iterable[bytes],
    rules: tuple[Rule, ...],
    timestamps: TimestampParser,
    timeout: timedelta,
    ignore: Iterable[Network],
    listed: int | None = LISTED,
    hosts: frozenset[str] | None = None,
) -> CheckReport:
    """Parse `lines` with `rules`; count what matched, and what looked like a login but did not.

    The report keeps the first `listed` logins and quoted lines of each kind
    (all of them when `listed` is None) and counts the rest. Lines from a
    host not in `hosts` (None: any) grant nothing.
    """
    if hasattr(lines, "readline"):
        # A stream: read line by line in bounded memory, not a whole line at a time.
        lines = bounded_lines(lines)
    parser = LineParser(rules, timestamps, hosts)
    report = CheckReport(rules=tuple(rule.name for rule in rules))
    report.matched = {rule.name: 0 for rule in rules}
    report.summaries = {rule.name: RuleSummary() for rule in rules}
    examples = EXAMPLES if listed is not None else None
    # The latest login of each address, as the lease table believes it.
    latest: dict[str, Login] = {}
    ahead: set[str] = set()
    too_long = 0
    number = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n")
        if len(line) > MAX_LINE_BYTES:
            too_long += 1
            continue
        login = parser.parse(line)
        if login is not None:
            report.login_count += 1
            if listed is None or len(report.logins) < listed:
                report.logins.append(login)
            report.matched[login.server] += 1
            _summarize(report.summaries[login.server], login, number, line, examples)
            believed = believed_login(login, timestamps.now)
            if believed is None:
                ahead.add(login.address)
            else:
                current = latest.get(login.address)
                if current is None or believed.time > current.time:
                    latest[login.address] = believed
        elif looks_like_login(line):
            report.looked_like_logins += 1
            if examples is None or len(report.examples) < examples:
                report.examples.append(UnmatchedLine(number, printable(line)))
    report.lines = number
    report.too_long = too_long
    report.unreadable = parser.unreadable
    report.other_hosts = parser.other_hosts
    report.unpaired = parser.pairings.unpaired if parser.pairings is not None else 0
    # The lease table's own verdict, so that `check` and `update` agree on every login.
    verdict = Grant(timestamps.now, timeout, ignore).verdict
    by_refusal = {
        Refusal.SPECIAL: report.special,
        Refusal.IGNORED: report.ignored,
        Refusal.TOO_OLD: report.too_old,
    }
    for address in sorted(latest, key=sort_key):
        found = verdict(latest[address])
        if isinstance(found, Login):
            report.granted.append(address)
        elif found in by_refusal:
            by_refusal[found].append(address)
        else:
            ahead.add(address)  # not expected: a believed login is never ahead
    report.ahead = sorted(
        ahead - {*report.special, *report.ignored, *report.too_old, *report.granted}, key=sort_key
    )
    return report


def _summarize(summary: RuleSummary, login: Login, number: int, line: bytes, examples: int | None) -> None:
    summary.addresses.add(login.address)
    if login.user is not None:
        summary.users.add(login.user)
    summary.first = login.time if summary.first is None else min(summary.first, login.time)
    summary.last = login.time if summary.last is None else max(summary.last, login.time)
    if speaks_of_failure(line, login.user):
        summary.failure_lines += 1
        if examples is None or len(summary.failure_examples) < examples:
            summary.failure_examples.append(UnmatchedLine(number, printable(line)))


def speaks_of_failure(line: bytes, user: str | None) -> bool:
    """True when a line, its user name left out, holds a word of a failed login."""
    text = line.decode("utf-8", "replace")
    if user:
        text = text.replace(user, "", 1)
    return _FAILURE_TEXT.search(text) is not None


def looks_like_login(line: bytes) -> bool:
    if _LOGIN_WORD.search(line) is None or _FAILURE_WORD.search(line) is not None:
        return False
    for candidate in _ADDRESS_CANDIDATE.findall(line):
        text = candidate.decode("ascii")
        # `::ffff:a.b.c.d` is an address; `1.2.3.4.` or `:1.2.3.4` are one after trimming.
        if normalize_address(text) is not None or normalize_address(text.strip(".:")) is not None:
            return True
    return False


def printable(line: bytes) -> str:
    """The line as safe terminal text: log bytes may hold escape sequences."""
    text = line.decode("ascii", "backslashreplace")
    text = "".join(char if char.isprintable() else f"\\x{ord(char):02x}" for char in text)
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."
