"""Login rules: a mail log line to a successful POP/IMAP login, or nothing.

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

Over 400 lines: the line model's hot path, the ten built-in servers' forms
and the general reader still share this file; to be split into
rules/forms.py, rules/builtin.py and the parser (issue 19).
"""

from __future__ import annotations

import re

# The C module under `socket`: importing `socket` itself (it builds its
# enums) would cost every cron run about 2 ms.
from _socket import AF_INET, inet_ntop, inet_pton
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from exactcron.addresses import normalize_address
from exactcron.model import Login
from exactcron.rules.linear import LinearPattern, RefusedPattern
from exactcron.rules.patterns import MIN_NEEDLE_CHARS, bytes_pattern, required_literals
from exactcron.timestamps import TimestampParser, looks_stamped

# Longer lines are skipped unparsed: no POP/IMAP success line comes close,
# and a regex over megabytes of attacker text is a denial of service.
MAX_LINE_BYTES = 8192

# After the stamp: an optional host, then TAG[PID]: MESSAGE. A host never
# holds a colon or brackets, so `pop3-login: Info: ...` (Dovecot's own log
# file, no host) is read as a tag, not as a host.
_PROGRAM = re.compile(r"[A-Za-z0-9_.\-/]{1,64}")
_HEADER = re.compile(
    rf"(?:(?P<host>[^\s:\[\]]{{1,255}}) )?(?P<program>{_PROGRAM.pattern})(?:\[\d{{1,10}}\])?: ",
    re.ASCII,
)

# The characters of an IPv4 or IPv6 address (and IPv4-mapped IPv6). It
# excludes `]`, `,` and spaces, so a field can never swallow the text after
# it (Exact's Courier pattern captured `1.2.3.4], port=[52326`).
_IP = r"[0-9A-Fa-f:.]{2,45}"
_IP_BYTES = _IP.encode()
# A reverse-DNS name as a server prints it. Names come from whoever runs the
# client's DNS; one holding a space or a bracket is refused outright.
_DNS_NAME = r"[^\s\[\]()]{1,255}"


# Login(...) without its Python-level __new__: the hot path builds one per login line.
_new_login = tuple.__new__


# A form's second look at a matched message: (user, address text), or None
# when the line, though shaped like a success, must grant nothing.
FieldReader = Callable[["re.Match[str]"], "tuple[str | None, str] | None"]


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

    def fields(self, message: str) -> tuple[bool, tuple[str | None, str] | None]:
        """Whether the whole message matches; if so, its (user, address text), or
        None when the line, though shaped like a success, must grant nothing."""
        if self.linear is not None:
            matched = self.linear.fullmatch(message)
            if matched is None:
                return False, None
            address = matched.group("ip")
            # An `ip` in a part the match left out: shaped like a success, but no address.
            return True, None if address is None else (matched.groupdict().get("user"), address)
        found = self.pattern.fullmatch(message)
        if found is None:
            return False, None
        if self.read is not None:
            return True, self.read(found)
        return True, (found.groupdict().get("user"), found.group("ip"))

    def accepts(self, program: str) -> bool:
        if program in self.programs:
            return True
        return self.program_pattern is not None and self.program_pattern.fullmatch(program) is not None


@dataclass(frozen=True)
class Rule:
    name: str
    # Literals of which every success line of this rule contains at least
    # one; lines without any rule's needle are never decoded or split.
    needles: tuple[bytes, ...]
    forms: tuple[Form, ...]

    def login(self, time: datetime, program: str, message: str) -> Login | None:
        """The login a line's message states, logged under `program` at `time`, or None."""
        for form in self.forms:
            if not form.accepts(program):
                continue
            matched, fields = form.fields(message)
            if not matched:
                continue
            if fields is None:
                return None
            user, text = fields
            address = normalize_address(text)
            if address is None or (user is not None and is_anonymous(user)):
                return None
            return Login.at(time, self.name, user, address)
        return None


def is_anonymous(user: str) -> bool:
    """True for the user of an anonymous login, which authenticates nobody.

    `anonymous` in any case, with or without a domain (Cyrus's
    is_userid_anonymous; Dovecot's default auth_anonymous_username).
    """
    # The text before the first `@` or `%`.
    return user.partition("@")[0].partition("%")[0].lower() == "anonymous"


def _form(
    programs: Iterable[str],
    pattern: str,
    program_pattern: str | None = None,
    read: FieldReader | None = None,
    fast: bytes | None = None,
) -> Form:
    return Form(
        frozenset(programs),
        re.compile(pattern, re.ASCII | re.DOTALL),
        re.compile(program_pattern, re.ASCII) if program_pattern else None,
        read,
        re.compile(fast, re.DOTALL) if fast is not None else None,
    )


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
    "rip": re.compile(_IP),
    "lip": re.compile(_IP),
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


def _dovecot_fields(found: re.Match[str]) -> tuple[str | None, str] | None:
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
    # A login from the server's own address (webmail, a local proxy) is not
    # a client of this host; an lip that is no address, no line Dovecot wrote.
    local = values.get("lip")
    if local is not None and normalize_address(local) in (None, normalize_address(remote)):
        return None
    return user, remote


_DOVECOT_LOGIN = r"(?:Info: )?(?:Login|Logged in): (?P<elements>.+)"
# The default login_log_format_elements, in Dovecot's order, over bytes: a
# user without `>`, a method that is not ANONYMOUS, then fields of the
# shapes the reader checks. The reader still compares lip with rip.
_DOVECOT_FAST_LOGIN = (
    rb"(?:Info: )?(?:Login|Logged in): user=<(?P<user>[^>]+)>, method=(?!(?i:anonymous),)[A-Za-z0-9_\-]{1,64}, "
    rb"rip=(?P<ip>" + _IP_BYTES + rb"), lip=(?P<lip>" + _IP_BYTES + rb")(?:, mpid=[0-9]{1,10})?"
    rb"(?:, (?:TLS|secured|TSL))?, session=<[A-Za-z0-9+/]{1,64}={0,2}>"
)
_DOVECOT1_NAME = "dovecot: "


def _dovecot() -> Rule:
    return Rule(
        name="dovecot",
        needles=(b"Login: ", b"Logged in: "),
        forms=(
            # Through syslog and the journal: `dovecot: imap-login: Login: ...`
            # (with or without `Info: `); 2.4: `... Logged in: ...`; 1.x's own
            # log file: `dovecot: STAMP Info: pop3-login: Login: ...`.
            _form(
                {"dovecot"},
                rf"(?:Info: )?(?:imap|pop3)-login: {_DOVECOT_LOGIN}",
                read=_dovecot_fields,
                fast=rb"(?:Info: )?(?:imap|pop3)-login: " + _DOVECOT_FAST_LOGIN,
            ),
            # Dovecot's own log_path/info_log_path file, and 1.x syslog tags:
            # `pop3-login: Info: Login: ...`, `imap-login: Info: Logged in: ...`.
            _form(
                {"imap-login", "pop3-login"}, _DOVECOT_LOGIN, read=_dovecot_fields, fast=_DOVECOT_FAST_LOGIN
            ),
        ),
    )


# Courier: `LOGIN, user=U, ip=[ADDR]`, then fields Courier writes itself
# (`port=[P]`, `protocol=IMAP`, `stls=1`, `starttls=1`). Failures begin
# `LOGIN FAILED,`. The trailing fields cannot hold `[`, so the address is
# the last bracketed `ip=` of the line, whatever the user name imitates.
def _courier() -> Rule:
    return Rule(
        name="courier",
        needles=(b"LOGIN, user=",),
        forms=(
            _form(
                (),
                rf"LOGIN, user=(?P<user>.*), ip=\[(?P<ip>{_IP})\]"
                r"(?:, port=\[\d{1,5}\])?(?:, [a-z]{1,16}=[A-Za-z0-9_.\-]{0,64})*",
                r"(?:courier-?)?(?:pop3|imap)(?:d|d-ssl|login)",
            ),
        ),
    )


# Cyrus, classic: `login: HOST [ADDR] USER MECH[+TLS] User logged in
# SESSIONID=<...>` (HOST is absent when reverse DNS fails; older versions
# end after MECH). The message must begin `login:`: Exact's unanchored
# `login:` also matched `badlogin:`, granting relay on failed logins. The
# address comes before any client text, so it is anchored to the start.
# The tag is the service name from cyrus.conf, optionally behind a
# configured `PREFIX/`. An anonymous login (`login: HOST [ADDR] anonymous
# PASSWORD`, or SASL ANONYMOUS) authenticates nobody and grants nothing.
_CYRUS_SERVICE = r"(?:[A-Za-z0-9_.\-]{1,64}/)?(?:imap|pop3|pop|proxy)[A-Za-z0-9_\-]{0,32}"


def _is_cyrus_anonymous(user: str, mechanism: str | None) -> bool:
    return is_anonymous(user) or (mechanism or "").upper() == "ANONYMOUS"


def _cyrus_classic_fields(found: re.Match[str]) -> tuple[str | None, str] | None:
    user = found.group("user")
    # The user is read up to the first word that looks like a mechanism, so
    # only its first word is surely the user's.
    if _is_cyrus_anonymous(user.split(" ", 1)[0], found.group("mech")):
        return None
    return user, found.group("ip")


# Cyrus 3.13: logfmt, `event=login.good r.sessionid=... r.clienthost=HOST
# u.username=USER login.mech=PLAIN login.tls=1 ...` (doc/README.logfmt.md).
# A value is bare printable ASCII without `"`, `=` or `\`, or quoted with
# `\"`, `\\` and `\x{HH}` escapes; keys never repeat. r.clienthost is
# `[ADDR]` or `NAME [ADDR]` (then quoted). An anonymous login has
# `login.anonymous=1`, no u.username, and the client's "password" after it.
_LOGFMT_PAIR = re.compile(r'([!#-<>-\[\]-~]+)=("(?:[^"\\]|\\.)*"|[!#-<>-\[\]-~]+)(?: |$)', re.DOTALL)
_LOGFMT_ESCAPE = re.compile(r"\\(?:x\{([0-9A-Fa-f]{2})\}|(.))", re.DOTALL)
_LOGFMT_SPECIAL = {"n": "\n", "r": "\r", "t": "\t"}
_CYRUS_CLIENT = re.compile(rf"(?:{_DNS_NAME} )?\[(?P<ip>{_IP})\]|(?P<bare>{_IP})")


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


def _cyrus_logfmt_fields(found: re.Match[str]) -> tuple[str | None, str] | None:
    pairs = _logfmt_pairs(found.group(0))
    if pairs is None or pairs.get("event") != "login.good" or "login.anonymous" in pairs:
        return None
    user = pairs.get("u.username")
    client = _CYRUS_CLIENT.fullmatch(pairs.get("r.clienthost", ""))
    if not user or client is None or _is_cyrus_anonymous(user, pairs.get("login.mech")):
        return None
    return user, client.group("ip") or client.group("bare")


def _cyrus() -> Rule:
    return Rule(
        name="cyrus",
        needles=(b"login: ", b"event=login.good "),
        forms=(
            _form(
                (),
                rf"login: (?:{_DNS_NAME} )?\[(?P<ip>{_IP})\] (?P<user>.+?)(?: \(proxy\))?"
                r" (?P<mech>[A-Za-z0-9_\-]{1,40})(?:\+TLS)?(?: .*)?",
                _CYRUS_SERVICE,
                read=_cyrus_classic_fields,
                # One word of user, a mechanism that is not ANONYMOUS.
                fast=rb"login: (?:[^\s\[\]()]{1,255} )?\[(?P<ip>" + _IP_BYTES + rb")\] (?P<user>[^ ]{1,255})"
                rb" (?!(?i:anonymous)(?:\+TLS)?(?: |$))[A-Za-z0-9_\-]{1,40}(?:\+TLS)?"
                rb"(?: User logged in(?: SESSIONID=<[!-=?-~]{1,128}>)?)?",
            ),
            _form((), r"event=login\.good .*", _CYRUS_SERVICE, read=_cyrus_logfmt_fields),
        ),
    )


# UW imapd/ipop3d: `Login user=U host=NAME [ADDR]` (NAME absent without
# reverse DNS), also `Authenticated`, and ipop3d's `Auth`/`APOP` with a
# trailing `nmsgs=N/M`. NAME is attacker-chosen (reverse DNS) and is never
# read; the address is the bracket that ends the line. UW cuts user and
# host at 80 characters each: a cut host loses its `]` first and then
# matches nothing.
def _uw_imap() -> Rule:
    return Rule(
        name="uw-imap",
        needles=(b" user=",),
        forms=(
            _form(
                (),
                rf"(?:Login|Authenticated|Auth|APOP) user=(?P<user>.*) host=(?:{_DNS_NAME} )?"
                rf"\[(?P<ip>{_IP})\](?: nmsgs=\d+/\d+)?",
                r"(?:imap|ipop[23])s?d",
            ),
        ),
    )


# Qpopper (LOG_LOGIN): `(vX) POP login by user "U" at (HOST) ADDR`, plus a
# `[file.c:line]` suffix in some builds. The user may hold quotes; the
# address is anchored to the end. Also UIUC popper with the HMS patch:
# `(USER,ADDR) Authenticated.`.
def _qpopper() -> Rule:
    return Rule(
        name="qpopper",
        needles=(b"POP login by user ", b") Authenticated."),
        forms=(
            _form(
                (),
                rf"\(v[A-Za-z0-9_.\-]{{1,32}}\) POP login by user \"(?P<user>.*)\" at \((?:{_DNS_NAME})?\) "
                rf"(?P<ip>{_IP})(?: \[[A-Za-z0-9_.\-]{{1,64}}:\d{{1,6}}\])?",
                r"(?:in\.)?q?popper",
            ),
            _form({"popper"}, rf"\((?P<user>.*),(?P<ip>{_IP})\) Authenticated\."),
        ),
    )


# Perdition: `Auth: SRC:PORT->DST:PORT client-secure=.. authorisation_id=..
# authentication_id=".." server=".." protocol=.. server-secure=.. status="ok"`.
# SRC is numeric (NI_NUMERICHOST) and comes first; every field a client can
# fill (ids, and the server with -c) precedes `status`, which perdition
# writes last. Older versions: `Auth: SRC->DST user=".." server=".."
# port=".." status="ok"`.
_PERDITION_TAG = r"perdition(?:\.[A-Za-z0-9_\-]{1,32})?"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"


def _perdition() -> Rule:
    return Rule(
        name="perdition",
        needles=(b"Auth: ",),
        forms=(
            _form(
                (),
                rf"Auth: (?P<ip>{_IP}):\d{{1,5}}->{_IP}:\d{{1,5}} client-secure=[a-z]{{1,16}} "
                r"authorisation_id=(?:NONE|\"(?P<user>.*)\") authentication_id=\".*\" "
                r"server=\".*\" protocol=[A-Za-z0-9_]{1,32} server-secure=[a-z]{1,16} status=\"ok\"",
                _PERDITION_TAG,
            ),
            _form(
                (),
                rf"Auth: (?P<ip>{_IPV4})->{_IPV4} user=\"(?P<user>.*)\" server=\".*\" port=\"[^\"]*\" "
                r"status=\"?ok\"?",
                _PERDITION_TAG,
            ),
        ),
    )


# TeaPOP: `Successful login for USER@DOMAIN [LOCAL] from HOST [REMOTE]`. The
# client is REMOTE, the bracket that ends the line; HOST is reverse DNS.
def _teapop() -> Rule:
    return Rule(
        name="teapop",
        needles=(b"Successful login for ",),
        forms=(
            _form(
                {"teapop"},
                rf"Successful login for (?P<user>.*) \[{_IP}\] from (?:{_DNS_NAME} )?\[(?P<ip>{_IP})\]",
            ),
        ),
    )


# cucipop: `USER ADDR N, N (N), N (N)` (session counters, logged after a
# successful session). Known only from pop-before-smtp's sample; the
# counters anchor the address to the end.
def _cucipop() -> Rule:
    return Rule(
        name="cucipop",
        needles=(b"cucipop",),
        forms=(_form({"cucipop"}, rf"(?P<user>.+) (?P<ip>{_IP}) \d+, \d+ \(\d+\), \d+ \(\d+\)"),),
    )


# solid-pop3d built with --enable-logextend: `user U authenticated - ADDR`.
# Its failures read `authentication failed ... - ADDR`.
def _solid_pop3d() -> Rule:
    return Rule(
        name="solid-pop3d",
        needles=(b" authenticated - ",),
        forms=(_form({"spop3d", "solid-pop3d"}, rf"user (?P<user>.*) authenticated - (?P<ip>{_IP})"),),
    )


# GNU pop3d: `User 'U' logged in with mailbox 'M' from ADDR`.
def _gnu_pop3d() -> Rule:
    return Rule(
        name="gnu-pop3d",
        needles=(b"' logged in with mailbox '",),
        forms=(
            _form(
                {"gnu-pop3d", "pop3d"},
                rf"User '(?P<user>.*)' logged in with mailbox '.*' from (?P<ip>{_IP})",
            ),
        ),
    )


class _BuiltinRules(Mapping[str, Rule]):
    """The built-in rules by name, each compiled when first looked up: a run
    compiles only the rules its sources read with, not forty patterns."""

    def __init__(self, builders: Sequence[tuple[str, Callable[[], Rule]]]) -> None:
        self._builders = dict(builders)
        self._built: dict[str, Rule] = {}

    def __getitem__(self, name: str) -> Rule:
        rule = self._built.get(name)
        if rule is None:
            rule = self._built[name] = self._builders[name]()
        return rule

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


BUILTIN_RULES: Mapping[str, Rule] = _BuiltinRules(
    [
        ("dovecot", _dovecot),
        ("courier", _courier),
        ("cyrus", _cyrus),
        ("uw-imap", _uw_imap),
        ("qpopper", _qpopper),
        ("perdition", _perdition),
        ("teapop", _teapop),
        ("cucipop", _cucipop),
        ("solid-pop3d", _solid_pop3d),
        ("gnu-pop3d", _gnu_pop3d),
    ]
)


def site_rule(name: str, program: str, match: str, needles: Sequence[str] = ()) -> Rule:
    """A rule from the configuration. Raises ValueError with what is wrong.

    Its needles are `needles` when given, else the longest literal every
    match of `match` contains: like a built-in rule, it then only looks at
    the lines that hold one.
    """
    try:
        pattern = re.compile(match, re.DOTALL)
    except re.error as error:
        raise ValueError(f"match is not a valid regular expression: {error}") from None
    if "ip" not in pattern.groupindex:
        raise ValueError("match has no named group 'ip' (write (?P<ip>...))")
    unknown = set(pattern.groupindex) - {"ip", "user"}
    if unknown:
        raise ValueError(f"match has groups other than 'ip' and 'user': {', '.join(sorted(unknown))}")
    try:
        # Matched in time linear in the line, whatever the line: re could take hours on one.
        linear = LinearPattern(match, re.DOTALL)
    except RefusedPattern as error:
        raise ValueError(f"match {error}") from None
    if _PROGRAM.fullmatch(program) is None:
        raise ValueError(f"program {program!r} is not a syslog tag")
    if needles:
        literals = [needle.encode() for needle in needles]
        if any(not literal for literal in literals):
            raise ValueError("needle must not be empty")
    else:
        # No literal at all (every line is split and tried) when none is long enough.
        found = [literal for literal in required_literals(pattern) if len(literal) >= MIN_NEEDLE_CHARS]
        literals = [found[0].encode()] if found else [b""]
    return Rule(
        name=name, needles=tuple(literals), forms=(Form(frozenset({program}), pattern, linear=linear),)
    )


# The stamp, host and tag of a line in one bytes pattern. (?>...) commits to
# the first way each part matches, as separate matches of the stamp and of
# the header would; RFC 3339 stamps are taken apart so that the fraction of
# a second is not part of what is looked up per second. Its groups are
# read by position, in this order.
_LINE_HEAD = re.compile(
    rb"(?>(?:(?P<clock>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?P<fraction>\.\d{1,9})?"
    rb"(?P<offset>[Zz]|[+-]\d\d:?\d\d)?|(?P<bsd>[A-Z][a-z]{2} [ 0-3]?\d \d\d:\d\d:\d\d)) )"
    rb"(?>(?:(?P<host>[^\s:\[\]]{1,255}) )?(?P<program>[A-Za-z0-9_.\-/]{1,64})(?:\[\d{1,10}\])?: )"
)


def _microsecond(fraction: bytes) -> int:
    """The microseconds of a stamp's fraction of a second (`.5`, `.123456789`)."""
    # Offsets are whole minutes, so the fraction survives the shift to UTC as it is.
    return int(fraction[1:7]) if len(fraction) >= 7 else int(fraction[1:].ljust(6, b"0"))


# Distinct tags (and host fields) whose verdicts are remembered (both are attacker-chosen).
_PROGRAM_CACHE_SIZE = 1024


class _CompiledForm:
    """A form as the hot path uses it: its pattern over raw bytes where that
    means the same (else over the decoded message), and its tags by bytes."""

    __slots__ = ("_accepted", "fast", "fast_has_lip", "form", "has_user", "raw")

    def __init__(self, form: Form) -> None:
        self.form = form
        # A form with its own reader, or a site rule's (linear engine), takes the decoded text.
        self.raw = bytes_pattern(form.pattern) if form.read is None and form.linear is None else None
        self.has_user = "user" in form.pattern.groupindex
        self.fast = form.fast
        self.fast_has_lip = form.fast is not None and "lip" in form.fast.groupindex
        self._accepted: dict[bytes, bool] = {}

    def fast_fields(self, message: bytes) -> tuple[str, str] | None:
        """(user, normalized address) of a message the fast pattern grants for, or None:
        then the form's pattern and reader decide."""
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
        if self.fast_has_lip:
            local = normalize_address(found.group("lip").decode("ascii"))
            if local is None or local == address:
                return None
        user = found.group("user").decode("utf-8", "replace")
        # Only an `a` lowercases to the first letter of `anonymous`.
        if user[0] in "aA" and is_anonymous(user):
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

    def __post_init__(self) -> None:
        needles = {needle for rule in self.rules for needle in rule.needles}
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
        head = _LINE_HEAD.match(line)
        if head is None:
            # Not stamp, host and tag: a rarer shape (Dovecot 1.x's own log)
            # is read from the decoded text.
            return self._parse_text(line.decode("utf-8", "replace"))
        clock, fraction, offset, bsd, host, program = head.groups()
        stamped = self.timestamps.second_of(clock or bsd, offset)
        if stamped is None:
            self.unreadable += 1
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
                    else:
                        if text is None:
                            text = message.decode("utf-8", "replace")
                        matched, fields = form.fields(text)
                        if not matched:
                            continue
                        if fields is None:
                            break
                        user, address_text = fields
                        address = normalize_address(address_text)
                    if address is None or (user is not None and is_anonymous(user)):
                        break
                if host is not None and not self._host_field_counts(host):
                    return None
                microsecond = _microsecond(fraction) if fraction else 0
                earliest = None
                if ambiguity:
                    time = second.replace(microsecond=microsecond) if microsecond else second
                    earliest = time - ambiguity
                return _new_login(Login, (address, second, microsecond, user, name, earliest))
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
        header = _HEADER.match(text, position)
        if header is None:
            return None
        return self._login(time, header.group("program"), text[header.end() :], header.group("host"))

    def _dovecot1_own_log(self, text: str) -> Login | None:
        """Dovecot 1.x's own log file puts its name before the stamp.

        `dovecot: 2008-10-02 23:34:07 Info: pop3-login: Login: ...`; no
        syslog line starts that way, as syslog writes the stamp first.
        """
        if not text.startswith(_DOVECOT1_NAME):
            return None
        stamped = self.timestamps.parse_prefix(text[len(_DOVECOT1_NAME) :])
        if stamped is None:
            if looks_stamped(text[len(_DOVECOT1_NAME) :]):
                self.unreadable += 1
            return None
        time, position = stamped
        # Its own file: no host field, which always counts.
        return self._login(time, "dovecot", text[len(_DOVECOT1_NAME) + position :], None)

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
