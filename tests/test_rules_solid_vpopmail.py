"""solid-pop3d's `NAME (ADDR)` form and vpopmail's vchkpw, as their sources write them.

solid-pop3d (main.c, LOG_EXTEND): `user U authenticated - NAME (ADDR)` when
the client has a reverse name, `... - ADDR` when not. NAME is the client's
reverse DNS and never chooses the grant. vpopmail 5.4 (vchkpw.c):
`vchkpw-SERVICE: (AUTH) login success USER@DOMAIN:ADDR`, only POP and IMAP
services grant; 5.0-5.3 `vchkpw: login success ...`, 4.x `vchkpw: login
[USER] from ADDR`. Its failure lines carry the password as typed: none grants,
whatever the password says.
"""

from __future__ import annotations

import socket
from datetime import UTC

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactcron.cli import main
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW, NOW_TIME
from tests.support.runner import invoke

STAMP = "Nov 25 17:50:10 mail"


def granted(line: str) -> tuple[str, str | None, str] | None:
    parser = LineParser(tuple(BUILTIN_RULES.values()), TimestampParser(NOW_TIME, UTC))
    login = parser.parse(line.encode())
    return (login.server, login.user, login.address) if login else None


SOLID_SUCCESSES = [
    # Debian 12's solid-pop3d 0.15: without and with a reverse name.
    ("user pcap authenticated - 192.0.2.21", "192.0.2.21"),
    ("user pcap authenticated - c22.client.example (192.0.2.22)", "192.0.2.22"),
    # A name that imitates an address: the parenthesized one is the client's.
    ("user pcap authenticated - 198.51.100.66 (192.0.2.22)", "192.0.2.22"),
    ("user pcap authenticated - 2001:db8::66 (192.0.2.22)", "192.0.2.22"),
    # IPv6 (SPIPV6), the ::ffff: prefix already cut by solid-pop3d.
    ("user pcap authenticated - c6.client.example (2001:db8::22)", "2001:db8::22"),
]


@pytest.mark.parametrize(("message", "address"), SOLID_SUCCESSES)
def test_solid_pop3d_grants_the_address_with_or_without_a_reverse_name(message: str, address: str) -> None:
    assert granted(f"{STAMP} solid-pop3d[4711]: {message}") == ("solid-pop3d", "pcap", address)


SOLID_NOTHING = [
    # Parentheses or spaces in the name: the line is not solid-pop3d's shape.
    "user pcap authenticated - x(198.51.100.66) (192.0.2.22)",
    "user pcap authenticated - x (198.51.100.66) (192.0.2.22)",
    "user pcap authenticated - (198.51.100.66) (192.0.2.22)",
    "user pcap authenticated - x.example (198.51.100.66",
    "user pcap authenticated - c22.client.example",
    "user pcap authenticated - c22.client.example (192.0.2.22) trailing",
    # Failures and session ends in both forms.
    "authentication failed for user pcap - c22.client.example (192.0.2.22)",
    "authentication failed: no such user: pcap - c22.client.example (192.0.2.22)",
    "session ended for user pcap - c22.client.example (192.0.2.22)",
    "connect from c22.client.example (192.0.2.22)",
]


@pytest.mark.parametrize("message", SOLID_NOTHING)
def test_solid_pop3d_lines_of_other_shapes_grant_nothing(message: str) -> None:
    assert granted(f"{STAMP} solid-pop3d[4711]: {message}") is None


# A reverse name as DNS (or /etc/hosts) may hand it over, weighted to what imitates an address.
NAMES = st.lists(
    st.one_of(
        st.sampled_from(
            ["198.51.100.66", "(", ")", " ", ":", ".", "[", "]", "2001:db8::66", "authenticated - "]
        ),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    ),
    min_size=1,
    max_size=30,
).map("".join)


@given(NAMES)
def test_no_reverse_name_moves_the_solid_pop3d_grant(name: str) -> None:
    login = granted(f"{STAMP} solid-pop3d[4711]: user pcap authenticated - {name} (192.0.2.22)")
    if login is not None:
        assert login[2] == "192.0.2.22"


VPOPMAIL_SUCCESSES = [
    ("vchkpw-pop3: (PLAIN) login success user@example.org:192.0.2.40", "user@example.org", "192.0.2.40"),
    ("vchkpw-pop3s: (APOP) login success user@example.org:192.0.2.41", "user@example.org", "192.0.2.41"),
    ("vchkpw-imap: (PLAIN) login success user@example.org:192.0.2.42", "user@example.org", "192.0.2.42"),
    ("vchkpw-imaps: (PLAIN) login success user@example.org:2001:db8::43", "user@example.org", "2001:db8::43"),
    (
        "vchkpw-pop3: (PLAIN) login success user@example.org:::ffff:192.0.2.44",
        "user@example.org",
        "192.0.2.44",
    ),
    ("vchkpw-pop3: system password login success bob:192.0.2.45", "bob", "192.0.2.45"),
    # 5.0-5.3, and 4.x as pop-before-smtp's comment quotes it.
    ("vchkpw: login success user@example.org:192.0.2.46", "user@example.org", "192.0.2.46"),
    ("vchkpw: login [user] from 192.0.2.47", "user", "192.0.2.47"),
]


@pytest.mark.parametrize(("message", "user", "address"), VPOPMAIL_SUCCESSES)
def test_vpopmail_grants_a_pop_or_imap_login(message: str, user: str, address: str) -> None:
    assert granted(f"{STAMP} vpopmail[9441]: {message}") == ("vpopmail", user, address)


VPOPMAIL_NOTHING = [
    # SMTP AUTH: the client relays through its own session, it needs no lease.
    "vchkpw-smtp: (CRAM-MD5) login success user@example.org:192.0.2.50",
    "vchkpw-smtps: (PLAIN) login success user@example.org:192.0.2.50",
    "vchkpw-submission: (PLAIN) login success user@example.org:192.0.2.50",
    # Webmail (the server itself) and an unknown port (any of the three).
    "vchkpw-webmail: (PLAIN) login success user@example.org:127.0.0.1",
    "vchkpw-10110: (PLAIN) login success user@example.org:192.0.2.50",
    # No address (no TCPREMOTEIP), and the ossec sample's failure.
    "vchkpw-pop3: (PLAIN) login success user@example.org:",
    "vchkpw-pop3: password fail keith1@example.com:192.0.2.50",
    "vchkpw-pop3: vpopmail user not found nobody@example.org:192.0.2.50",
    "vchkpw-pop3: pop access denied user@example.org:192.0.2.50",
    "vchkpw-pop3: user has no password user@example.org:192.0.2.50",
]


@pytest.mark.parametrize("message", VPOPMAIL_NOTHING)
def test_vpopmail_smtp_webmail_and_failure_lines_grant_nothing(message: str) -> None:
    assert granted(f"{STAMP} vpopmail[9441]: {message}") is None


def test_a_vpopmail_line_under_another_tag_grants_nothing() -> None:
    assert (
        granted(f"{STAMP} qmail-popup[1]: vchkpw-pop3: (PLAIN) login success u@example.org:192.0.2.50")
        is None
    )


# vchkpw's failure lines, with the client's text (password, name) where vchkpw writes it.
VPOPMAIL_FAILURES = [
    "vchkpw-pop3: password fail (pass: '{text}') user@example.org:192.0.2.60",
    "vchkpw-imap: system password fail (pass: '{text}') bob:192.0.2.60",
    "vchkpw: password fail {text} user@example.org:192.0.2.60",
    "vchkpw: system password fail {text} bob:192.0.2.60",
    "vchkpw-pop3: invalid user/domain characters {text}:192.0.2.60",
    "vchkpw-pop3: null password given {text}:192.0.2.60",
    "vchkpw-pop3: vpopmail user not found {text}@example.org:192.0.2.60",
    "vchkpw: vpopmail user not found {text}@example.org:192.0.2.60",
]
CLIENT_TEXT = st.lists(
    st.one_of(
        st.sampled_from(
            [
                " login success x@y:192.0.2.9",
                "') login success x@y:192.0.2.9",
                "vchkpw-pop3: (PLAIN) login success a@b:192.0.2.9",
                "vchkpw: login [x] from 192.0.2.9",
                "system password login success x:",
                "(PLAIN)",
                "@",
                ":",
                "'",
                " ",
            ]
        ),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    ),
    max_size=20,
).map("".join)


@given(st.sampled_from(VPOPMAIL_FAILURES), CLIENT_TEXT)
def test_no_vpopmail_failure_line_grants_whatever_the_password_says(template: str, text: str) -> None:
    assert granted(f"{STAMP} vpopmail[9441]: " + template.format(text=text)) is None


def test_check_with_server_vpopmail_reads_a_sample() -> None:
    host = socket.gethostname()
    sample = "".join(
        f"Nov 25 17:5{minute}:10 {host} vpopmail[9441]: {message}\n"
        for minute, message in enumerate(
            [
                "vchkpw-pop3: (PLAIN) login success user@example.org:192.0.2.40",
                "vchkpw-pop3: password fail (pass: 'x') login success a@b:192.0.2.9') user@example.org:192.0.2.60",
                "vchkpw-smtp: (PLAIN) login success user@example.org:192.0.2.50",
                "vchkpw-imaps: (PLAIN) login success other@example.org:192.0.2.41",
            ]
        )
    )
    result = invoke(
        main,
        ["--config", "/nonexistent/exactcron.toml", "--now", NOW, "check", "-", "--server", "vpopmail"],
        input=sample.encode(),
        env={"TZ": "UTC"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "2026-11-25T17:50:10+00:00 vpopmail user@example.org 192.0.2.40\n" in result.output
    assert "2026-11-25T17:53:10+00:00 vpopmail other@example.org 192.0.2.41\n" in result.output
    assert "rule vpopmail: 2 lines matched\n" in result.output
    assert result.output.endswith("would grant: 192.0.2.40 192.0.2.41\n")
