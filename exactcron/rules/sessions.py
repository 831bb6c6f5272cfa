"""The lines that open and end a mail session, for a source with `hold_while_connected`.

Dovecot names each connection with a session ID: the login line carries it
(`session=<ID>`, beside `mpid=`, the mail process it hands the client to),
and the mail process writes it in the prefix of each of its lines
(mail_log_prefix, by default `%s(%u)<%{pid}><%{session}>: ` in 2.3 and
`%{service}(%{user})<%{process:pid}><%{session}>: ` in 2.4). Its last line
says the session ended, in the forms Dovecot 2.x writes (imap/pop3
client_disconnect and client_destroy):

    imap(alice)<4242><kT3M0DLGQOMKAAAB>: Disconnected: Logged out in=91 out=512 ...
    pop3(alice)<4243><lU4N1EMHROMKAAAC>: Disconnected: Logged out top=0/0, retr=0/0, ...
    imap(alice)<4242><kT3M0DLGQOMKAAAB>: Connection closed (IDLE running for ...) in=10 out=20 ...
    imap(alice)<4242><kT3M0DLGQOMKAAAB>: Disconnected for inactivity in=10 out=20 ...

An end line is paired with its login by the session ID alone: IDs are
random, and the user the mail process logs may differ from the login name
(userdb may rename it), the PID from `mpid` (imap-hibernate). Reading an
end line can only shorten relay (sessions.py), so matching it broadly is
the safe side. Older forms without the ID (`imap(alice): Logged out`)
end nothing. A login without `mpid` (proxied elsewhere, whose end this
host never logs) opens no session.

Courier and UW-IMAP name no session: their login and its end are paired
by the process that wrote both (host, tag and PID: one process per
connection) and must name the same user and address:

    imapd[4242]: LOGIN, user=alice, ip=[::ffff:192.0.2.10], port=[52326], protocol=IMAP
    imapd[4242]: LOGOUT, user=alice, ip=[::ffff:192.0.2.10], headers=0, body=0, rcvd=37, sent=470, time=3
    imapd[4243]: Login user=alice host=client.example.net [192.0.2.10]
    imapd[4243]: Logout user=alice host=client.example.net [192.0.2.10]

(also Courier's DISCONNECTED and TIMEOUT, UW's Autologout, `Killed (...)`
and `..., while reading line`). A later login by the same process ends the
session before it: a PID names one process at a time. Lines without a PID
(Courier behind courierlogger logs its own) open no session.

Only a source with `hold_while_connected` builds a SessionParser; every
other source keeps LineParser's hot path unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from exactcron.addresses import normalize_address
from exactcron.model import Login
from exactcron.rules.forms import HEADER, LINE_HEAD
from exactcron.rules.parser import MAX_LINE_BYTES, LineParser
from exactcron.rules.rule import Rule

DOVECOT = "dovecot"
# The servers whose sessions are known by the process that logs them.
BY_PROCESS = frozenset({"courier", "uw-imap"})
# A session ID as Dovecot writes it (base64 of a GUID and a counter).
_SESSION_ID = rb"[A-Za-z0-9+/]{1,64}={0,2}"
# What the mail process's last line of a session starts with, after its prefix.
_END_PHRASES = (b"Disconnected", b"Logged out", b"Connection closed")
# The mail process's prefix and an end phrase. The user is client text and
# may imitate a prefix: the greedy match takes the last one, Dovecot's own.
_END = re.compile(
    rb"(?:Info: )?(?:imap|pop3|imap-hibernate)\(.{0,512}\)<\d{1,10}><(?P<session>" + _SESSION_ID + rb")>: "
    rb"(?:Info: )?(?:" + b"|".join(_END_PHRASES) + rb")",
    re.DOTALL,
)
# A login line's elements outside its user (forms.dovecot_fields skips the user the same way).
_USER_START = re.compile(rb"(?:^|, )user=<")
_USER_END = re.compile(rb">(?:, |$)")
_LOGIN_PHRASE = re.compile(rb"(?:Login|Logged in): ")
_SESSION_ELEMENT = re.compile(rb"session=<(" + _SESSION_ID + rb")>")
_MPID_ELEMENT = re.compile(rb"mpid=[0-9]{1,10}")
_SESSION_AMONG = re.compile(rb"(?:^|, )session=<(" + _SESSION_ID + rb")>(?:, |$)")
_MPID_AMONG = re.compile(rb"(?:^|, )mpid=[0-9]{1,10}(?:, |$)")
_IP = rb"[0-9A-Fa-f:.]{2,45}"
# The end of a session of a process (Courier, UW-IMAP); the user is client
# text, so the address is taken from its place at the end, and both must
# equal the login's.
_PROCESS_END_PHRASES = (
    b"LOGOUT, user=",
    b"DISCONNECTED, user=",
    b"TIMEOUT, user=",
    b"Logout user=",
    b"Autologout user=",
    b"Killed (",
    b", while reading line user=",
    b", while writing text user=",
)
_PROCESS_END = (
    re.compile(
        rb"(?:LOGOUT|DISCONNECTED|TIMEOUT), user=(?P<user>.{0,512}), ip=\[(?P<ip>" + _IP + rb")\](?:, .*)?",
        re.DOTALL,
    ),
    re.compile(
        rb"(?:Logout|Autologout|Killed \([^)]{0,80}\)|[A-Za-z ]{1,80}, while (?:reading line|writing text))"
        rb" user=(?P<user>\S{1,512}) host=(?:\S{1,255} )?\[(?P<ip>" + _IP + rb")\](?: .*)?",
        re.DOTALL,
    ),
)
_PID = re.compile(rb"\[(\d{1,10})\]: $")


class SessionOpened(NamedTuple):
    session: str
    login: Login


class SessionEnded(NamedTuple):
    session: str
    # The end line's time, its earlier reading when the stamp is ambiguous.
    time: datetime
    # A process's session (Courier, UW-IMAP): the user and address its end
    # line names, which must be the login's; None for a Dovecot session ID.
    who: tuple[str, str] | None = None


def end_phrases(rules: tuple[Rule, ...]) -> tuple[bytes, ...]:
    """What the end line of a session held while connected holds, for `rules`
    (SessionParser reads the lines that hold one besides the rules' needles)."""
    names = {rule.name for rule in rules}
    by_process = any(name in BY_PROCESS for name in names)
    return (_END_PHRASES if DOVECOT in names else ()) + (_PROCESS_END_PHRASES if by_process else ())


@dataclass
class SessionParser(LineParser):
    """LineParser that also tells `noted` the sessions its logins open and the
    end lines it reads, in log order, as it reads them (nothing is kept here)."""

    noted: Callable[[SessionOpened | SessionEnded], None] = lambda event: None

    def __post_init__(self) -> None:
        super().__post_init__()
        by_process = [rule for rule in self.rules if rule.name in BY_PROCESS]
        self._end_phrases = end_phrases(self.rules)
        self._process_forms = tuple(form for rule in by_process for form in rule.forms)

    def parse(self, line: bytes) -> Login | None:
        login = super().parse(line)
        if login is None and any(phrase in line for phrase in self._end_phrases):
            self._end_line(line)
        return login

    def logins(self, block: bytes, size: int | None = None) -> list[Login]:
        if size is None:
            size = len(block)
        found = super().logins(block, size)
        # A second pass, for the end lines: an end line of a session never comes
        # before its login, so the opens of the block are noted first.
        starts: set[int] = set()
        for phrase in self._end_phrases:
            hit = block.find(phrase, 0, size)
            while hit >= 0:
                starts.add(block.rfind(b"\n", 0, hit) + 1)
                end = block.find(b"\n", hit, size)
                if end < 0:
                    break
                hit = block.find(phrase, end + 1, size)
        for start in sorted(starts):
            end = block.find(b"\n", start, size)
            self._end_line(block[start : end if end >= 0 else size])
        return found

    def _candidate(self, line: bytes) -> Login | None:
        login = super()._candidate(line)
        if login is not None:
            if login.server == DOVECOT:
                session = _login_session(line)
            elif login.server in BY_PROCESS:
                session = _process_of(line)
            else:
                session = None
            if session is not None:
                self.noted(SessionOpened(session, login))
        return login

    def _end_line(self, line: bytes) -> None:
        if len(line) > MAX_LINE_BYTES:
            return
        try:
            ended = self._read_end(line.rstrip(b"\r\n"))
        except Exception:  # containment: an end line that breaks the reader ends nothing
            return
        if ended is not None:
            self.noted(ended)

    def _read_end(self, line: bytes) -> SessionEnded | None:
        head = LINE_HEAD.match(line)
        if head is not None and head.group("program") != b"dovecot":
            return self._read_process_end(line, head)
        if head is not None:
            clock, _, offset, bsd, host, _ = head.groups()
            stamped = self.timestamps.second_of(clock or bsd, offset)
            if stamped is None:
                return None
            second, ambiguity = stamped
            time = second - ambiguity
            message = line[head.end() :]
        else:
            # Dovecot's own log file: `STAMP imap(alice)<PID><ID>: Info: Disconnected: ...`.
            text = line.decode("utf-8", "replace")
            parsed = self.timestamps.parse_prefix(text)
            if parsed is None:
                return None
            time, position = parsed
            time -= self.timestamps.ambiguity
            rest = text[position:]
            header = HEADER.match(rest)
            host = None
            if header is not None and header.group("program") == "dovecot":
                rest = rest[header.end() :]
                host = header.group("host").encode() if header.group("host") else None
            message = rest.encode("utf-8", "surrogateescape")
        if (
            host is not None
            and self.hosts is not None
            and host.decode("utf-8", "replace").lower() not in self.hosts
        ):
            return None
        found = _END.match(message)
        if found is None:
            return None
        return SessionEnded(found.group("session").decode("ascii"), time)

    def _read_process_end(self, line: bytes, head: re.Match[bytes]) -> SessionEnded | None:
        """The end of a Courier or UW-IMAP process's session, or None."""
        program = head.group("program").decode("ascii")
        if not any(form.accepts(program) for form in self._process_forms):
            return None
        session = _process_of(line, head)
        if session is None:
            return None
        message = line[head.end() :]
        for pattern in _PROCESS_END:
            found = pattern.fullmatch(message)
            if found is not None:
                break
        else:
            return None
        address = normalize_address(found.group("ip").decode("ascii"))
        clock, _, offset, bsd, _, _ = head.groups()
        stamped = self.timestamps.second_of(clock or bsd, offset)
        if address is None or stamped is None:
            return None
        second, ambiguity = stamped
        user = found.group("user").decode("utf-8", "replace")
        return SessionEnded(session, second - ambiguity, (user, address))


def _process_of(line: bytes, head: re.Match[bytes] | None = None) -> str | None:
    """The process that wrote a line, as a session key (host, tag and PID), or None without a PID."""
    head = head or LINE_HEAD.match(line)
    if head is None:
        return None
    pid = _PID.search(line, head.start("program"), head.end())
    if pid is None:
        return None
    host = (head.group("host") or b"").decode("utf-8", "replace").lower()
    return f"{host}/{head.group('program').decode('ascii')}[{pid.group(1).decode('ascii')}]"


def _login_session(line: bytes) -> str | None:
    """The session ID of a Dovecot login line that names its mail process (`mpid=`), or None.

    The elements are read outside the user, as the login was: a user name
    that imitates `session=<...>` never chooses the ID.
    """
    phrase = _LOGIN_PHRASE.search(line)
    if phrase is None:
        return None
    elements = line[phrase.end() :]
    if elements.startswith(b"user=<"):
        # The default order, the user first: once it is over, every element is Dovecot's own.
        close = _USER_END.search(elements, 6)
        if close is None or b">" in elements[6 : close.start()]:
            return None
        own = elements[close.end() :]
        found = _SESSION_AMONG.search(own)
        return found.group(1).decode("ascii") if found is not None and _MPID_AMONG.search(own) else None
    others = [elements]
    opening = _USER_START.search(elements)
    if opening is not None:
        closing = _USER_END.search(elements, opening.end())
        if closing is None:
            return None
        others = [elements[: opening.start()], elements[closing.end() :]]
    session = None
    has_mpid = False
    for element in (element for part in others for element in part.split(b", ")):
        found = _SESSION_ELEMENT.fullmatch(element)
        if found is not None:
            if session is not None:
                return None
            session = found.group(1).decode("ascii")
        elif _MPID_ELEMENT.fullmatch(element):
            has_mpid = True
    return session if has_mpid else None
