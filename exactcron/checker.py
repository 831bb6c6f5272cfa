"""The rule tester behind `exactcron check`: what a log would grant, and why not.

Pure: lines in, a report out. It reads no state and writes none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exactcron.addresses import Network, is_ignored, normalize_address, sort_key
from exactcron.rules import MAX_LINE_BYTES, LineParser, Login, Rule
from exactcron.timestamps import TimestampParser

# How many unmatched login-like lines the report quotes.
EXAMPLES = 5
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


@dataclass(frozen=True)
class UnmatchedLine:
    number: int
    text: str  # printable: control characters and non-ASCII escaped


@dataclass
class CheckReport:
    rules: tuple[str, ...]
    lines: int = 0
    logins: list[Login] = field(default_factory=list)
    matched: dict[str, int] = field(default_factory=dict)  # rule name -> lines
    looked_like_logins: int = 0  # login-like lines no rule matched
    examples: list[UnmatchedLine] = field(default_factory=list)
    too_long: int = 0
    granted: list[str] = field(default_factory=list)  # sorted
    too_old: list[str] = field(default_factory=list)  # logged before now - timeout
    ignored: list[str] = field(default_factory=list)  # in `ignore`


def check_log(
    lines: Iterable[bytes],
    rules: tuple[Rule, ...],
    timestamps: TimestampParser,
    timeout: timedelta,
    ignore: Iterable[Network],
) -> CheckReport:
    """Parse `lines` with `rules`; count what matched, and what looked like a login but did not."""
    networks = tuple(ignore)
    parser = LineParser(rules, timestamps)
    report = CheckReport(rules=tuple(rule.name for rule in rules))
    report.matched = {rule.name: 0 for rule in rules}
    latest: dict[str, datetime] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip(b"\n")
        login = parser.parse(line)
        if login is not None:
            report.logins.append(login)
            report.matched[login.server] += 1
            latest[login.address] = max(login.time, latest.get(login.address, login.time))
        elif len(line) <= MAX_LINE_BYTES and looks_like_login(line):
            report.looked_like_logins += 1
            if len(report.examples) < EXAMPLES:
                report.examples.append(UnmatchedLine(number, printable(line)))
    report.lines = parser.lines
    report.too_long = parser.too_long
    cutoff = timestamps.now - timeout
    for address in sorted(latest, key=sort_key):
        if is_ignored(address, networks):
            report.ignored.append(address)
        elif latest[address] <= cutoff:
            report.too_old.append(address)
        else:
            report.granted.append(address)
    return report


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
