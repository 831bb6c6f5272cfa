"""LineParser: the raw lines of one source to the logins they state.

The hot path reads only the lines around a needle; each is read by the
forms of its source's rules (forms.py, builtin.py, site.py).
"""

from __future__ import annotations

import re

# The C module under `socket`: importing `socket` itself (it builds its
# enums) would cost every cron run about 2 ms.
from _socket import AF_INET, inet_ntop, inet_pton
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from exactcron.addresses import normalize_address
from exactcron.model import Login
from exactcron.rules.forms import DOVECOT1_NAME, HEADER, LINE_HEAD, Form, microsecond_of
from exactcron.rules.grant import line_refusal
from exactcron.rules.rule import Rule
from exactcron.timestamps import TimestampParser, looks_stamped

if TYPE_CHECKING:
    from exactcron.rules.pairing import Pairings

# Longer lines are skipped unparsed: no POP/IMAP success line comes close,
# and a regex over megabytes of attacker text is a denial of service.
MAX_LINE_BYTES = 8192


# Login(...) without its Python-level __new__: the hot path builds one per login line.
_new_login = tuple.__new__


# Distinct tags (and host fields) whose verdicts are remembered (both are attacker-chosen).
_PROGRAM_CACHE_SIZE = 1024


class _CompiledForm:
    """A form as the hot path uses it: its pattern over raw bytes where that
    means the same (else over the decoded message), and its tags by bytes."""

    __slots__ = ("_accepted", "fast", "fast_has_lip", "form", "has_user", "raw")

    def __init__(self, form: Form) -> None:
        # Imported here: only a run that reads lines needs it.
        from exactcron.rules.patterns import bytes_pattern

        self.form = form
        # A form with its own reader, or a site rule's (linear engine), takes the decoded text.
        self.raw = bytes_pattern(form.pattern) if form.read is None and form.linear is None else None
        self.has_user = "user" in form.pattern.groupindex
        self.fast = form.fast
        self.fast_has_lip = form.fast is not None and "lip" in form.fast.groupindex
        self._accepted: dict[bytes, bool] = {}

    def fast_fields(self, message: bytes) -> tuple[str, str] | None:
        """(user, normalized address) of a message the fast pattern grants for, or None:
        then the form's pattern and reader decide. line_refusal judges its fields,
        as it judges the reader's."""
        if self.fast is None:
            return None
        found = self.fast.fullmatch(message)
        if found is None:
            return None
        text = found.group("ip").decode("ascii")
        if ":" in text:
            address = normalize_address(text)
            if address is None:
                return None
        else:
            # IPv4 unchanged by inet_ntop(inet_pton()) is already normal: a log
            # of many clients would only churn normalize_address's cache.
            try:
                address = inet_ntop(AF_INET, inet_pton(AF_INET, text))
            except OSError:
                return None
        local = found.group("lip").decode("ascii") if self.fast_has_lip else None
        user = found.group("user").decode("utf-8", "replace")
        if line_refusal(user, address, local) is not None:
            return None
        return user, address

    def accepts(self, program: bytes) -> bool:
        accepted = self._accepted.get(program)
        if accepted is None:
            if len(self._accepted) >= _PROGRAM_CACHE_SIZE:
                self._accepted.clear()
            accepted = self._accepted[program] = self.form.accepts(program.decode("ascii"))
        return accepted


def _needle_search(needles: list[bytes]) -> Callable[[bytes, int, int], int]:
    """Where the first of `needles` is in block[start:size], or -1."""
    if len(needles) == 1:
        needle = needles[0]
        return lambda block, start, size: block.find(needle, start, size)
    search = re.compile(b"|".join(re.escape(needle) for needle in needles)).search

    def first(block: bytes, start: int, size: int) -> int:
        found = search(block, start, size)
        return -1 if found is None else found.start()

    return first


def rule_needles(rules: tuple[Rule, ...]) -> frozenset[bytes]:
    """What a line must hold for `rules` to read it (b"": every line); the
    two-line rules' connect and end lines' needles are among them."""
    return frozenset(needle for rule in rules for needle in rule.needles)


@dataclass
class LineParser:
    """Parses raw log lines of one source with its rules."""

    rules: tuple[Rule, ...]
    timestamps: TimestampParser
    # Lowercased host names whose lines count; None: any host. A line
    # without a host field (a server's own log file) always counts.
    hosts: frozenset[str] | None = None
    too_long: int = 0
    lines: int = 0
    other_hosts: int = 0  # login lines refused for their host
    # Lines that could hold a login but cannot be read: a stamp that names no
    # time (Feb 30, year 1, an offset of a day), or a line that broke the parser.
    unreadable: int = 0
    # What the first line that broke the parser raised, for the warning.
    first_error: str | None = None
    # Counting the lines of a block takes as long as searching it for a
    # needle: done only when someone reads the count.
    count_lines: bool = True
    # The open sessions of the source's two-line rules, as its checkpoint
    # document holds them (rules/pairing.py); unused without such a rule.
    pairing_state: object = None

    def __post_init__(self) -> None:
        needles = rule_needles(self.rules)
        # A site rule without a literal (its needle is empty): every line of
        # the source must then be split and tried.
        self._every_line = b"" in needles
        self._needles = tuple(sorted(needles))
        # Needles that begin alike are searched for in one pass: `re`
        # factors out their common prefix (`Log` of `Login: ` and `Logged
        # in: `) and scans for it in C, where one bytes.find per needle would
        # read every block once per needle (three times as long for
        # Dovecot's two). Needles that begin otherwise (a site rule's beside
        # a built-in rule's) are searched apart: one alternation of them all
        # has no prefix, and re then tries it at every byte (9 x as long).
        groups: dict[int, list[bytes]] = {}
        for needle in self._needles:
            if needle:
                groups.setdefault(needle[0], []).append(needle)
        self._searches = tuple(_needle_search(group) for group in groups.values())
        # The common case of several needles (Dovecot's two): one search, read inline.
        self._any_needle = (
            re.compile(b"|".join(re.escape(needle) for needle in self._needles)) if len(groups) == 1 else None
        )
        self._forms = tuple(
            (rule.name, tuple(_CompiledForm(form) for form in rule.forms)) for rule in self.rules
        )
        self._host_verdicts: dict[bytes, bool] = {}
        two_line = [(rule.name, rule.two_line) for rule in self.rules if rule.two_line is not None]
        self.pairings: Pairings | None = None
        if two_line:
            # Imported here: a source without a two-line rule never loads it.
            from exactcron.rules.pairing import Pairings

            self.pairings = Pairings(two_line, self.pairing_state)

    def parse(self, line: bytes) -> Login | None:
        """The login of one line (without its LF; a journal entry may hold LFs), or None."""
        self.lines += 1
        if not self._every_line and not any(needle in line for needle in self._needles):
            return None
        return self._candidate(line)

    def logins(self, block: bytes, size: int | None = None) -> list[Login]:
        """The logins of the first `size` bytes of a block (all of it when None), whole
        lines each ending in LF, in log order.

        The hot path: most lines hold no needle and are never split, decoded
        or even looked at from Python; only the lines around a needle are.
        """
        if size is None:
            size = len(block)
        if self.count_lines:
            self.lines += block.count(b"\n", 0, size)
            if size > 0 and block[size - 1] != 0x0A:
                self.lines += 1  # a last line without its LF (not from LogReader)
        candidate = self._candidate
        if self._every_line:
            every = (candidate(line) for line in block[:size].split(b"\n") if line)
            return [login for login in every if login is not None]
        if not self._needles:
            return []
        logins: list[Login] = []
        # Each line holding a needle is read once, from its start to its end;
        # one needle per line is enough, so the search goes on after its end.
        if len(self._needles) == 1:
            needle = self._needles[0]
            hit = block.find(needle, 0, size)
            while hit >= 0:
                end = block.find(b"\n", hit, size)
                found = candidate(block[block.rfind(b"\n", 0, hit) + 1 : end if end >= 0 else size])
                if found is not None:
                    logins.append(found)
                if end < 0:
                    break
                hit = block.find(needle, end + 1, size)
        elif self._any_needle is not None:
            # The leftmost needle of any kind, line after line, in log order.
            search = self._any_needle.search
            found_needle = search(block, 0, size)
            while found_needle is not None:
                hit = found_needle.start()
                end = block.find(b"\n", hit, size)
                found = candidate(block[block.rfind(b"\n", 0, hit) + 1 : end if end >= 0 else size])
                if found is not None:
                    logins.append(found)
                if end < 0:
                    break
                found_needle = search(block, end + 1, size)
        else:
            # The same, where needles begin otherwise: each
            # search's next hit is kept, and searched for again only once the line
            # that held it is read (each search reads the block once).
            searches = self._searches
            hits = [search(block, 0, size) for search in searches]
            while True:
                hit = min((each for each in hits if each >= 0), default=-1)
                if hit < 0:
                    break
                end = block.find(b"\n", hit, size)
                found = candidate(block[block.rfind(b"\n", 0, hit) + 1 : end if end >= 0 else size])
                if found is not None:
                    logins.append(found)
                if end < 0:
                    break
                for index, each in enumerate(hits):
                    if 0 <= each <= end:
                        hits[index] = searches[index](block, end + 1, size)
        return logins

    def _candidate(self, line: bytes) -> Login | None:
        """The login of a line that holds a needle. Whatever its bytes, a line only
        grants or not: one that breaks the parser is counted, never stops the run."""
        try:
            return self._read_candidate(line)
        except Exception as error:  # containment: no log line ends a run
            self.unreadable += 1
            if self.first_error is None:
                # repr: the message may quote the line's own bytes.
                self.first_error = f"{type(error).__name__}: {str(error)[:120]!r}"
            return None

    def _read_candidate(self, line: bytes) -> Login | None:
        if len(line) > MAX_LINE_BYTES:
            self.too_long += 1
            return None
        if line.endswith((b"\r", b"\n")):
            line = line.rstrip(b"\r\n")
        head = LINE_HEAD.match(line)
        if head is None:
            # Not stamp, host and tag: a rarer shape (Dovecot 1.x's own log)
            # is read from the decoded text.
            return self._parse_text(line.decode("utf-8", "replace"))
        clock, fraction, offset, bsd, host, program = head.groups()
        stamped = self.timestamps.second_of(clock or bsd, offset)
        if stamped is None:
            self.unreadable += 1
            if self.pairings is not None and self.pairings.accepts(program):
                self.pairings.forget(host, program, line, head)
            return None
        second, ambiguity = stamped
        message = line[head.end() :]
        text: str | None = None
        # As Rule.login: per rule, the first form that takes the tag and
        # matches decides; a rule that finds no login leaves the line to the next.
        for name, forms in self._forms:
            for compiled in forms:
                if not compiled.accepts(program):
                    continue
                user: str | None
                address: str | None
                local: str | None
                granted = compiled.fast_fields(message) if compiled.fast is not None else None
                if granted is not None:
                    user, address = granted
                else:
                    form = compiled.form
                    if compiled.raw is not None:
                        found_raw = compiled.raw.fullmatch(message)
                        if found_raw is None:
                            continue
                        raw_user = found_raw.group("user") if compiled.has_user else None
                        user = None if raw_user is None else raw_user.decode("utf-8", "replace")
                        address = normalize_address(found_raw.group("ip").decode("ascii", "replace"))
                        local = None
                    else:
                        if text is None:
                            text = message.decode("utf-8", "replace")
                        matched, fields = form.fields(text)
                        if not matched:
                            continue
                        if fields is None:
                            break
                        user, address_text, local = fields
                        address = normalize_address(address_text)
                    # Every path ends in line_refusal (the fast one in fast_fields).
                    if line_refusal(user, address, local) is not None:
                        break
                if host is not None and not self._host_field_counts(host):
                    return None
                microsecond = microsecond_of(fraction) if fraction else 0
                earliest = None
                if ambiguity:
                    time = second.replace(microsecond=microsecond) if microsecond else second
                    earliest = time - ambiguity
                return _new_login(Login, (address, second, microsecond, user, name, earliest))
        if self.pairings is not None and self.pairings.accepts(program):
            # Another host's lines open no session here: none can grant, and a
            # flood of them would push this host's sessions out.
            hosts = self.hosts
            if (
                host is not None
                and hosts is not None
                and host.decode("utf-8", "replace").lower() not in hosts
            ):
                return None
            # A line of a two-line rule: its session opened or ended, or its success paired.
            return self.pairings.read(host, program, line, head, second, ambiguity, fraction)
        return None

    def _parse_text(self, text: str) -> Login | None:
        if text.endswith(("\r", "\n")):
            text = text.rstrip("\r\n")
        stamped = self.timestamps.parse_prefix(text)
        if stamped is None:
            if looks_stamped(text):
                self.unreadable += 1
                return None
            return self._dovecot1_own_log(text)
        time, position = stamped
        header = HEADER.match(text, position)
        if header is None:
            return None
        return self._login(time, header.group("program"), text[header.end() :], header.group("host"))

    def _dovecot1_own_log(self, text: str) -> Login | None:
        """Dovecot 1.x's own log file puts its name before the stamp.

        `dovecot: 2008-10-02 23:34:07 Info: pop3-login: Login: ...`; no
        syslog line starts that way, as syslog writes the stamp first.
        """
        if not text.startswith(DOVECOT1_NAME):
            return None
        stamped = self.timestamps.parse_prefix(text[len(DOVECOT1_NAME) :])
        if stamped is None:
            if looks_stamped(text[len(DOVECOT1_NAME) :]):
                self.unreadable += 1
            return None
        time, position = stamped
        # Its own file: no host field, which always counts.
        return self._login(time, "dovecot", text[len(DOVECOT1_NAME) + position :], None)

    def _login(self, time: datetime, program: str, message: str, host: str | None) -> Login | None:
        for rule in self.rules:
            login = rule.login(time, program, message)
            if login is not None:
                if not self._host_counts(host):
                    return None
                if self.timestamps.ambiguity:
                    return login._replace(earliest=time - self.timestamps.ambiguity)
                return login
        return None

    def _host_field_counts(self, host: bytes) -> bool:
        """`_host_counts` of a host field as logged, each verdict remembered."""
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            if len(self._host_verdicts) >= _PROGRAM_CACHE_SIZE:
                self._host_verdicts.clear()  # host fields are attacker-chosen
            verdict = self._host_verdicts[host] = self.hosts is None or (
                host.decode("utf-8", "replace").lower() in self.hosts
            )
        if not verdict:
            self.other_hosts += 1
        return verdict

    def _host_counts(self, host: str | None) -> bool:
        if host is None or self.hosts is None or host.lower() in self.hosts:
            return True
        self.other_hosts += 1
        return False
