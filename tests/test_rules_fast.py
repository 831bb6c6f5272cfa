"""The one-pattern fast path of the Dovecot and Cyrus forms decides nothing the
field readers would decide otherwise: on crafted lines near the default
formats, what it grants the readers grant with the same user and address,
and a parser with the fast path reads every line as one without it.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC

from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser, _CompiledForm
from exactcron.rules.rule import Rule
from exactcron.rules.site import site_rule
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

STAMP = b"2026-11-25T17:50:10.123456+00:00 mail "
RULES = (BUILTIN_RULES["dovecot"], BUILTIN_RULES["cyrus"])


def _without_fast(rule: Rule) -> Rule:
    forms = tuple(dataclasses.replace(form, fast=None) for form in rule.forms)
    return Rule(rule.name, rule.needles, forms, rule.two_line)


def _parser(rules: tuple[Rule, ...]) -> LineParser:
    return LineParser(rules, TimestampParser(NOW_TIME, UTC), frozenset({"mail"}))


GOOD_ADDRESSES = [b"192.0.2.10", b"2001:db8::1"]
addresses = st.sampled_from(
    GOOD_ADDRESSES * 6
    + [
        b"192.0.2.10",
        b"192.0.2.1",
        b"010.0.0.1",
        b"::ffff:192.0.2.10",
        b"::192.0.2.10",
        b"2001:DB8::1",
        b"2001:db8::1",
        b"0.0.0.0",
        b"1.2.3",
        b"::",
        b"fe80::1",
        b"300.1.1.1",
        b"",
        b"1.2.3.4]",
    ]
)
users = st.one_of(
    st.sampled_from(
        [b"joe"] * 6
        + [
            b"joe",
            b"anonymous",
            b"ANONYMOUS@example.org",
            b"anonymous%x",
            b"j>oe",
            b"joe>, rip=6.6.6.6",
            b"a, user=<b",
            b"joe, method=PLAIN",
            b"\xff\xfe",
            "j\u00f6rg".encode(),
            b"joe smith",
            b"",
            b"joe (proxy)",
        ]
    ),
    st.binary(max_size=12),
)
words = st.sampled_from(
    [b"PLAIN"] * 6 + [b"plain", b"ANONYMOUS", b"Anonymous", b"LOGIN", b"DIGEST-MD5", b"X Y", b""]
)


@st.composite
def dovecot_lines(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from([b"dovecot: imap-login: ", b"dovecot: pop3-login: ", b"imap-login: ", b"x: "]))
    tag = b"dovecot[7]: " + tag[len(b"dovecot: ") :] if draw(st.integers(0, 5)) == 0 else tag
    info = draw(st.sampled_from([b"", b"Info: "]))
    verb = draw(st.sampled_from([b"Login: ", b"Logged in: ", b"Login aborted: "]))
    elements = [b"user=<" + draw(users) + b">", b"method=" + draw(words)]
    elements += [b"rip=" + draw(addresses), b"lip=" + draw(addresses)]
    for optional, likely in ((b"mpid=42", True), (b"TLS", True), (b"secured", False), (b"rport=1", False)):
        if draw(st.booleans()) and (likely or draw(st.booleans())):
            elements.append(optional)
    if draw(st.integers(0, 7)) == 0:
        elements.append(draw(st.sampled_from([b"user=x", b"session=<abc>", b"odd thing", b"method=X"])))
    elements.append(
        draw(st.sampled_from([b"session=<TueFBjS/DhXx0Q8B>"] * 4 + [b"session=<a=>", b"session=<>"]))
    )
    if draw(st.integers(0, 7)) == 0:
        elements = draw(st.permutations(elements))
    return STAMP + tag + info + verb + b", ".join(elements)


@st.composite
def cyrus_lines(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from([b"imap[1]: ", b"cyrus/pop3[2]: ", b"imapd: "]))
    host = draw(st.sampled_from([b"", b"client.example ", b"client.example", b"a b ", b"(x) "]))
    tail = draw(
        st.sampled_from(
            [b"", b" User logged in", b" User logged in SESSIONID=<s-1>", b" x", b" (proxy)", b"  "]
        )
    )
    mech = draw(words) + draw(st.sampled_from([b"", b"+TLS"]))
    return STAMP + tag + b"login: " + host + b"[" + draw(addresses) + b"] " + draw(users) + b" " + mech + tail


def _mutated(draw: st.DrawFn, line: bytes) -> bytes:
    """The line, or the line with one byte put in or taken out somewhere."""
    kind = draw(st.sampled_from(["none", "none", "insert", "delete"]))
    if kind == "none" or not line:
        return line
    at = draw(st.integers(min_value=len(STAMP), max_value=len(line) - 1))
    if kind == "delete":
        return line[:at] + line[at + 1 :]
    return line[:at] + draw(st.sampled_from([b">", b",", b" ", b"<", b"=", b"\x00", b"]", b"["])) + line[at:]


@st.composite
def crafted_lines(draw: st.DrawFn) -> bytes:
    return _mutated(draw, draw(st.one_of(dovecot_lines(), cyrus_lines())))


# The tag as syslog writes it: what the line's message follows.
_HEADER = re.compile(rb"([A-Za-z0-9_./-]{1,64})(?:\[\d{1,10}\])?: ")


def _reader_login(line: bytes) -> tuple[str | None, str] | None:
    login = _parser(tuple(_without_fast(rule) for rule in RULES)).parse(line)
    return None if login is None else (login.user, login.address)


@settings(max_examples=1500)
@given(crafted_lines())
def test_what_the_fast_pattern_grants_the_reader_grants_alike(line: bytes) -> None:
    header = _HEADER.match(line, len(STAMP))
    if header is None:
        return
    program, message = header.group(1).decode(), line[header.end() :]
    for rule in RULES:
        for form in rule.forms:
            granted = _CompiledForm(form).fast_fields(message) if form.accepts(program) else None
            if granted is not None:
                assert _reader_login(line) == granted


@settings(max_examples=1500)
@given(crafted_lines())
def test_the_fast_path_reads_every_line_as_the_readers_do(line: bytes) -> None:
    fast = _parser(RULES).parse(line)
    assert _reader_login(line) == (None if fast is None else (fast.user, fast.address))
    slow = _parser(tuple(_without_fast(rule) for rule in RULES)).parse(line)
    assert fast == slow


def test_the_default_formats_take_the_fast_path() -> None:
    dovecot = (
        b"dovecot: imap-login: Login: user=<joe>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, "
        b"mpid=1, TLS, session=<TueFBjS/DhXx0Q8B>"
    )
    cyrus = b"imap[1]: login: client.example [192.0.2.10] joe PLAIN+TLS User logged in SESSIONID=<s-1>"
    for line in (dovecot, cyrus):
        tag_end = line.index(b": ") + 2
        forms = [_CompiledForm(form) for rule in RULES for form in rule.forms]
        assert any(form.fast_fields(line[tag_end:]) == ("joe", "192.0.2.10") for form in forms)


# The line head as syslog writers and Dovecot's own log files write it.
heads = st.tuples(
    st.sampled_from(
        [
            b"2026-11-25T17:50:10.123456+00:00",
            b"2026-11-25T17:50:10+01:00",
            b"2026-11-25T12:50:10.5-05:00",
            b"2026-11-25T17:50:10.123456789Z",
            b"2026-11-25 17:50:10+0100",
            b"2026-11-25T17:50:10",
            b"2026-11-25T17:50:10+24:00",
            b"2026-11-25T17:50:10+23:99",
            b"2026-02-30T17:50:10+00:00",
            b"Nov 25 17:50:10",
            b"Nov 25 17:50:61",
        ]
    ),
    st.sampled_from([b"mail ", b"MAIL ", b"other ", b""]),
)


@settings(max_examples=1500)
@given(heads, dovecot_lines())
def test_the_fast_path_reads_every_stamp_and_host_as_the_readers_do(
    head: tuple[bytes, bytes], dovecot_line: bytes
) -> None:
    stamp, host = head
    line = stamp + b" " + host + dovecot_line[len(STAMP) :]
    fast, readers = _parser(RULES), _parser(tuple(_without_fast(rule) for rule in RULES))
    assert fast.parse(line) == readers.parse(line)
    assert fast.other_hosts == readers.other_hosts


def test_a_rule_listed_before_dovecot_reads_its_lines_first() -> None:
    line = (
        STAMP + b"dovecot: imap-login: Login: user=<joe>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, "
        b"mpid=1, TLS, session=<TueFBjS/DhXx0Q8B>"
    )
    mine = site_rule(
        "mine", "dovecot", r"imap-login: Login: user=<(?P<user>[^>]*)>, .*rip=(?P<ip>[0-9.]+), .*"
    )
    login = _parser((mine, BUILTIN_RULES["dovecot"])).parse(line)
    assert login is not None and login.server == "mine"
    login = _parser((BUILTIN_RULES["dovecot"], mine)).parse(line)
    assert login is not None and login.server == "dovecot"
