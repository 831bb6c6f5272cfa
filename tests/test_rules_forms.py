"""Today's Dovecot and Cyrus: every form they write, and the lines that must grant nothing.

Dovecot 1.x to 2.4 through syslog, the journal and Dovecot's own log files;
`login_log_format_elements` in any order; Cyrus classic and 3.13 logfmt. A
login that authenticates nobody (anonymous) or comes from the server itself
(Dovecot rip = lip) grants nothing, and no user name, however crafted, puts
another address in a grant.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from exactcron.model import Login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.rules.site import site_rule
from exactcron.sources.journal import entry_line
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

STAMP = "Nov 25 17:50:10 mail"
ELEMENTS = (
    "user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=4242, TLS, session=<Mr1iP0TtYMEKTQAC>"
)


def parse(line: str) -> Login | None:
    parser = LineParser(tuple(BUILTIN_RULES.values()), TimestampParser(NOW_TIME, UTC))
    return parser.parse(line.encode())


def granted(line: str) -> tuple[str, str | None, str] | None:
    login = parse(line)
    return (login.server, login.user, login.address) if login else None


DOVECOT_FORMS = [
    # 2.3 and 2.4 through syslog, with and without `Info: ` and a pid.
    f"{STAMP} dovecot: imap-login: Login: {ELEMENTS}",
    f"{STAMP} dovecot: imap-login: Logged in: {ELEMENTS}",
    f"{STAMP} dovecot[812]: pop3-login: Logged in: {ELEMENTS}",
    f"{STAMP} dovecot: pop3-login: Info: Logged in: {ELEMENTS}",
    f"2026-11-25T17:50:10.486319+00:00 mail dovecot: imap-login: Logged in: {ELEMENTS}",
    # Dovecot's own log_path / info_log_path: `Info:`, no host.
    f"Nov 25 17:50:10 imap-login: Info: Logged in: {ELEMENTS}",
    f"Nov 25 17:50:10 pop3-login: Info: Login: {ELEMENTS}",
    # 1.x's own log file: its name before the stamp; 1.x's PID= element.
    "dovecot: 2026-11-25 17:50:10 Info: pop3-login: Login: user=<alice>, PID=12151, method=PLAIN, "
    "rip=192.0.2.10, lip=192.0.2.1",
    # login_log_format_elements reordered, trimmed, extended.
    f"{STAMP} dovecot: imap-login: Logged in: session=<Mr1iP0TtYMEKTQAC>, rip=192.0.2.10, user=<alice>, "
    "method=PLAIN",
    f"{STAMP} dovecot: imap-login: Logged in: rip=192.0.2.10, lip=192.0.2.1, user=<alice>",
    f"{STAMP} dovecot: imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, mpid=4242, secured, "
    "session=<Mr1iP0TtYMEKTQAC>",
    f"{STAMP} dovecot: imap-login: Logged in: user=<alice>, method=SCRAM-SHA-256, rip=192.0.2.10, "
    "lip=192.0.2.1, rport=50212, lport=993, mpid=4242, TLS, "
    "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits), session=<Mr1iP0TtYMEKTQAC>",
    f"{STAMP} dovecot: imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, "
    "listener=imaps, session=<Mr1iP0TtYMEKTQAC>",
]


@pytest.mark.parametrize("line", DOVECOT_FORMS)
def test_every_dovecot_success_form_grants_rip(line: str) -> None:
    assert granted(line) == ("dovecot", "alice", "192.0.2.10")


def test_dovecot_through_the_journal() -> None:
    entry = {
        "_SYSTEMD_UNIT": "dovecot.service",
        "SYSLOG_IDENTIFIER": "dovecot",
        "_HOSTNAME": "mail",
        "__REALTIME_TIMESTAMP": str(int(datetime(2026, 11, 25, 17, 50, 10, tzinfo=UTC).timestamp() * 1e6)),
        "MESSAGE": f"imap-login: Logged in: {ELEMENTS}",
    }
    line = entry_line(entry, frozenset({"dovecot.service"}))
    assert line is not None
    assert granted(line.decode()) == ("dovecot", "alice", "192.0.2.10")


def test_dovecot_ipv6_and_mapped_addresses() -> None:
    line = f"{STAMP} dovecot: imap-login: Logged in: user=<a>, method=PLAIN, rip=FD77::2, lip=fd77::1"
    assert granted(line) == ("dovecot", "a", "fd77::2")
    line = f"{STAMP} dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=::ffff:192.0.2.7, lip=::ffff:192.0.2.1"
    assert granted(line) == ("dovecot", "a", "192.0.2.7")


DOVECOT_NOTHING = [
    # The 2.4 `Login aborted` family and the older failure forms.
    "imap-login: Login aborted: Logged out (auth failed, 1 attempts in 2 secs) (auth_failed): "
    "user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, TLS, session=<a>",
    "pop3-login: Login aborted: Connection closed (auth failed, 3 attempts in 16 secs) (auth_failed): "
    "user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, session=<a>",
    "imap-login: Login aborted: Connection closed (no auth attempts in 0 secs) (no_auth_attempts): "
    "user=<>, rip=192.0.2.10, lip=192.0.2.1, session=<a>",
    "imap-login: Login aborted: Logged out (client didn't finish SASL auth, waited 0 secs) "
    "(auth_aborted_by_client): user=<>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    "imap-login: Info: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): "
    "user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    "imap-login: Login failed: Plaintext authentication disabled: user=<>, rip=192.0.2.10, lip=192.0.2.1",
    "pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<alice>, method=PLAIN, "
    "rip=192.0.2.10, lip=192.0.2.1",
    "imap-login: proxy(alice,192.0.2.99:143): Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, "
    "lip=192.0.2.1",
    "imap(alice)<4242><Mr1iP0TtYMEKTQAC>: Disconnected: Logged out in=120 out=757",
    "submission-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    "managesieve-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    # A login from the server's own address (webmail on the host).
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured",
    "imap-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.1, lip=::ffff:192.0.2.1, TLS",
    # SASL ANONYMOUS authenticates nobody.
    "imap-login: Logged in: user=<anonymous>, method=ANONYMOUS, rip=192.0.2.10, lip=192.0.2.1",
    # No rip (a UNIX socket), an empty or odd one, an lip that is no address.
    "imap-login: Logged in: user=<alice>, method=PLAIN, lip=192.0.2.1, mpid=4242",
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=, lip=192.0.2.1",
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=...",
    # An element Dovecot never writes, a repeated one, a TLS error.
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, note=<x>",
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, rip=192.0.2.11",
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, TLS: Disconnected",
    "imap-login: Logged in: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, ",
    "imap-login: Logged in: user=<alice, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    # A user name outside `user=<...>` may hold anything.
    "imap-login: Logged in: user=alice, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    "imap-login: Logged in: user=<alice>, auth_user=bob, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
]


@pytest.mark.parametrize("message", DOVECOT_NOTHING)
def test_a_dovecot_line_that_authenticates_nobody_here_grants_nothing(message: str) -> None:
    assert granted(f"{STAMP} dovecot: {message}") is None
    assert granted(f"Nov 25 17:50:10 {message}") is None  # Dovecot's own log file


# A user name may hold anything but control characters where a site relaxes
# auth_username_chars. Each imitates elements; the real line after it has
# an empty, odd or missing rip, or none of the elements the name imitates.
CRAFTED = [
    ("x, rip=6.6.6.6", ", method=PLAIN, rip=, lip=192.0.2.1, mpid=1, session=<abc>"),
    ("x, rip=6.6.6.6", ", method=PLAIN, lip=192.0.2.1, mpid=1, session=<abc>"),
    ("x>, rip=6.6.6.6, lip=1.1.1.1, mpid=1, TLS, session=<x", ", method=PLAIN, lip=192.0.2.1, session=<abc>"),
    ("x>, rip=6.6.6.6, session=<y", ", method=PLAIN, lip=192.0.2.1, mpid=1, session=<abc>"),
    ("x>, method=PLAIN, rip=6.6.6.6, lip=1.1.1.1, a", ", method=PLAIN, rip=, lip=192.0.2.1"),
    ("x>, rip=6.6.6.6, user=<y", ", method=PLAIN, lip=192.0.2.1"),
    ("x>, rip=6.6.6.6, session=<y", ", method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, session=<abc>"),
    ("x>, rip=6.6.6.6, session=<y", ", method=PLAIN, rip=::ffff:999.1.1.1, lip=192.0.2.1"),
    ("x>, rip=6.6.6.6", ""),
    ("x>, rip=6.6.6.6, ", ", method=PLAIN, lip=192.0.2.1"),
]


@pytest.mark.parametrize(("user", "tail"), CRAFTED)
@pytest.mark.parametrize("event", ["Login", "Logged in"])
def test_a_crafted_dovecot_user_name_never_puts_its_address_in_a_grant(
    user: str, tail: str, event: str
) -> None:
    login = parse(f"{STAMP} dovecot: imap-login: {event}: user=<{user}>{tail}")
    assert login is None


def test_a_user_name_is_dovecots_up_to_the_first_closing_bracket() -> None:
    line = (
        f"{STAMP} dovecot: imap-login: Logged in: user=<a b,c=d>, method=PLAIN, rip=192.0.2.10, "
        "lip=192.0.2.1, session=<abc>"
    )
    assert granted(line) == ("dovecot", "a b,c=d", "192.0.2.10")


CYRUS_FORMS = [
    # Classic, through syslog with a configured prefix, with and without reverse DNS.
    (
        f"{STAMP} cyrus/imaps[1]: login: client.example [192.0.2.10] alice PLAIN+TLS User logged in SESSIONID=<s>",
        "alice",
    ),
    (f"{STAMP} cyrus/pop3[1]: login: [192.0.2.10] alice plaintext User logged in SESSIONID=<s>", "alice"),
    (f"{STAMP} imap[1]: login: h [192.0.2.10] alice nopassword User logged in SESSIONID=<s>", "alice"),
    # 3.13 logfmt: bare, bracketed and quoted `name [addr]` client hosts; quoted user names.
    (
        f"{STAMP} imaps[1]: event=login.good r.sessionid=fm-1723150181-3493991-1 r.clienthost=192.0.2.10 "
        "u.username=alice login.mech=PLAIN login.tls=1",
        "alice",
    ),
    (
        f"{STAMP} cyrus/imap[1]: event=login.good r.sessionid=s-1 r.clienthost=[192.0.2.10] "
        "u.username=alice login.mech=plaintext login.tls=0 login.magic=~null~",
        "alice",
    ),
    (
        f'{STAMP} cyrus/pop3[1]: event=login.good r.sessionid=s-1 r.tid=t r.clienthost="client.example [192.0.2.10]" '
        "u.username=alice login.mech=PLAIN login.tls=1 pop.subfolder=~null~",
        "alice",
    ),
    (
        f'{STAMP} imap[1]: event=login.good r.clienthost="client.example [192.0.2.10]" '
        'u.username="al ice\\"\\x{7f}" login.mech=PLAIN login.tls=1 login.nopassword=1',
        'al ice"\x7f',
    ),
]


@pytest.mark.parametrize(("line", "user"), CYRUS_FORMS)
def test_every_cyrus_success_form_grants_its_client(line: str, user: str) -> None:
    assert granted(line) == ("cyrus", user, "192.0.2.10")


CYRUS_NOTHING = [
    # Anonymous: classic (the "password" the client sent follows), SASL ANONYMOUS, logfmt.
    "login: client.example [192.0.2.10] anonymous guest@example.org",
    "login: client.example [192.0.2.10] anonymous some words PLAIN User logged in",
    "login: [192.0.2.10] Anonymous@example.org plaintext User logged in SESSIONID=<s>",
    "login: client.example [192.0.2.10] anonymous ANONYMOUS User logged in SESSIONID=<s>",
    "login: client.example [192.0.2.10] guest ANONYMOUS+TLS User logged in SESSIONID=<s>",
    "event=login.good r.sessionid=s-1 r.clienthost=[192.0.2.10] login.mech=plaintext login.tls=0 "
    'login.anonymous=1 login.password="u.username=bob r.clienthost=[6.6.6.6]"',
    "event=login.good r.sessionid=s-1 r.clienthost=[192.0.2.10] login.tls=0 login.anonymous=1",
    "event=login.good r.clienthost=[192.0.2.10] u.username=ANONYMOUS login.mech=PLAIN login.tls=0",
    "event=login.good r.clienthost=[192.0.2.10] u.username=alice login.mech=ANONYMOUS login.tls=0",
    # Failures, other events, and lines that are not exactly Cyrus's logfmt.
    'event=login.bad r.clienthost=[192.0.2.10] u.username=alice login.mech=PLAIN error="authentication failure"',
    "badlogin: client.example [192.0.2.10] plaintext alice SASL(-13): authentication failure",
    "event=login.good r.clienthost=[192.0.2.10] u.username=alice r.clienthost=[6.6.6.6]",
    "event=login.good r.clienthost=~null~ u.username=alice login.tls=0",
    "event=login.good r.clienthost=[local] u.username=alice login.tls=0",
    'event=login.good r.clienthost="[192.0.2.10] " u.username=alice',
    "event=login.good r.clienthost=[192.0.2.10] u.username=alice  login.tls=0",
    "event=login.good r.clienthost=[192.0.2.10] u.username=alice login.tls=0 ",
    "event=login.good r.clienthost=[192.0.2.10] u.username=",
    "r.sessionid=s-1 event=login.good r.clienthost=[192.0.2.10] u.username=alice",
    "x event=login.good r.clienthost=[192.0.2.10] u.username=alice",
]


@pytest.mark.parametrize("message", CYRUS_NOTHING)
def test_a_cyrus_line_that_authenticates_nobody_grants_nothing(message: str) -> None:
    assert granted(f"{STAMP} cyrus/imap[1]: {message}") is None


@pytest.mark.parametrize(
    "user",
    [
        'x" r.clienthost=[6.6.6.6]',
        "x r.clienthost=[6.6.6.6]",
        'x\\" r.clienthost=[6.6.6.6] u.username=\\"y',
        "anonymous",
    ],
)
def test_a_crafted_cyrus_user_name_never_moves_the_address(user: str) -> None:
    # What Cyrus writes for the name: quoted, with `"` and `\` escaped.
    escaped = '"' + user.replace("\\", "\\\\").replace('"', '\\"') + '"'
    login = parse(
        f"{STAMP} imap[1]: event=login.good r.clienthost=[192.0.2.10] u.username={escaped} login.mech=PLAIN "
        "login.tls=1"
    )
    assert login is None or (login.address == "192.0.2.10" and login.user == user)
    # Unescaped (no line Cyrus writes), it breaks the grammar or repeats a key.
    assert parse(f"{STAMP} imap[1]: event=login.good r.clienthost=[192.0.2.10] u.username={user}") is None


@pytest.mark.parametrize(
    "line",
    [
        f"{STAMP} imapd[1]: Login user=anonymous host=client.example [192.0.2.10]",
        f"{STAMP} imapd-ssl: LOGIN, user=Anonymous, ip=[::ffff:192.0.2.10], port=[4242], protocol=IMAP",
        f"{STAMP} dovecot: imap-login: Logged in: user=<anonymous@example.org>, method=PLAIN, rip=192.0.2.10",
    ],
)
def test_the_anonymous_user_is_granted_by_no_rule(line: str) -> None:
    assert parse(line) is None


def test_a_site_rule_never_grants_the_anonymous_user() -> None:
    rule = site_rule("mypopd", "mypopd", r"OK user=(?P<user>\S+) from (?P<ip>\S+)")
    parser = LineParser((rule,), TimestampParser(NOW_TIME, UTC))
    assert parser.parse(f"{STAMP} mypopd[1]: OK user=anonymous from 192.0.2.10".encode()) is None
    assert parser.parse(f"{STAMP} mypopd[1]: OK user=ann from 192.0.2.10".encode()) is not None


def test_a_cyrus_client_name_imitating_an_address_grants_nothing() -> None:
    # A reverse-DNS name `x[198.51.100.66]` glued to the real `[192.0.2.10]`.
    line = f"{STAMP} cyrus/imap[12]: login: x[198.51.100.66] [192.0.2.10] bob PLAIN User logged in"
    login = granted(line)
    assert login is None or login[2] == "192.0.2.10"


def test_a_header_with_other_scripts_digits_is_read_as_no_syslog_header() -> None:
    # Arabic-Indic digits in the pid: not a pid syslog writes.
    assert parse(f"{STAMP} dovecot[\u0661\u0662]: imap-login: Login: {ELEMENTS}") is None
