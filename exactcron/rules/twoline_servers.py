"""The built-in servers that log the client's address and the successful login
on two lines of one process (rules/pairing.py pairs them), as data.

Behind tcpd (inetd), tcp_wrappers writes the connect line under the
server's own tag and PID; each server's own lines follow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from exactcron.rules.forms import DNS_NAME, IP, Form, Phrase, TwoLine
from exactcron.rules.rule import Rule


def _phrase(pattern: str) -> Phrase:
    return Phrase(re.compile(pattern, re.ASCII | re.DOTALL))


def _two_line(
    programs: Iterable[str], connects: Iterable[Phrase], successes: Iterable[Phrase], ends: Iterable[Phrase]
) -> TwoLine:
    return TwoLine(frozenset(programs), tuple(connects), tuple(successes), tuple(ends))


# tcp_wrappers (tcpd, run from inetd) logs the connection under the
# server's own tag and PID, as tcpd then execs the server:
# `connect from NAME (ADDR)` (Debian's tcpd: NAME is the reverse name, or
# the address again), `connect from ADDR`, with an ident lookup
# `USER@NAME (ADDR)`. NAME and USER come from the client's side: they may
# hold no space or parenthesis, so the address is the one tcpd wrote, at the
# end. A refused connection (`refused connect from ...`) starts no server,
# and a connect line of any other shape names no address tcpd wrote: each
# ends whatever session the PID had.
def _tcpd_connects() -> tuple[Phrase, ...]:
    return (
        _phrase(rf"connect from {DNS_NAME} \((?P<ip>{IP})\)"),
        _phrase(rf"connect from (?P<ip>{IP})"),
    )


def _tcpd_other() -> Phrase:
    return _phrase(r"(?:refused )?connect from .*")


_TCPD_NEEDLES = (b"connect from ",)


# popa3d (Openwall): the child serving a connection logs `Session from
# ADDR` in standalone mode (-D; inet_ntoa, IPv4 only); from inetd it logs
# no address, and tcpd's line stands before. Then `Authentication passed
# for USER` (USER@DOMAIN with virtual domains) or `Authentication failed
# for USER` / `... for UNKNOWN USER` / `Didn't attempt authentication`,
# after which the process exits; a session that logged in ends with
# `N (N) deleted, N (N) left`, `Premature disconnect` or `Connection timed
# out`. One authentication per process: its success ends the session.
def popa3d() -> Rule:
    return Rule(
        name="popa3d",
        needles=(
            b"Session from ",
            *_TCPD_NEEDLES,
            b"Authentication ",
            b"Didn't attempt authentication",
            b") deleted, ",
            b"Premature disconnect",
            b"Connection timed out",
        ),
        forms=(),
        two_line=_two_line(
            {"popa3d"},
            connects=(_phrase(rf"Session from (?P<ip>{IP})"), *_tcpd_connects()),
            successes=(_phrase(r"Authentication passed for (?P<user>[^\s]{1,255})"),),
            ends=(
                _tcpd_other(),
                _phrase(r"Session from .*"),
                _phrase(r"Authentication failed for .*"),
                _phrase(r"Didn't attempt authentication"),
                _phrase(r"\d{1,10} \(\d{1,20}\) deleted, \d{1,10} \(\d{1,20}\) left"),
                _phrase(r"Premature disconnect|Connection timed out"),
            ),
        ),
    )


# GNU pop3d (mailutils). Before 2.0, one line: `User 'U' logged in with
# mailbox 'M' from ADDR`. From 2.0 on the login names no address:
# ``user `U' logged in with mailbox `URL' (N messages)`` (ngettext: `1
# message`), and behind tcpd the connect line stands before it under the
# same tag and PID. A failed PASS (``user `U': authentication failed``,
# ``user `U' nonexistent``) leaves the session open, so a later PASS may
# still succeed and pair; `session ended for no user` (or `for user: U`)
# and a refused connection end it.
# With `logging { session-id yes; }`, mailutils puts the session's ID (8 of
# [0-9A-Za-z], mu_sid) before every message of a session; pop3d as a daemon
# (not from inetd) then logs the connection in the listener, whose PID is not
# the child's, through an ACL `log` statement (the manual's `log from any
# "Connect from ${address}";`), and the login in the child: the two pair by
# that ID. A login line with an ID pairs by it alone, never by its PID.
_MU_SESSION = r"(?P<session>[0-9A-Za-z]{8}) "
_MU_LOGIN = r"user `(?P<user>[^\s`']{1,255})' logged in with mailbox `[^`]*' \(\d{1,12} messages?\)"


def gnu_pop3d() -> Rule:
    return Rule(
        name="gnu-pop3d",
        needles=(
            b"' logged in with mailbox '",
            b"' logged in with mailbox `",
            *_TCPD_NEEDLES,
            b"session ended for ",
            b" Connect from ",
        ),
        forms=(
            Form(
                frozenset({"gnu-pop3d", "pop3d"}),
                re.compile(
                    rf"User '(?P<user>.*)' logged in with mailbox '.*' from (?P<ip>{IP})",
                    re.ASCII | re.DOTALL,
                ),
            ),
        ),
        two_line=_two_line(
            {"gnu-pop3d", "pop3d"},
            connects=(*_tcpd_connects(), _phrase(rf"{_MU_SESSION}Connect from (?P<ip>{IP})")),
            successes=(_phrase(_MU_LOGIN), _phrase(_MU_SESSION + _MU_LOGIN)),
            ends=(
                _tcpd_other(),
                _phrase(r"session ended for .*"),
                _phrase(rf"{_MU_SESSION}(?:session ended for .*|Connect from .*)"),
            ),
        ),
    )


# vm-pop3d (a fork of GNU pop3d 0.9): older releases log `Connect from
# ADDR` in the child, later `User 'U' logged in`; a failed PASS leaves the
# session open. 1.1 logs the address on the login line itself: `User 'U'
# logged in from ADDR, nmsgs=N` (then `Session ended for user: 'U' from
# ADDR, ...`), read as one line.
def vm_pop3d() -> Rule:
    return Rule(
        name="vm-pop3d",
        needles=(b"onnect from ", b"' logged in"),
        forms=(
            Form(
                frozenset({"vm-pop3d"}),
                re.compile(
                    rf"User '(?P<user>[^\s']{{1,255}})' logged in from (?P<ip>{IP}), nmsgs=\d+", re.ASCII
                ),
            ),
        ),
        two_line=_two_line(
            {"vm-pop3d"},
            connects=(_phrase(rf"Connect from (?P<ip>{IP})"), *_tcpd_connects()),
            successes=(_phrase(r"User '(?P<user>[^\s']{1,255})' logged in"),),
            ends=(_tcpd_other(), _phrase(r"Connect from .*")),
        ),
    )
