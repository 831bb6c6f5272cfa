"""The built-in servers that log a login on one line, as data: each one's
name, needles, tags and success lines (those that log the address and the
login on two lines: twoline_servers.py). builtin.py names them all, and
builds one only when a run reads lines with it.

The grammar they share (the address and host-name shapes, Dovecot's fields,
Cyrus's logfmt) is in forms.py; LineParser (parser.py) runs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from exactcron.rules.forms import (
    DNS_NAME,
    DOVECOT_FAST_LOGIN,
    DOVECOT_LOGIN,
    IP,
    IP_BYTES,
    FieldReader,
    Fields,
    Form,
    cyrus_classic_fields,
    cyrus_logfmt_fields,
    dovecot_fields,
)
from exactcron.rules.rule import Rule


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


def dovecot() -> Rule:
    return Rule(
        name="dovecot",
        needles=(b"Login: ", b"Logged in: "),
        forms=(
            # Through syslog and the journal: `dovecot: imap-login: Login: ...`
            # (with or without `Info: `); 2.4: `... Logged in: ...`; 1.x's own
            # log file: `dovecot: STAMP Info: pop3-login: Login: ...`.
            _form(
                {"dovecot"},
                rf"(?:Info: )?(?:imap|pop3)-login: {DOVECOT_LOGIN}",
                read=dovecot_fields,
                fast=rb"(?:Info: )?(?:imap|pop3)-login: " + DOVECOT_FAST_LOGIN,
            ),
            # Dovecot's own log_path/info_log_path file, and 1.x syslog tags:
            # `pop3-login: Info: Login: ...`, `imap-login: Info: Logged in: ...`.
            _form({"imap-login", "pop3-login"}, DOVECOT_LOGIN, read=dovecot_fields, fast=DOVECOT_FAST_LOGIN),
        ),
    )


# Courier: `LOGIN, user=U, ip=[ADDR]`, then fields Courier writes itself
# (`port=[P]`, `protocol=IMAP`, `stls=1`, `starttls=1`). Failures begin
# `LOGIN FAILED,`. The trailing fields cannot hold `[`, so the address is
# the last bracketed `ip=` of the line, whatever the user name imitates.
def courier() -> Rule:
    return Rule(
        name="courier",
        needles=(b"LOGIN, user=",),
        forms=(
            _form(
                (),
                rf"LOGIN, user=(?P<user>.*), ip=\[(?P<ip>{IP})\]"
                r"(?:, port=\[\d{1,5}\])?(?:, [a-z]{1,16}=[A-Za-z0-9_.\-]{0,64})*",
                r"(?:courier-?)?(?:pop3|imap)(?:d|d-ssl|login)",
            ),
        ),
    )


# The tag of a Cyrus service: its name from cyrus.conf, optionally behind a configured `PREFIX/`.
_CYRUS_SERVICE = r"(?:[A-Za-z0-9_.\-]{1,64}/)?(?:imap|pop3|pop|proxy)[A-Za-z0-9_\-]{0,32}"


def cyrus() -> Rule:
    return Rule(
        name="cyrus",
        needles=(b"login: ", b"event=login.good "),
        forms=(
            _form(
                (),
                rf"login: (?:{DNS_NAME} )?\[(?P<ip>{IP})\] (?P<user>.+?)(?: \(proxy\))?"
                r" (?P<mech>[A-Za-z0-9_\-]{1,40})(?:\+TLS)?(?: .*)?",
                _CYRUS_SERVICE,
                read=cyrus_classic_fields,
                # One word of user, a mechanism that is not ANONYMOUS.
                fast=rb"login: (?:[^\s\[\]()]{1,255} )?\[(?P<ip>" + IP_BYTES + rb")\] (?P<user>[^ ]{1,255})"
                rb" (?!(?i:anonymous)(?:\+TLS)?(?: |$))[A-Za-z0-9_\-]{1,40}(?:\+TLS)?"
                rb"(?: User logged in(?: SESSIONID=<[!-=?-~]{1,128}>)?)?",
            ),
            _form((), r"event=login\.good .*", _CYRUS_SERVICE, read=cyrus_logfmt_fields),
        ),
    )


# UW imapd/ipop3d: `Login user=U host=NAME [ADDR]` (NAME absent without
# reverse DNS), also `Authenticated`, and ipop3d's `Auth`/`APOP` with a
# trailing `nmsgs=N/M`. NAME is attacker-chosen (reverse DNS) and is never
# read; the address is the bracket that ends the line. UW cuts user and
# host at 80 characters each: a cut host loses its `]` first and then
# matches nothing.
def uw_imap() -> Rule:
    return Rule(
        name="uw-imap",
        needles=(b" user=",),
        forms=(
            _form(
                (),
                rf"(?:Login|Authenticated|Auth|APOP) user=(?P<user>.*) host=(?:{DNS_NAME} )?"
                rf"\[(?P<ip>{IP})\](?: nmsgs=\d+/\d+)?",
                r"(?:imap|ipop[23])s?d",
            ),
        ),
    )


# Qpopper (LOG_LOGIN): `(vX) POP login by user "U" at (HOST) ADDR`, plus a
# `[file.c:line]` suffix in some builds. The user may hold quotes; the
# address is anchored to the end. Also UIUC popper with the HMS patch:
# `(USER,ADDR) Authenticated.`.
def qpopper() -> Rule:
    return Rule(
        name="qpopper",
        needles=(b"POP login by user ", b") Authenticated."),
        forms=(
            _form(
                (),
                rf"\(v[A-Za-z0-9_.\-]{{1,32}}\) POP login by user \"(?P<user>.*)\" at \((?:{DNS_NAME})?\) "
                rf"(?P<ip>{IP})(?: \[[A-Za-z0-9_.\-]{{1,64}}:\d{{1,6}}\])?",
                r"(?:in\.)?q?popper",
            ),
            _form({"popper"}, rf"\((?P<user>.*),(?P<ip>{IP})\) Authenticated\."),
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


def perdition() -> Rule:
    return Rule(
        name="perdition",
        needles=(b"Auth: ",),
        forms=(
            _form(
                (),
                rf"Auth: (?P<ip>{IP}):\d{{1,5}}->{IP}:\d{{1,5}} client-secure=[a-z]{{1,16}} "
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
def teapop() -> Rule:
    return Rule(
        name="teapop",
        needles=(b"Successful login for ",),
        forms=(
            _form(
                {"teapop"},
                rf"Successful login for (?P<user>.*) \[{IP}\] from (?:{DNS_NAME} )?\[(?P<ip>{IP})\]",
            ),
        ),
    )


# cucipop: `USER ADDR N, N (N), N (N)` (session counters, logged after a
# successful session). Known only from pop-before-smtp's sample; the
# counters anchor the address to the end.
def cucipop() -> Rule:
    return Rule(
        name="cucipop",
        needles=(b"cucipop",),
        forms=(_form({"cucipop"}, rf"(?P<user>.+) (?P<ip>{IP}) \d+, \d+ \(\d+\), \d+ \(\d+\)"),),
    )


# solid-pop3d built with --enable-logextend: `user U authenticated - HOST`,
# where HOST is `NAME (ADDR)` when the address has a reverse name and `ADDR`
# when not (main.c: `"%.256s (%.100s)"`, h_name then the address). NAME is
# the client's reverse DNS: it is never read, must end at the space before
# `(`, and holds no space or parenthesis, so the address granted is the one
# in the parentheses that end the line, whatever NAME imitates. Failures
# read `authentication failed ... - HOST`.
def _solid_pop3d_fields(found: re.Match[str]) -> Fields:
    return found.group("user"), found.group("ip") or found.group("bare"), None


def solid_pop3d() -> Rule:
    return Rule(
        name="solid-pop3d",
        needles=(b" authenticated - ",),
        forms=(
            _form(
                {"spop3d", "solid-pop3d"},
                rf"user (?P<user>.*) authenticated - (?:{DNS_NAME} \((?P<ip>{IP})\)|(?P<bare>{IP}))",
                read=_solid_pop3d_fields,
            ),
        ),
    )


# vpopmail's vchkpw (qmail-popup's checkpassword), syslog tag `vpopmail`
# (LOG_NAME). 5.4 names the service by the local port: `vchkpw-pop3`,
# `-pop3s`, `-imap`, `-imaps`, `-smtp`, `-smtps`, `-submission`,
# `-webmail` (a POP/IMAP login from 127.0.0.1) or `-PORT`, and logs
# `SERVICE: (PLAIN|APOP|CRAM-MD5) login success USER@DOMAIN:ADDR`, or for a
# /etc/passwd user `SERVICE: system password login success USER:ADDR`.
# Only POP and IMAP logins grant: an SMTP AUTH client relays through its own
# authenticated session and needs no lease (vchkpw's own roaming-users relay
# skips SMTP too), webmail is the server itself, and `vchkpw-PORT` may be any
# of the three. 5.0-5.3 log `vchkpw: login success USER@DOMAIN:ADDR` (vchkpw
# then served POP only), 4.x `vchkpw: login [USER] from ADDR`.
# Failure lines (`password fail (pass: 'PASSWORD') ...`, 5.0's unquoted
# `password fail PASSWORD ...`, `vpopmail user not found ...`, `invalid
# user/domain characters NAME:ADDR`) carry the client's text; every form
# here is anchored at the start of the message on a fixed phrase no failure
# line begins with. USER and DOMAIN hold no `@` (parse_email cuts at the
# first) and DOMAIN no `:` (is_domain_valid), so the address is what follows
# the first colon after the `@`, also for an IPv6 address.
_VCHKPW_SERVICE = r"vchkpw-(?:pop3|pop3s|imap|imaps)"
_VPOPMAIL_USER = r"[^\s@]{1,255}@[^\s@:]{0,255}"


def vpopmail() -> Rule:
    return Rule(
        name="vpopmail",
        needles=(b" login success ", b"vchkpw: login ["),
        forms=(
            _form(
                {"vpopmail"},
                rf"{_VCHKPW_SERVICE}: \([A-Z0-9\-]{{1,14}}\) login success (?P<user>{_VPOPMAIL_USER}):(?P<ip>{IP})",
            ),
            _form(
                {"vpopmail"},
                rf"{_VCHKPW_SERVICE}: system password login success (?P<user>[^\s@:]{{1,255}}):(?P<ip>{IP})",
            ),
            _form({"vpopmail"}, rf"vchkpw: login success (?P<user>{_VPOPMAIL_USER}):(?P<ip>{IP})"),
            _form({"vpopmail"}, rf"vchkpw: login \[(?P<user>[^\s\[\]]{{1,255}})\] from (?P<ip>{IP})"),
        ),
    )
