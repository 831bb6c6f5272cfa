"""The patterns that read a line's stamp, host and tag, and the configuration's
host names, are built from shared pieces (timestamps, addresses.HOST_NAME) and
accept and refuse exactly what the hand-written copies they replaced did.

The old patterns stay here, as literals, as the reference: a change to a
piece that changes what any of them accepts, or what it captures, fails here.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from exactcron import config, timestamps
from exactcron.rules.forms import HEADER, LINE_HEAD

OLD_LINE_HEAD = re.compile(
    rb"(?>(?:(?P<clock>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?P<fraction>\.\d{1,9})?"
    rb"(?P<offset>[Zz]|[+-]\d\d:?\d\d)?|(?P<bsd>[A-Z][a-z]{2} [ 0-3]?\d \d\d:\d\d:\d\d)) )"
    rb"(?>(?:(?P<host>[^\s:\[\]]{1,255}) )?(?P<program>[A-Za-z0-9_.\-/]{1,64})(?:\[\d{1,10}\])?: )"
)
OLD_HEADER = re.compile(
    r"(?:(?P<host>[^\s:\[\]]{1,255}) )?(?P<program>[A-Za-z0-9_.\-/]{1,64})(?:\[\d{1,10}\])?: ",
    re.ASCII,
)
OLD_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(\.\d{1,9})?(Z|z|[+-]\d\d:?\d\d)? ", re.ASCII)
OLD_TRADITIONAL = re.compile(r"([A-Z][a-z]{2}) ([ 0-3]?\d) (\d\d):(\d\d):(\d\d) ", re.ASCII)
OLD_CONFIG_HOST_NAME = re.compile(r"[^\s:\[\]*]{1,255}")

# Near misses of every part: digits one too many or few, the other case,
# separators swapped, the characters a host may not hold, lengths at the
# bounds, non-ASCII letters and spaces.
FRAGMENTS = [
    "2026-12-06",
    "2026-12-06T19:20:16",
    "2026-12-06 19:20:16",
    "12026-1-6",
    "T",
    "t",
    " ",
    "  ",
    "19:20:16",
    "1:20:16",
    "19:20:160",
    ".",
    ".5",
    ".123456789",
    ".1234567890",
    "Z",
    "z",
    "+01:00",
    "-0500",
    "+1:00",
    "+01:0",
    "Dec",
    "dec",
    "DEC",
    "Decx",
    " 6",
    "06",
    "36",
    "46",
    "mail",
    "Mail.Example.ORG",
    "*",
    "a*b",
    "a:b",
    "[",
    "]",
    "[123]",
    "[12345678901]",
    ": ",
    ":",
    "\t",
    "\n",
    "\r",
    "\x0b",
    "\x1c",
    "\x85",
    "\u00a0",
    "\u2028",
    "\u3000",
    "é",
    "h" * 255,
    "h" * 256,
    "p" * 64,
    "p" * 65,
    "postfix/smtpd",
    "dovecot",
    "pop3-login",
    "perdition.imaps",
]
_PIECES = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3))
FRAGMENTED = st.lists(_PIECES, max_size=12).map("".join)

_DIGIT = st.sampled_from("0123456789")


def _digits(count: int) -> st.SearchStrategy[str]:
    return st.lists(_DIGIT, min_size=count, max_size=count).map("".join)


_RFC3339_STAMP = st.builds(
    lambda date, separator, clock, fraction, offset: f"{date}{separator}{clock}{fraction}{offset}",
    st.builds(lambda y, m, d: f"{y}-{m}-{d}", _digits(4), _digits(2), _digits(2)),
    st.sampled_from(["T", " ", "t"]),
    st.builds(lambda h, m, s: f"{h}:{m}:{s}", _digits(2), _digits(2), _digits(2)),
    st.one_of(st.just(""), st.integers(0, 10).flatmap(lambda n: _digits(n).map(lambda d: "." + d))),
    st.sampled_from(["", "Z", "z", "+01:00", "-0530", "+1:00", "+01:0", "+0100 "]),
)
_TRADITIONAL_STAMP = st.builds(
    lambda month, day, clock: f"{month} {day} {clock}",
    st.sampled_from(["Dec", "Jan", "dec", "DEC", "Feb", "Xyz"]),
    st.sampled_from([" 6", "06", "6", "36", "46", "  6", "106"]),
    st.builds(lambda h, m, s: f"{h}:{m}:{s}", _digits(2), _digits(2), _digits(2)),
)
HOSTS = st.one_of(st.sampled_from(FRAGMENTS), st.text(min_size=1, max_size=20), FRAGMENTED)
_PROGRAMS = st.one_of(st.sampled_from(FRAGMENTS), st.from_regex(r"[A-Za-z0-9_.\-/]{1,66}", fullmatch=True))
_HEADS_AFTER_STAMP = st.builds(
    lambda host, program, pid, tail: f"{host}{program}{pid}{tail}",
    st.one_of(st.just(""), HOSTS.map(lambda host: host + " ")),
    _PROGRAMS,
    st.sampled_from(["", "[1]", "[1234567890]", "[12345678901]", "[]", "[x]"]),
    st.sampled_from([": ", ":", " : ", ": Login: user=<a>"]),
)
WELL_FORMED = st.builds(
    lambda stamp, rest, junk: f"{stamp} {rest}{junk}",
    st.one_of(_RFC3339_STAMP, _TRADITIONAL_STAMP),
    _HEADS_AFTER_STAMP,
    FRAGMENTED,
)
HEADS = st.one_of(WELL_FORMED, FRAGMENTED, st.builds(str.__add__, FRAGMENTED, WELL_FORMED))


def _outcome(pattern: re.Pattern[str] | re.Pattern[bytes], text: str | bytes) -> object:
    """What a match of `pattern` at the start of `text` yields: its groups and end, or None."""
    found = pattern.match(text)  # type: ignore[arg-type]
    return None if found is None else (found.groups(), found.groupdict(), found.end())


@given(HEADS, st.sampled_from(["utf-8", "latin-1"]))
@example("2026-12-06T19:20:16.123456+01:00 mail dovecot[12]: ", "utf-8")
@example("Dec  6 19:20:16 * sshd[1]: ", "utf-8")
@example("Dec  6 19:20:16 mail\u00a0host dovecot: ", "utf-8")
def test_the_line_head_reads_every_line_as_the_hand_copy_did(text: str, encoding: str) -> None:
    line = text.encode(encoding, "replace")
    assert _outcome(LINE_HEAD, line) == _outcome(OLD_LINE_HEAD, line)


@given(st.binary(max_size=80))
def test_the_line_head_reads_any_bytes_as_the_hand_copy_did(line: bytes) -> None:
    assert _outcome(LINE_HEAD, line) == _outcome(OLD_LINE_HEAD, line)


@given(st.one_of(_HEADS_AFTER_STAMP, FRAGMENTED, st.builds(str.__add__, _HEADS_AFTER_STAMP, FRAGMENTED)))
@example("* sshd[1]: ")
@example("mail\u00a0host dovecot: ")
def test_the_header_reads_as_the_hand_copy_did(text: str) -> None:
    assert _outcome(HEADER, text) == _outcome(OLD_HEADER, text)


@given(HEADS)
def test_the_stamp_patterns_read_as_the_hand_copies_did(text: str) -> None:
    rfc3339, traditional = timestamps.stamp_patterns()
    assert _outcome(rfc3339, text) == _outcome(OLD_RFC3339, text)
    assert _outcome(traditional, text) == _outcome(OLD_TRADITIONAL, text)


@given(HOSTS)
@example("*")
@example("mail*")
@example("mail\u00a0host")
@example("mail\u3000host")
@example("h" * 255)
@example("h" * 256)
def test_the_configuration_takes_the_host_names_it_took(name: str) -> None:
    assert config._is_host_name(name) == (OLD_CONFIG_HOST_NAME.fullmatch(name) is not None)


def test_a_log_host_field_may_be_a_star_a_configured_host_may_not() -> None:
    # Why the two differ: a log's host field is whatever the sender wrote (it
    # then counts only under `hosts = ["*"]`); in `hosts`, `*` is the wildcard.
    assert OLD_LINE_HEAD.match(b"Dec  6 19:20:16 * sshd[1]: ") is not None
    assert LINE_HEAD.match(b"Dec  6 19:20:16 * sshd[1]: ").group("host") == b"*"
    assert not config._is_host_name("*")
    assert not config._is_host_name("mail*")
    assert config._is_host_name("mail.example.org")
