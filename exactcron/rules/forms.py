"""The grammar of the lines the rules read: the syslog line head, and the
fields of the servers whose success lines a regular expression alone cannot
decide (Dovecot's login_log_format_elements, Cyrus's classic and logfmt lines).

Every byte of a log line is hostile: user names, reverse-DNS host names and
free text all reach the log. A relay grant therefore comes only from a line
whose syslog tag names the right program and whose whole message matches a
success phrase anchored at both ends, with the address taken from its field
at its place and validated (`normalize_address`: the C library's parser,
and `ipaddress` for the forms the two would read apart).

Where a server writes attacker text (a user name) before the address, the
text is matched greedily and the address is anchored to the end of the
line: whatever the text imitates, the last address is the server's own.
Where the address comes first (Cyrus, Perdition), it is anchored to the
start of the message instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exactcron.addresses import HOST_NAME
from exactcron.rules.grant import is_anonymous
from exactcron.timestamps import FRACTION, OFFSET, RFC3339_SECOND, TRADITIONAL_STAMP

if TYPE_CHECKING:
    # A site rule's engine, imported by rules/site.py: a configuration without one never loads it.
    from exactcron.rules.linear import LinearPattern

# After the stamp: an optional host (HOST_NAME: never a colon or brackets, so
# `pop3-login: Info: ...`, Dovecot's own log file, reads as a tag), then
# TAG[PID]: MESSAGE.
PROGRAM = re.compile(r"[A-Za-z0-9_.\-/]{1,64}")
_HEADER = rf"(?:(?P<host>{HOST_NAME}) )?(?P<program>{PROGRAM.pattern})(?:\[\d{{1,10}}\])?: "
HEADER = re.compile(_HEADER, re.ASCII)

# The characters of an IPv4 or IPv6 address (and IPv4-mapped IPv6). It
# excludes `]`, `,` and spaces, so a field can never swallow the text after
# it (Exact's Courier pattern captured `1.2.3.4], port=[52326`).
IP = r"[0-9A-Fa-f:.]{2,45}"
IP_BYTES = IP.encode()
# A reverse-DNS name as a server prints it. Names come from whoever runs the
# client's DNS; one holding a space or a bracket is refused outright.
DNS_NAME = r"[^\s\[\]()]{1,255}"


# What a success line names: the user (None: not logged), the client's
# address as logged, and the server's own address when the line holds it.
Fields = tuple[str | None, str, str | None]
# A form's second look at a matched message: its Fields, or None when the
# line, though shaped like a success, must grant nothing.
FieldReader = Callable[["re.Match[str]"], "Fields | None"]


@dataclass(frozen=True)
class Form:
    """One shape of success line: the tags it is logged under and its message.

    `program_pattern` covers tag families (`perdition.imaps`, Cyrus's
    `PREFIX/imap`); it must match the whole tag. `read`, when set, takes
    the user and address from the match where a regular expression alone
    cannot decide (fields in any order, anonymous logins).
    """

    programs: frozenset[str]
    pattern: re.Pattern[str]
    program_pattern: re.Pattern[str] | None = None
    read: FieldReader | None = None
    # The commonest success lines of a form with a reader, as one bytes
    # pattern with groups `ip`, `user` and optionally `lip` (the server's
    # own address, which must differ from `ip`). Stricter than pattern and
    # reader together: whatever it matches, they grant with the same user
    # and address. Lines it does not match go to the reader.
    fast: re.Pattern[bytes] | None = None
    # A site rule's pattern as the linear-time engine runs it (`pattern` is
    # then only read, never run: re backtracks, and the site's pattern is not ours).
    linear: LinearPattern | None = None

    def fields(self, message: str) -> tuple[bool, Fields | None]:
        """Whether the whole message matches; if so, its Fields, or
        None when the line, though shaped like a success, must grant nothing."""
        if self.linear is not None:
            matched = self.linear.fullmatch(message)
            if matched is None:
                return False, None
            address = matched.group("ip")
            # An `ip` in a part the match left out: shaped like a success, but no address.
            return True, None if address is None else (matched.groupdict().get("user"), address, None)
        found = self.pattern.fullmatch(message)
        if found is None:
            return False, None
        if self.read is not None:
            return True, self.read(found)
        return True, (found.groupdict().get("user"), found.group("ip"), None)

    def accepts(self, program: str) -> bool:
        if program in self.programs:
            return True
        return self.program_pattern is not None and self.program_pattern.fullmatch(program) is not None


# The lines of a two-line rule; rules/pairing.py pairs them.
class Phrase:
    """One shape of line of a two-line rule, over the whole message after `TAG[PID]: `."""

    __slots__ = ("linear", "literal", "pattern")

    def __init__(self, pattern: re.Pattern[str], linear: LinearPattern | None = None) -> None:
        # Imported here: only a source with a two-line rule builds phrases.
        from exactcron.rules.patterns import required_literals

        self.pattern = pattern
        # A site rule's pattern runs on the linear-time engine, never on re.
        self.linear = linear
        # The longest text every match holds: a message without it is not tried
        # (every line of a two-line server's process holds some needle).
        literals = required_literals(pattern)
        self.literal = literals[0] if literals else ""

    def fields(self, message: str) -> Mapping[str, str | None] | None:
        if self.literal not in message:
            return None
        if self.linear is not None:
            matched = self.linear.fullmatch(message)
            return None if matched is None else matched.groupdict()
        found = self.pattern.fullmatch(message)
        return None if found is None else found.groupdict()


@dataclass(frozen=True)
class TwoLine:
    """The lines of a two-line rule, logged under `programs` (or `program_pattern`)."""

    programs: frozenset[str]
    # A connection: its `ip` group is the client's address. One whose address
    # cannot be read still ends the key's earlier session.
    connects: tuple[Phrase, ...]
    # A successful login: its `user` group (optional) is the user.
    successes: tuple[Phrase, ...]
    # A line that ends the session: failures that close it, its last line.
    ends: tuple[Phrase, ...] = ()
    program_pattern: re.Pattern[str] | None = None

    def accepts(self, program: str) -> bool:
        if program in self.programs:
            return True
        return self.program_pattern is not None and self.program_pattern.fullmatch(program) is not None


# Dovecot: `imap-login: Login: ELEMENTS` (1.x to 2.3) or `Logged in:
# ELEMENTS` (2.4), where ELEMENTS is `login_log_format_elements` expanded:
# by default `user=<U>, method=M, rip=R, lip=L, mpid=P, TLS,
# session=<S>`, joined with `, `, each element dropped when its value is
# empty (`rip` over a UNIX socket, `mpid`, the TLS state). A site may
# reorder, drop or add elements. Only the user is client text: Dovecot
# writes it through str_sanitize (control characters become `?`), and a
# site that relaxes auth_username_chars lets it hold `>`, `,`, `=` and
# spaces. Every other element has a strict shape, each appears at most
# once, and the user ends at the first `>` that ends an element. So a
# name that imitates elements either breaks the shape or repeats one
# Dovecot writes itself (session, method, rip), and the line grants
# nothing; the address is Dovecot's own `rip` or nothing.
_DOVECOT_VALUES = {
    "method": re.compile(r"[A-Za-z0-9_\-]{1,64}", re.ASCII),
    "rip": re.compile(IP),
    "lip": re.compile(IP),
    "mpid": re.compile(r"\d{1,10}"),
    "PID": re.compile(r"\d{1,10}"),  # 1.x
    "rport": re.compile(r"\d{1,5}"),
    "lport": re.compile(r"\d{1,5}"),
    "session": re.compile(r"<[A-Za-z0-9+/]{1,64}={0,2}>", re.ASCII),
}
# Any other `key=value` a site adds: no quoting, so no client text.
_DOVECOT_OTHER = re.compile(r"[A-Za-z_]{1,32}=[A-Za-z0-9_.:@+/\-]{0,128}", re.ASCII)
# %{secured}: what it expands to on a connection that finished its TLS
# handshake, or a secured plain one (loopback, trusted networks).
_DOVECOT_SECURED = frozenset({"TLS", "secured", "TSL"})
# %{ssl_security}: `TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)`.
_DOVECOT_SSL_SECURITY = re.compile(
    r"(?:TLS|SSL)v[0-9.]{1,5} with cipher [A-Za-z0-9_\-]{1,64} \(\d{1,4}/\d{1,4} bits\)(?: [A-Za-z0-9_\-]{1,32})?",
    re.ASCII,
)
_DOVECOT_USER = re.compile(r"(?:^|, )user=<")
_DOVECOT_USER_END = re.compile(r">(?:, |$)")


def _dovecot_element_key(element: str) -> str | None:
    """The key an element of a Dovecot login line fills, or None when it has no known shape."""
    if element in _DOVECOT_SECURED:
        return "secured"
    key, equals, value = element.partition("=")
    if equals:
        shape = _DOVECOT_VALUES.get(key)
        if shape is not None:
            return key if shape.fullmatch(value) else None
        # A user name outside `user=<...>` (`user=%{user}`, `%{auth_user}`)
        # could hold anything: such a line is not read.
        if "user" in key.lower():
            return None
        return key if _DOVECOT_OTHER.fullmatch(element) else None
    if _DOVECOT_SSL_SECURITY.fullmatch(element):
        return "ssl_security"
    return None


def dovecot_fields(found: re.Match[str]) -> Fields | None:
    elements = found.group("elements")
    user = None
    others = [elements]
    opening = _DOVECOT_USER.search(elements)
    if opening is not None:
        closing = _DOVECOT_USER_END.search(elements, opening.end())
        if closing is None:
            return None
        user = elements[opening.end() : closing.start()] or None
        others = [part for part in (elements[: opening.start()], elements[closing.end() :]) if part]
    values: dict[str, str] = {}
    for element in (element for part in others for element in part.split(", ")):
        key = _dovecot_element_key(element)
        if key is None or key in values:
            return None
        values[key] = element.partition("=")[2]
    remote = values.get("rip")
    if remote is None or values.get("method", "").upper() == "ANONYMOUS":
        return None
    # The server's own address: line_refusal compares it with the client's.
    return user, remote, values.get("lip")


DOVECOT_LOGIN = r"(?:Info: )?(?:Login|Logged in): (?P<elements>.+)"
# The default login_log_format_elements, in Dovecot's order, over bytes: a
# user without `>`, a method that is not ANONYMOUS, then fields of the
# shapes the reader checks. line_refusal still compares lip with rip.
DOVECOT_FAST_LOGIN = (
    rb"(?:Info: )?(?:Login|Logged in): user=<(?P<user>[^>]+)>, method=(?!(?i:anonymous),)[A-Za-z0-9_\-]{1,64}, "
    rb"rip=(?P<ip>" + IP_BYTES + rb"), lip=(?P<lip>" + IP_BYTES + rb")(?:, mpid=[0-9]{1,10})?"
    rb"(?:, (?:TLS|secured|TSL))?, session=<[A-Za-z0-9+/]{1,64}={0,2}>"
)
DOVECOT1_NAME = "dovecot: "


# Cyrus, classic: `login: HOST [ADDR] USER MECH[+TLS] User logged in
# SESSIONID=<...>` (HOST is absent when reverse DNS fails; older versions
# end after MECH). The message must begin `login:`: Exact's unanchored
# `login:` also matched `badlogin:`, granting relay on failed logins. The
# address comes before any client text, so it is anchored to the start.
# The tag is the service name from cyrus.conf, optionally behind a
# configured `PREFIX/`. An anonymous login (`login: HOST [ADDR] anonymous
# PASSWORD`, or SASL ANONYMOUS) authenticates nobody and grants nothing.
def _is_cyrus_anonymous(user: str, mechanism: str | None) -> bool:
    return is_anonymous(user) or (mechanism or "").upper() == "ANONYMOUS"


def cyrus_classic_fields(found: re.Match[str]) -> Fields | None:
    user = found.group("user")
    # The user is read up to the first word that looks like a mechanism, so
    # only its first word is surely the user's.
    if _is_cyrus_anonymous(user.split(" ", 1)[0], found.group("mech")):
        return None
    return user, found.group("ip"), None


# Cyrus 3.13: logfmt, `event=login.good r.sessionid=... r.clienthost=HOST
# u.username=USER login.mech=PLAIN login.tls=1 ...` (doc/README.logfmt.md).
# A value is bare printable ASCII without `"`, `=` or `\`, or quoted with
# `\"`, `\\` and `\x{HH}` escapes; keys never repeat. r.clienthost is
# `[ADDR]` or `NAME [ADDR]` (then quoted). An anonymous login has
# `login.anonymous=1`, no u.username, and the client's "password" after it.
_LOGFMT_PAIR = re.compile(r'([!#-<>-\[\]-~]+)=("(?:[^"\\]|\\.)*"|[!#-<>-\[\]-~]+)(?: |$)', re.DOTALL)
_LOGFMT_ESCAPE = re.compile(r"\\(?:x\{([0-9A-Fa-f]{2})\}|(.))", re.DOTALL)
_LOGFMT_SPECIAL = {"n": "\n", "r": "\r", "t": "\t"}
_CYRUS_CLIENT = re.compile(rf"(?:{DNS_NAME} )?\[(?P<ip>{IP})\]|(?P<bare>{IP})")


def _logfmt_value(text: str) -> str:
    if not text.startswith('"'):
        return text
    return _LOGFMT_ESCAPE.sub(
        lambda escape: (
            chr(int(escape.group(1), 16))
            if escape.group(1)
            else _LOGFMT_SPECIAL.get(escape.group(2), escape.group(2))
        ),
        text[1:-1],
    )


def _logfmt_pairs(message: str) -> dict[str, str] | None:
    """The fields of one logfmt event, or None when it is not exactly that grammar or repeats a key."""
    pairs: dict[str, str] = {}
    position = 0
    while position < len(message):
        pair = _LOGFMT_PAIR.match(message, position)
        if pair is None or pair.group(1) in pairs:
            return None
        pairs[pair.group(1)] = _logfmt_value(pair.group(2))
        position = pair.end()
    if message.endswith(" "):
        return None
    return pairs


def cyrus_logfmt_fields(found: re.Match[str]) -> Fields | None:
    pairs = _logfmt_pairs(found.group(0))
    if pairs is None or pairs.get("event") != "login.good" or "login.anonymous" in pairs:
        return None
    user = pairs.get("u.username")
    client = _CYRUS_CLIENT.fullmatch(pairs.get("r.clienthost", ""))
    if not user or client is None or _is_cyrus_anonymous(user, pairs.get("login.mech")):
        return None
    return user, client.group("ip") or client.group("bare"), None


# The stamp, host and tag of a line in one bytes pattern, built from the
# pieces the stamp patterns (timestamps) and HEADER are built from. (?>...)
# commits to the first way each part matches, as separate matches of the
# stamp and of the header would; RFC 3339 stamps are taken apart so that the
# fraction of a second is not part of what is looked up per second. Its
# groups are read by position, in this order.
_STAMP = (
    rf"(?:(?P<clock>{RFC3339_SECOND})(?P<fraction>{FRACTION})?(?P<offset>{OFFSET})?"
    rf"|(?P<bsd>{TRADITIONAL_STAMP}))"
)
LINE_HEAD = re.compile(rf"(?>{_STAMP} )(?>{_HEADER})".encode("ascii"))


def microsecond_of(fraction: bytes) -> int:
    """The microseconds of a stamp's fraction of a second (`.5`, `.123456789`)."""
    # Offsets are whole minutes, so the fraction survives the shift to UTC as it is.
    return int(fraction[1:7]) if len(fraction) >= 7 else int(fraction[1:].ljust(6, b"0"))
