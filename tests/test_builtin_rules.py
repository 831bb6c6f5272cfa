"""Built-in rules: each server's documented success forms, and the lines that must grant nothing.

Every case is a whole log line, as the parser sees it. A crafted user name,
reverse-DNS name or foreign program never moves or creates a grant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from exactcron.cli import main
from exactcron.model import Login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import MAX_LINE_BYTES, LineParser
from exactcron.rules.site import site_rule
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME
from tests.support.runner import invoke

STAMP = "Nov 25 17:50:10 mail"


def parse(line: str | bytes, rules: tuple[str, ...] | None = None) -> Login | None:
    chosen = tuple(BUILTIN_RULES[name] for name in rules) if rules else tuple(BUILTIN_RULES.values())
    parser = LineParser(chosen, TimestampParser(NOW_TIME, UTC))
    return parser.parse(line.encode() if isinstance(line, str) else line)


def grant(line: str | bytes) -> tuple[str, str | None, str] | None:
    login = parse(line)
    return (login.server, login.user, login.address) if login else None


# (line, server, user, address): one row per documented success form.
SUCCESSES = [
    # Dovecot 2.3 through rsyslog (RFC 3339), its own log file, 1.x with PID=.
    (
        "2026-11-25T17:50:13.486319+00:00 vm dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
        "rip=10.77.0.2, lip=10.77.0.1, mpid=10899, session=<Mr1iP0TtYMEKTQAC>",
        "dovecot",
        "alice",
        "10.77.0.2",
    ),
    (
        "Nov 25 17:50:10 pop3-login: Info: Login: user=<alice>, method=PLAIN, rip=10.77.0.2, "
        "lip=10.77.0.1, mpid=10716, session=<abc>",
        "dovecot",
        "alice",
        "10.77.0.2",
    ),
    (
        f"{STAMP} dovecot: imap-login: Login: user=<bob>, method=PLAIN, rip=fd77::2, lip=fd77::1, TLS",
        "dovecot",
        "bob",
        "fd77::2",
    ),
    # Dovecot 2.4 through syslog and its own log file.
    (
        f"{STAMP} dovecot: imap-login: Logged in: user=<bob>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1, "
        "mpid=12, secured, session=<abc>",
        "dovecot",
        "bob",
        "192.0.2.12",
    ),
    (
        "Nov 25 17:50:10 pop3-login: Info: Logged in: user=<bob>, method=PLAIN, rip=192.0.2.13, "
        "lip=192.0.2.1, mpid=12, TLS, session=<abc>",
        "dovecot",
        "bob",
        "192.0.2.13",
    ),
    # Courier: with and without port, IPv4-mapped and IPv6, the imapd extras.
    (
        f"{STAMP} courierpop3login: LOGIN, user=justin, ip=[::ffff:203.0.113.51]",
        "courier",
        "justin",
        "203.0.113.51",
    ),
    (
        f"{STAMP} pop3d[1994]: LOGIN, user=mck, ip=[::ffff:192.0.2.45], port=[52326]",
        "courier",
        "mck",
        "192.0.2.45",
    ),
    (
        f"{STAMP} imapd-ssl: LOGIN, user=u@example.org, ip=[2001:DB8::7], port=[45792], "
        "protocol=IMAP, starttls=1",
        "courier",
        "u@example.org",
        "2001:db8::7",
    ),
    (f"{STAMP} pop3d-ssl: LOGIN, user=t, ip=[::1], port=[55880], stls=1", "courier", "t", "::1"),
    # Cyrus: with and without reverse DNS, +TLS, session id, custom prefix, old form.
    (
        "2017-07-09T04:11:30.210522-04:00 imap24 sloti24t04/imapmail[3609860]: login: frontend1.example "
        "[10.202.2.160] user@example.com plaintext User logged in SESSIONID=<s-1>",
        "cyrus",
        "user@example.com",
        "10.202.2.160",
    ),
    (
        f"{STAMP} cyrus/imaps[27449]: login: [192.0.2.9] toto PLAIN+TLS User logged in SESSIONID=<x>",
        "cyrus",
        "toto",
        "192.0.2.9",
    ),
    (f"{STAMP} pop3d[15443]: login: [192.0.2.35] stew plaintext", "cyrus", "stew", "192.0.2.35"),
    # Cyrus 3.13 logfmt.
    (
        f'{STAMP} cyrus/imaps[8]: event=login.good r.sessionid=s-1 r.clienthost="host.example [192.0.2.36]" '
        "u.username=stew login.mech=PLAIN login.tls=1",
        "cyrus",
        "stew",
        "192.0.2.36",
    ),
    (
        f"{STAMP} cyrus/pop3[8]: login: host.example [2001:db8::5] ann APOP User logged in",
        "cyrus",
        "ann",
        "2001:db8::5",
    ),
    # UW imapd / ipop3d: Login, Authenticated, Auth and APOP, with and without a name.
    (
        f"{STAMP} imapd[15760]: Login user=juliand host=pier113.example.net [192.0.2.113]",
        "uw-imap",
        "juliand",
        "192.0.2.113",
    ),
    (f"{STAMP} imapd[17669]: Login user=ianm host=[198.51.100.253]", "uw-imap", "ianm", "198.51.100.253"),
    (
        f"{STAMP} imapd[11929]: Authenticated user=lori host=ts-04.example.net [192.0.2.125]",
        "uw-imap",
        "lori",
        "192.0.2.125",
    ),
    (
        f"{STAMP} ipop3d[4047]: Login user=helen host=dialup.example.net [192.0.2.152] nmsgs=0/0",
        "uw-imap",
        "helen",
        "192.0.2.152",
    ),
    (f"{STAMP} ipop3d[1]: APOP user=h host=[192.0.2.3] nmsgs=2/5", "uw-imap", "h", "192.0.2.3"),
    (f"{STAMP} ipop3d[1]: Auth user=h host=[192.0.2.4] nmsgs=2/5", "uw-imap", "h", "192.0.2.4"),
    # Qpopper (with and without the [file:line] suffix) and UIUC popper.
    (
        f'{STAMP} in.qpopper[7597]: (v4.0.9) POP login by user "nick" at (out.example.com) 192.0.2.35 '
        "[pop_log.c:244]",
        "qpopper",
        "nick",
        "192.0.2.35",
    ),
    (
        f'{STAMP} qpopper[7]: (v4.1.0) POP login by user "n" at (192.0.2.36) 192.0.2.36',
        "qpopper",
        "n",
        "192.0.2.36",
    ),
    (f"{STAMP} popper: (tbarney,192.0.2.66) Authenticated.", "qpopper", "tbarney", "192.0.2.66"),
    # Perdition: today's form (IPv4 and IPv6 sources), and the old one.
    (
        f"{STAMP} perdition.imaps[3194]: Auth: 192.0.2.100:2274->198.51.100.9:993 client-secure=ssl "
        'authorisation_id=NONE authentication_id="carles" server="imap.example.org:993" protocol=IMAP4S '
        'server-secure=ssl status="ok"',
        "perdition",
        None,
        "192.0.2.100",
    ),
    (
        f"{STAMP} perdition[3]: Auth: 2001:db8::1:1234->2001:db8::2:110 client-secure=plaintext "
        'authorisation_id="ann" authentication_id="ann" server="pop.example.org:110" protocol=POP3 '
        'server-secure=plaintext status="ok"',
        "perdition",
        "ann",
        "2001:db8::1",
    ),
    (
        f'{STAMP} perdition[3]: Auth: 192.0.2.8->198.51.100.9 user="ann" server="pop.example.org" '
        'port="110" status="ok"',
        "perdition",
        "ann",
        "192.0.2.8",
    ),
    # TeaPOP: the client is the second bracket.
    (
        f"{STAMP} teapop[17844]: Successful login for u@example.org [198.51.100.1] from client.example "
        "[192.0.2.77]",
        "teapop",
        "u@example.org",
        "192.0.2.77",
    ),
    # cucipop (pop-before-smtp's sample shape).
    (f"{STAMP} cucipop[2121]: kim 192.0.2.88 3, 1024 (2), 0 (0)", "cucipop", "kim", "192.0.2.88"),
    # solid-pop3d with --enable-logextend, GNU pop3d.
    (f"{STAMP} spop3d[9]: user adrian authenticated - 192.0.2.45", "solid-pop3d", "adrian", "192.0.2.45"),
    # vm-pop3d 1.1: the address on the login line itself.
    (
        f"{STAMP} vm-pop3d[20764]: User 'test@example.org' logged in from 192.0.2.46, nmsgs=3",
        "vm-pop3d",
        "test@example.org",
        "192.0.2.46",
    ),
    (
        f"{STAMP} gnu-pop3d[21974]: User 'shirwah' logged in with mailbox 'shirwah' from 192.0.2.178",
        "gnu-pop3d",
        "shirwah",
        "192.0.2.178",
    ),
    # vpopmail 5.4's vchkpw.
    (
        f"{STAMP} vpopmail[9441]: vchkpw-pop3: (PLAIN) login success user@example.org:192.0.2.40",
        "vpopmail",
        "user@example.org",
        "192.0.2.40",
    ),
]


@pytest.mark.parametrize(("line", "server", "user", "address"), SUCCESSES)
def test_a_documented_success_grants_its_address(
    line: str, server: str, user: str | None, address: str
) -> None:
    assert grant(line) == (server, user, address)


def test_every_built_in_rule_has_a_documented_success() -> None:
    # A server that logs the address and the login on two lines: tests/test_rules_twoline.py.
    two_line_only = {name for name, rule in BUILTIN_RULES.items() if not rule.forms and rule.two_line}
    assert two_line_only == {"popa3d"}
    assert {row[1] for row in SUCCESSES} == set(BUILTIN_RULES) - two_line_only


@pytest.mark.parametrize(("line", "server", "user", "address"), SUCCESSES)
def test_a_success_line_of_one_server_is_read_only_by_its_own_rule(
    line: str, server: str, user: str | None, address: str
) -> None:
    for name in BUILTIN_RULES:
        if name != server:
            assert parse(line, (name,)) is None, name


NOTHING = [
    # Failures, logouts, connections of each server.
    f"{STAMP} dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 3 secs): user=<b>, "
    "method=PLAIN, rip=192.0.2.191, lip=192.0.2.1, TLS",
    f"{STAMP} dovecot: imap-login: Disconnected (auth failed, 2 attempts): user=<b>, method=PLAIN, "
    "rip=192.0.2.87, lip=192.0.2.1, TLS",
    f"{STAMP} dovecot: imap(alice): Disconnected: Logged out in=120 out=757",
    f"{STAMP} imapd-ssl: LOGIN FAILED, user=u@example.org, ip=[::ffff:192.0.2.8]",
    f"{STAMP} imapd-ssl: LOGIN FAILED, method=PLAIN, ip=[::ffff:192.0.2.8]",
    f"{STAMP} imapd-ssl: Connection, ip=[::ffff:192.0.2.8]",
    f"{STAMP} pop3d[1994]: LOGOUT, user=mck, ip=[::ffff:192.0.2.45], port=[52326], top=0, retr=0",
    # Exact's Cyrus bug: `login:` is inside `badlogin:`.
    f"{STAMP} cyrus/imap[5355]: badlogin: localhost [192.0.2.1] plaintext cyrus SASL(-13): "
    "authentication failure: checkpass failed",
    f"{STAMP} imapd[2517]: badlogin: somehost[192.0.2.4] OTP [SASL(-13): authentication failure]",
    f"{STAMP} imapd[1]: Login failed user=lizdy auth=lizdy host=h.example.net [192.0.2.112]",
    f"{STAMP} imapd[1]: Login excessive login failures user=u auth=u host=x [192.0.2.74]",
    f"{STAMP} imapd[1]: Login disabled user=test auth=test host=localhost [127.0.0.1]",
    f"{STAMP} imapd[1]: Logout user=joao host=b.example.net [192.0.2.8]",
    f"{STAMP} imapd[1]: imap service init from 192.0.2.8",
    f"{STAMP} imapd[1]: AUTHENTICATE LOGIN failure host=b.example.net [192.0.2.8]",
    f'{STAMP} in.qpopper[7596]: (v4.0.9) Servicing request from "x.example.com" at 192.0.2.32 '
    "[pop_init.c:1408]",
    f"{STAMP} perdition.imaps[3194]: Auth: 192.0.2.100:2274->198.51.100.9:993 client-secure=ssl "
    'authorisation_id=NONE authentication_id="carles" server="imap.example.org:993" protocol=IMAP4S '
    'server-secure=ssl status="failed: Re-Authentication Failure"',
    f"{STAMP} perdition[1]: Connect: 192.0.2.100:2274->198.51.100.9:110",
    f"{STAMP} solid-pop3d[3822]: authentication failed for user jacques - 192.0.2.230",
    f"{STAMP} spop3d[3822]: APOP authentication failed for user adrian - 192.0.2.45",
    # Exact's Courier bug: an address with the port glued on is no address.
    f"{STAMP} pop3d: LOGIN, user=x, ip=[1.2.3.4], port=[52326",
    # Invalid addresses (Exact's regression data) and a zone index.
    f"{STAMP} pop3d[15443]: login: [12.345.67.35] stewbagz plaintext",
    f"{STAMP} dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=fe80::1%eth0, lip=fe80::2",
    # CVE-2001-1075: success text from another program (a sender address, a
    # user name in an MTA line) grants nothing.
    f"{STAMP} postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[192.0.2.6]: <Login user=a host=[6.6.6.6]>",
    f"{STAMP} sshd[1]: Invalid user Login user=a host=[6.6.6.6] from 192.0.2.6",
    f"{STAMP} sm-mta[1]: from=<imapd[1]: Login user=a host=[6.6.6.6]@x>, relay=[192.0.2.6]",
    f"{STAMP} su: dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=6.6.6.6, lip=10.0.0.1",
    f'{STAMP} logger: (v4.0.9) POP login by user "a" at (h) 6.6.6.6',
    f"{STAMP} cron[1]: Successful login for a [10.0.0.1] from h [6.6.6.6]",
    # The right program, but not at the start of the message.
    f"{STAMP} imapd[1]: xLogin user=a host=[6.6.6.6]",
    f"{STAMP} dovecot: imap-login: Info: x Login: user=<a>, method=PLAIN, rip=6.6.6.6, lip=10.0.0.1",
    # No stamp, no tag.
    "dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=6.6.6.6, lip=10.0.0.1",
    "Login user=a host=[6.6.6.6]",
    # A stamp that names no instant.
    "2026-13-45T10:00:00+00:00 mail imapd[1]: Login user=a host=[6.6.6.6]",
]


@pytest.mark.parametrize("line", NOTHING)
def test_a_line_that_is_no_success_grants_nothing(line: str) -> None:
    assert grant(line) is None


# Crafted user names: each goes into the user field of a real success line
# of the server whose client sent it. The address stays the server's own.
CRAFTED_USERS = [
    "x>, method=PLAIN, rip=6.6.6.6",
    "x>, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6",
    "a, ip=[6.6.6.6], port=[1]",
    "a, ip=[6.6.6.6]",
    "a host=[6.6.6.6]",
    "a host=evil [6.6.6.6] nmsgs=1/1",
    'a" at (evil) 6.6.6.6',
    "a,6.6.6.6) Authenticated.",
    "a [6.6.6.6] from evil [6.6.6.6]",
    "a 6.6.6.6 1, 2 (3), 4 (5)",
    "a authenticated - 6.6.6.6",
    "a' logged in with mailbox 'a' from 6.6.6.6",
    "[6.6.6.6]",
    "'\"[]<>()",
    "x" * 90 + " [6.6.6.6]",
    "Login: user=<a>, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6, mpid=1",
    "x, rip=6.6.6.6",
    "x>, rip=6.6.6.6, session=<y",
    "x r.clienthost=[6.6.6.6]",
    'x" r.clienthost=[6.6.6.6] u.username="y',
]

TEMPLATES = {
    "dovecot": "{stamp} dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip=192.0.2.10, "
    "lip=192.0.2.1, mpid=1, session=<s>",
    "dovecot-2.4": "{stamp} dovecot: imap-login: Logged in: user=<{user}>, method=PLAIN, rip=192.0.2.10, "
    "lip=192.0.2.1, mpid=1, TLS, session=<s>",
    "courier": "{stamp} imapd: LOGIN, user={user}, ip=[::ffff:192.0.2.10], port=[4242], protocol=IMAP",
    "uw-imap": "{stamp} imapd[1]: Login user={user} host=client.example [192.0.2.10]",
    "qpopper": '{stamp} in.qpopper[1]: (v4.0.9) POP login by user "{user}" at (client.example) 192.0.2.10',
    "popper": "{stamp} popper: ({user},192.0.2.10) Authenticated.",
    "teapop": "{stamp} teapop[1]: Successful login for {user} [198.51.100.1] from client.example "
    "[192.0.2.10]",
    "cucipop": "{stamp} cucipop[1]: {user} 192.0.2.10 1, 2 (3), 4 (5)",
    "solid-pop3d": "{stamp} spop3d[1]: user {user} authenticated - 192.0.2.10",
    "gnu-pop3d": "{stamp} gnu-pop3d[1]: User '{user}' logged in with mailbox '{user}' from 192.0.2.10",
    "vm-pop3d": "{stamp} vm-pop3d[1]: User '{user}' logged in from 192.0.2.10, nmsgs=3",
    # Address first: the user cannot reach it.
    "cyrus": "{stamp} cyrus/imap[1]: login: client.example [192.0.2.10] {user} PLAIN User logged in",
    "cyrus-logfmt": '{stamp} imap[1]: event=login.good r.clienthost="client.example [192.0.2.10]" '
    "u.username={user} login.mech=PLAIN login.tls=1",
    "perdition": "{stamp} perdition[1]: Auth: 192.0.2.10:4242->198.51.100.9:110 client-secure=plaintext "
    'authorisation_id="{user}" authentication_id="{user}" server="pop.example:110" protocol=POP3 '
    'server-secure=plaintext status="ok"',
}


@pytest.mark.parametrize("server", sorted(TEMPLATES))
@pytest.mark.parametrize("user", CRAFTED_USERS)
def test_a_crafted_user_name_never_moves_the_address(server: str, user: str) -> None:
    login = parse(TEMPLATES[server].format(stamp=STAMP, user=user))
    if login is not None:  # a rule may refuse a strange name; it may never take another address
        assert login.address == "192.0.2.10"


@pytest.mark.parametrize("server", sorted(TEMPLATES))
def test_a_plain_user_name_is_read_whole(server: str) -> None:
    login = parse(TEMPLATES[server].format(stamp=STAMP, user="alice@example.org"))
    assert login is not None and login.address == "192.0.2.10"
    assert login.user in ("alice@example.org", None)


def test_a_whole_fake_success_inside_a_failure_grants_nothing() -> None:
    fake = "x>, method=PLAIN, rip=6.6.6.6, lip=6.6.6.6): Login: user=<x"
    line = (
        f"{STAMP} dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<{fake}>, "
        "method=PLAIN, rip=192.0.2.66, lip=192.0.2.1"
    )
    assert grant(line) is None
    courier = f"{STAMP} imapd: LOGIN FAILED, user=a, ip=[::ffff:192.0.2.66] LOGIN, user=x, ip=[6.6.6.6]"
    assert grant(courier) is None


def test_uw_takes_the_bracket_not_the_reverse_dns_name() -> None:
    """The host NAME is whatever the client's DNS says; it is never read as the address."""
    assert grant(f"{STAMP} imapd[1]: Login user=a host=6.6.6.6 [192.0.2.10]") == (
        "uw-imap",
        "a",
        "192.0.2.10",
    )
    # A name holding a bracket or a space is no DNS name: no grant at all.
    assert grant(f"{STAMP} imapd[1]: Login user=a host=x[6.6.6.6] [192.0.2.10]") is None
    assert grant(f"{STAMP} imapd[1]: Login user=a host=x [6.6.6.6] [192.0.2.10]") is None
    # UW cuts the host at 80 characters: the cut bracket grants nothing.
    assert grant(f"{STAMP} imapd[1]: Login user=a host={'n' * 70} [192.0.2.1") is None


def test_teapop_grants_the_remote_address_not_the_local_one() -> None:
    line = f"{STAMP} teapop[1]: Successful login for u@d [192.0.2.1] from localhost [127.0.0.1]"
    assert grant(line) == ("teapop", "u@d", "127.0.0.1")


def test_perdition_status_must_be_ok_even_when_the_server_name_is_chosen_by_the_client() -> None:
    line = (
        f"{STAMP} perdition[1]: Auth: 192.0.2.10:4242->198.51.100.9:110 client-secure=plaintext "
        'authorisation_id=NONE authentication_id="a" server="x protocol=POP3 server-secure=ssl '
        'status="ok":110" protocol=POP3 server-secure=plaintext status="failed: Re-Authentication Failure"'
    )
    assert grant(line) is None


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: line + b"\r\n",
        lambda line: line + b"\r",
        lambda line: line.replace(b"user=<alice>", b"user=<al\xffice>"),
        lambda line: line.replace(b"user=<alice>", b"user=<al\x00ice>"),
        lambda line: line.replace(b"user=<alice>", b"user=<\xc3\x28\xa0\xa1>"),
    ],
)
def test_crlf_invalid_utf8_and_nul_bytes_are_survived(damage: object) -> None:
    line = (
        b"Nov 25 17:50:10 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
        b"rip=192.0.2.10, lip=192.0.2.1"
    )
    login = parse(damage(line))  # type: ignore[operator]
    assert login is not None and login.address == "192.0.2.10"


def test_a_line_over_the_limit_is_skipped_and_counted() -> None:
    parser = LineParser(tuple(BUILTIN_RULES.values()), TimestampParser(NOW_TIME, UTC))
    user = "a" * MAX_LINE_BYTES
    line = f"{STAMP} dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1"
    assert parser.parse(line.encode()) is None
    assert parser.too_long == 1
    assert parser.lines == 1


def test_the_log_time_is_the_lines_own_time() -> None:
    login = parse(f"{STAMP} imapd[1]: Login user=a host=[192.0.2.10]")
    assert login is not None and login.time == datetime(2026, 11, 25, 17, 50, 10, tzinfo=UTC)


def test_several_rules_on_one_source_read_each_servers_lines() -> None:
    parser = LineParser((BUILTIN_RULES["dovecot"], BUILTIN_RULES["courier"]), TimestampParser(NOW_TIME, UTC))
    lines = [
        TEMPLATES["dovecot"].format(stamp=STAMP, user="a"),
        TEMPLATES["courier"].format(stamp=STAMP, user="b"),
        TEMPLATES["uw-imap"].format(stamp=STAMP, user="c"),
    ]
    logins = [parser.parse(line.encode()) for line in lines]
    assert [(login.server, login.user) if login else None for login in logins] == [
        ("dovecot", "a"),
        ("courier", "b"),
        None,
    ]


# Site rules: [rule.NAME] with program and match.


def test_a_site_rule_reads_its_program_only() -> None:
    rule = site_rule("mypopd", "mypopd", r"OK user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]$")
    parser = LineParser((rule,), TimestampParser(NOW_TIME, UTC))
    login = parser.parse(f"{STAMP} mypopd[7]: OK user=ann from [192.0.2.5]".encode())
    assert login == Login.at(datetime(2026, 11, 25, 17, 50, 10, tzinfo=UTC), "mypopd", "ann", "192.0.2.5")
    assert parser.parse(f"{STAMP} otherd[7]: OK user=ann from [192.0.2.5]".encode()) is None
    # The address is still validated.
    assert parser.parse(f"{STAMP} mypopd[7]: OK user=ann from [192.0.2.500]".encode()) is None


def _config(tmp_path: Path, rule: str, server: str = "mypopd") -> Path:
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f"""\
state_dir = "{tmp_path / "state"}"

[[source]]
path = "{tmp_path / "mail.log"}"
server = "{server}"
timezone = "UTC"
hosts = ["*"]

[[map]]
mta = "exim"
path = "{tmp_path / "relay"}"

{rule}
""",
        encoding="utf-8",
    )
    config.chmod(0o644)
    return config


def _check(config: Path, *args: str) -> tuple[int, str]:
    result = invoke(
        main, ["--config", str(config), "--now", NOW_TIME.isoformat(), "check", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('[rule.mypopd]\nprogram = "mypopd"\nmatch = "OK (?P<ip>[0-9."', "not a valid regular expression"),
        ('[rule.mypopd]\nprogram = "mypopd"\nmatch = "OK from (\\\\S+)"', "no named group 'ip'"),
        (
            '[rule.mypopd]\nprogram = "mypopd"\nmatch = "OK (?P<ip>\\\\S+) (?P<host>\\\\S+)"',
            "groups other than 'ip' and 'user'",
        ),
        ('[rule.mypopd]\nprogram = "my popd"\nmatch = "OK (?P<ip>\\\\S+)"', "not a syslog tag"),
        ('[rule.dovecot]\nprogram = "x"\nmatch = "(?P<ip>.+)"', "clashes with the built-in rule"),
        ('[rule.manual]\nprogram = "x"\nmatch = "(?P<ip>.+)"', "clashes with the built-in rule"),
    ],
)
def test_a_bad_site_rule_exits_78_naming_the_rule(tmp_path: Path, rule: str, message: str) -> None:
    name = rule.split("]", 1)[0].removeprefix("[rule.")
    code, output = _check(_config(tmp_path, rule, server="dovecot"))
    assert code == 78
    assert f"rule.{name}: " in output and message in output


def test_an_unknown_rule_name_exits_78_naming_it(tmp_path: Path) -> None:
    code, output = _check(_config(tmp_path, "", server="nosuchpopd"))
    assert code == 78
    assert "source[0].server: unknown rule 'nosuchpopd'" in output


def test_a_site_rule_grants_through_check(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "[rule.mypopd]\nprogram = \"mypopd\"\nmatch = 'OK user=(?P<user>\\S+) from \\[(?P<ip>[^]]+)\\]$'",
    )
    log = tmp_path / "mail.log"
    log.write_text(
        f"{STAMP} mypopd[7]: OK user=ann from [192.0.2.5]\n{STAMP} mypopd[7]: OK user=eve from [6.6.6.666]\n",
        encoding="utf-8",
    )
    code, output = _check(config, str(log))
    assert code == 0
    assert "2026-11-25T17:50:10+00:00 mypopd ann 192.0.2.5\n" in output
    assert output.endswith("would grant: 192.0.2.5\n")
    # By name through --server too, from the same configuration.
    code, output = _check(config, str(log), "--server", "mypopd")
    assert code == 0 and output.endswith("would grant: 192.0.2.5\n")


def test_each_built_in_rule_is_named_without_compiling_and_built_with_the_needles_it_is_named_with() -> None:
    """The configuration and the quiet run read a built-in rule's name and needles
    only; its forms are built at first use, by the module that holds them."""
    import subprocess
    import sys

    from exactcron.rules.builtin import build

    for name, rule in BUILTIN_RULES.items():
        built = build(name)  # raises when the two lists of needles differ
        assert (built.name, built.needles) == (rule.name, rule.needles)
        assert [form.pattern for form in rule.forms] == [form.pattern for form in built.forms]
        assert (rule.two_line is None) == (built.two_line is None)
        assert rule.forms or rule.two_line is not None
    named = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from exactcron.rules.builtin import BUILTIN_RULES as R; "
            "print([R[n].needles for n in R] and ' '.join(m for m in sys.modules if m.startswith('exactcron')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exactcron.rules.forms" not in named.stdout.split()
