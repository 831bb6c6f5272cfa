"""Property tests: no byte sequence breaks the parser or moves a grant.

Modest example counts keep the default suite fast; for a long run:
HYPOTHESIS_PROFILE=long python3 -m pytest tests/test_rules_properties.py
"""

from __future__ import annotations

from datetime import UTC

from hypothesis import given
from hypothesis import strategies as st

from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.grant import is_anonymous
from exactcron.rules.parser import LineParser
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

STAMP = "Nov 25 17:50:10 mail"
ADDRESS = "192.0.2.10"

SUCCESS = {
    "dovecot": f"{STAMP} dovecot: pop3-login: Login: user=<{{user}}>, method=PLAIN, rip={ADDRESS}, "
    "lip=192.0.2.1, mpid=1, session=<s>",
    "courier": f"{STAMP} imapd: LOGIN, user={{user}}, ip=[::ffff:{ADDRESS}], port=[4242], protocol=IMAP",
    "cyrus": f"{STAMP} cyrus/imap[1]: login: client.example [{ADDRESS}] {{user}} PLAIN User logged in",
    "uw-imap": f"{STAMP} imapd[1]: Login user={{user}} host=client.example [{ADDRESS}]",
    "qpopper": f'{STAMP} in.qpopper[1]: (v4.0.9) POP login by user "{{user}}" at (client.example) {ADDRESS}',
    "perdition": f"{STAMP} perdition[1]: Auth: {ADDRESS}:4242->198.51.100.9:110 client-secure=plaintext "
    'authorisation_id="{user}" authentication_id="{user}" server="pop.example:110" protocol=POP3 '
    'server-secure=plaintext status="ok"',
    "teapop": f"{STAMP} teapop[1]: Successful login for {{user}} [198.51.100.1] from client.example [{ADDRESS}]",
    "cucipop": f"{STAMP} cucipop[1]: {{user}} {ADDRESS} 1, 2 (3), 4 (5)",
    "solid-pop3d": f"{STAMP} spop3d[1]: user {{user}} authenticated - {ADDRESS}",
    "gnu-pop3d": f"{STAMP} gnu-pop3d[1]: User '{{user}}' logged in with mailbox 'box' from {ADDRESS}",
    # Today's forms, under a second name each: Dovecot 2.4, Cyrus 3.13 logfmt.
    "dovecot 2.4": f"{STAMP} dovecot: imap-login: Logged in: user=<{{user}}>, method=PLAIN, rip={ADDRESS}, "
    "lip=192.0.2.1, mpid=1, TLS, session=<s>",
    "cyrus logfmt": f"{STAMP} imaps[1]: event=login.good r.sessionid=s-1 r.clienthost=[{ADDRESS}] "
    "u.username={user} login.mech=PLAIN login.tls=1",
}

FAILURE = [
    f"{STAMP} dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<{{user}}>, "
    f"method=PLAIN, rip={ADDRESS}, lip=192.0.2.1",
    f"{STAMP} imapd-ssl: LOGIN FAILED, user={{user}}, ip=[::ffff:{ADDRESS}]",
    f"{STAMP} cyrus/imap[1]: badlogin: client.example [{ADDRESS}] plaintext {{user}} SASL(-13): "
    "authentication failure",
    f"{STAMP} imapd[1]: Login failed user={{user}} auth={{user}} host=client.example [{ADDRESS}]",
    f"{STAMP} perdition[1]: Auth: {ADDRESS}:4242->198.51.100.9:110 client-secure=plaintext "
    'authorisation_id="{user}" authentication_id="{user}" server="pop.example:110" protocol=POP3 '
    'server-secure=plaintext status="failed: Re-Authentication Failure"',
    f"{STAMP} solid-pop3d[1]: authentication failed for user {{user}} - {ADDRESS}",
    f"{STAMP} postfix/smtpd[1]: warning: unknown[{ADDRESS}]: SASL LOGIN authentication failed: {{user}}",
    f"{STAMP} dovecot: imap-login: Login aborted: Logged out (auth failed, 1 attempts in 2 secs) (auth_failed): "
    f"user=<{{user}}>, method=PLAIN, rip={ADDRESS}, lip=192.0.2.1, TLS, session=<s>",
    f"{STAMP} imaps[1]: event=login.bad r.clienthost=[{ADDRESS}] u.username={{user}} login.mech=PLAIN "
    'error="authentication failure"',
]

# User names as clients send them: any text on one line, weighted towards
# the characters the success formats use as delimiters.
USERS = st.lists(
    st.one_of(
        st.sampled_from([*"<>[](),;:=\"' .-@/\\|+%", "6.6.6.6", "rip=", "ip=[", "host=", " from "]),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    ),
    max_size=60,
).map("".join)


def parser() -> LineParser:
    return LineParser(tuple(BUILTIN_RULES.values()), TimestampParser(NOW_TIME, UTC))


@given(st.binary(max_size=400))
def test_the_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    parser().parse(data)
    parser().parse(f"{STAMP} imapd[1]: ".encode() + data)


@given(st.sampled_from(FAILURE), USERS)
def test_a_failure_line_with_any_user_name_grants_nothing(template: str, user: str) -> None:
    assert parser().parse(template.format(user=user).encode()) is None


@given(st.sampled_from(sorted(SUCCESS)), USERS)
def test_a_success_line_with_any_user_name_grants_exactly_its_own_address(server: str, user: str) -> None:
    login = parser().parse(SUCCESS[server].format(user=user).encode())
    # Some rules refuse a user name that breaks their format (a Cyrus name
    # with no word after it); none may grant any other address.
    if login is not None:
        assert login.address == ADDRESS
        assert login.server == server.split(" ")[0]


@given(
    st.sampled_from(sorted(SUCCESS)),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._@-", min_size=1, max_size=64).filter(
        lambda user: not is_anonymous(user)  # an anonymous login authenticates nobody
    ),
)
def test_an_ordinary_user_name_is_always_granted(server: str, user: str) -> None:
    login = parser().parse(SUCCESS[server].format(user=user).encode())
    assert login is not None and login.address == ADDRESS
