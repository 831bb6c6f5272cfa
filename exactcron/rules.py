"""Login rules: a mail log line to a successful POP/IMAP login, or nothing.

Every byte of a log line is hostile: user names, reverse-DNS host names and
free text all reach the log. A relay grant therefore comes only from a line
whose syslog tag names the right program and whose whole message matches a
success phrase anchored at both ends, with the address taken from its field
at its place and validated by `ipaddress`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from exactcron.addresses import normalize_address
from exactcron.timestamps import TimestampParser

# Longer lines are skipped unparsed: no POP/IMAP success line comes close,
# and a regex over megabytes of attacker text is a denial of service.
MAX_LINE_BYTES = 8192

# After the stamp: an optional host, then TAG[PID]: MESSAGE. A host never
# holds a colon or brackets, so `pop3-login: Info: ...` (Dovecot's own log
# file, no host) is read as a tag, not as a host.
_HEADER = re.compile(
    r"(?:(?P<host>[^\s:\[\]]{1,255}) )?(?P<program>[A-Za-z0-9_.\-/]{1,64})(?:\[\d{1,10}\])?: "
)

_IP = r"[0-9A-Fa-f:.]{2,45}"


@dataclass(frozen=True, slots=True)
class Login:
    time: datetime
    server: str
    user: str | None
    address: str


@dataclass(frozen=True, slots=True)
class Record:
    """A log line split into its syslog parts."""

    time: datetime
    host: str | None
    program: str
    message: str


@dataclass(frozen=True)
class Form:
    """One shape of success line: the tags it is logged under and its message."""

    programs: frozenset[str]
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Rule:
    name: str
    # A literal that every success line of this rule contains; lines without
    # any rule's needle are never decoded or split.
    needle: bytes
    forms: tuple[Form, ...]

    def match(self, record: Record) -> Login | None:
        for form in self.forms:
            if record.program not in form.programs:
                continue
            found = form.pattern.fullmatch(record.message)
            if found is None:
                continue
            address = normalize_address(found.group("ip"))
            if address is None:
                return None
            groups = found.groupdict()
            return Login(record.time, self.name, groups.get("user"), address)
        return None


def _form(programs: Iterable[str], pattern: str) -> Form:
    return Form(frozenset(programs), re.compile(pattern, re.ASCII | re.DOTALL))


# Dovecot: `login_log_format_elements` puts the user first, then method,
# rip and lip, then fields Dovecot writes itself (mpid, TLS, session).
# The user name is taken greedily, so a name that contains a fake
# `>, method=..., rip=...` can only end up inside the user, never in the
# address: the last such sequence is Dovecot's own.
_DOVECOT_LOGIN = (
    r"Login: user=<(?P<user>.*)>, (?:PID=\d+, )?method=[A-Za-z0-9_\-]+, "
    rf"rip=(?P<ip>{_IP}), lip={_IP}(?:, .*)?"
)
DOVECOT = Rule(
    name="dovecot",
    needle=b"Login: user=<",
    forms=(
        # Through syslog: `dovecot: imap-login: Login: ...` (2.3 may add `Info: `).
        _form({"dovecot"}, rf"(?:imap|pop3)-login: (?:Info: )?{_DOVECOT_LOGIN}"),
        # Dovecot's own log_path file, and 1.x syslog tags: `pop3-login: Info: Login: ...`.
        _form({"imap-login", "pop3-login"}, rf"(?:Info: )?{_DOVECOT_LOGIN}"),
    ),
)

BUILTIN_RULES: dict[str, Rule] = {rule.name: rule for rule in (DOVECOT,)}


def site_rule(name: str, program: str, match: str) -> Rule:
    """A rule from the configuration. Raises ValueError with what is wrong."""
    try:
        pattern = re.compile(match, re.DOTALL)
    except re.error as error:
        raise ValueError(f"match is not a valid regular expression: {error}") from None
    if "ip" not in pattern.groupindex:
        raise ValueError("match has no named group 'ip' (write (?P<ip>...))")
    unknown = set(pattern.groupindex) - {"ip", "user"}
    if unknown:
        raise ValueError(f"match has groups other than 'ip' and 'user': {', '.join(sorted(unknown))}")
    if not program or _HEADER.fullmatch(f"{program}: ") is None:
        raise ValueError(f"program {program!r} is not a syslog tag")
    # A site rule has no known literal, so its needle is the empty string:
    # every line of its source is split and tried.
    return Rule(name=name, needle=b"", forms=(Form(frozenset({program}), pattern),))


@dataclass
class LineParser:
    """Parses raw log lines of one source with its rules."""

    rules: tuple[Rule, ...]
    timestamps: TimestampParser
    too_long: int = 0
    lines: int = 0

    def __post_init__(self) -> None:
        self._needles = tuple({rule.needle for rule in self.rules})
        self._programs = frozenset(
            program for rule in self.rules for form in rule.forms for program in form.programs
        )

    def parse(self, line: bytes) -> Login | None:
        self.lines += 1
        if not any(needle in line for needle in self._needles):
            return None
        if len(line) > MAX_LINE_BYTES:
            self.too_long += 1
            return None
        record = self.record(line.decode("utf-8", "replace").rstrip("\r\n"))
        if record is None or record.program not in self._programs:
            return None
        for rule in self.rules:
            login = rule.match(record)
            if login is not None:
                return login
        return None

    def record(self, text: str) -> Record | None:
        stamped = self.timestamps.parse_prefix(text)
        if stamped is None:
            return None
        time, position = stamped
        header = _HEADER.match(text, position)
        if header is None:
            return None
        return Record(time, header.group("host"), header.group("program"), text[header.end() :])


def resolve_rules(names: Iterable[str], site_rules: Mapping[str, Rule]) -> tuple[Rule, ...]:
    """Rules by name; site rules shadow nothing (the config loader refuses clashes)."""
    known = {**BUILTIN_RULES, **site_rules}
    return tuple(known[name] for name in names)
