"""Realistic mail logs for the benchmarks, written fast and deterministically.

A line is an RFC 3339 stamp (as Debian's rsyslog writes it) followed by a
body drawn from a pool of pre-rendered bodies: Postfix smtpd, cleanup, qmgr,
smtp and local lines, Dovecot and Courier logins (successes and failures),
and the other daemons that share a mail log (cron, sshd, amavis, spamd,
opendkim, postgrey). Building each body once and stamping it per line keeps
the 5,000,000-line log at a few seconds to write.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

# Bump when the content changes: cached logs of another version are rebuilt.
VERSION = 1
POOL_SIZE = 1 << 16
SERVER_V4 = "192.0.2.1"
SERVER_V6 = "2001:db8::1"

Body = Callable[[random.Random, list[str], list[str]], str]


def _queue_id(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789ABCDEF", k=10))


def _session(rng: random.Random) -> str:
    return "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=16))


def _pid(rng: random.Random) -> int:
    return rng.randrange(1000, 99999)


def _remote(rng: random.Random) -> str:
    """A stranger's address (MX peers, spammers): never a POP/IMAP client."""
    return f"203.0.{rng.randrange(113, 120)}.{rng.randrange(1, 255)}"


def _smtpd_connect(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"postfix/smtpd[{_pid(rng)}]: connect from unknown[{_remote(rng)}]"


def _smtpd_client(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"postfix/smtpd[{_pid(rng)}]: {_queue_id(rng)}: client=mx{rng.randrange(1, 9)}.example.net[{_remote(rng)}]"


def _smtpd_disconnect(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"postfix/smtpd[{_pid(rng)}]: disconnect from unknown[{_remote(rng)}] "
        "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
    )


def _smtpd_reject(rng: random.Random, clients: list[str], users: list[str]) -> str:
    remote = _remote(rng)
    return (
        f"postfix/smtpd[{_pid(rng)}]: NOQUEUE: reject: RCPT from unknown[{remote}]: 554 5.7.1 "
        f"<x{rng.randrange(999)}@example.com>: Relay access denied; from=<spam@example.org> "
        f"to=<x@example.com> proto=ESMTP helo=<{remote}>"
    )


def _smtpd_hostile_helo(rng: random.Random, clients: list[str], users: list[str]) -> str:
    # An attacker's HELO imitating a Dovecot success: it carries the needle,
    # so it reaches the full parse and must grant nothing.
    return (
        f"postfix/smtpd[{_pid(rng)}]: NOQUEUE: reject: RCPT from unknown[{_remote(rng)}]: 450 4.7.1 "
        "<x@example.com>: Helo command rejected: Host not found; from=<a@example.org> to=<x@example.com> "
        "proto=ESMTP helo=<imap-login: Login: user=<x>, method=PLAIN, rip=198.18.0.66, lip=192.0.2.1>"
    )


def _sasl_failed(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"postfix/smtpd[{_pid(rng)}]: warning: unknown[{_remote(rng)}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"


def _cleanup(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"postfix/cleanup[{_pid(rng)}]: {_queue_id(rng)}: "
        f"message-id=<{_session(rng)}@mail{rng.randrange(1, 50)}.example.org>"
    )


def _qmgr_from(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"postfix/qmgr[{_pid(rng)}]: {_queue_id(rng)}: from=<{rng.choice(users)}@example.org>, "
        f"size={rng.randrange(800, 90000)}, nrcpt=1 (queue active)"
    )


def _qmgr_removed(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"postfix/qmgr[{_pid(rng)}]: {_queue_id(rng)}: removed"


def _smtp_sent(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"postfix/smtp[{_pid(rng)}]: {_queue_id(rng)}: to=<friend{rng.randrange(999)}@example.com>, "
        f"relay=mx.example.com[{_remote(rng)}]:25, delay=0.{rng.randrange(10, 99)}, "
        "delays=0.1/0/0.2/0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 4XyZ1234)"
    )


def _local_sent(rng: random.Random, clients: list[str], users: list[str]) -> str:
    user = rng.choice(users)
    return (
        f"postfix/local[{_pid(rng)}]: {_queue_id(rng)}: to=<{user}@example.org>, relay=local, "
        f"delay=0.0{rng.randrange(1, 9)}, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)"
    )


def _dovecot_login(rng: random.Random, clients: list[str], users: list[str]) -> str:
    service = rng.choice(("imap", "imap", "pop3"))
    client = rng.choice(clients)
    local = SERVER_V6 if ":" in client else SERVER_V4
    return (
        f"dovecot: {service}-login: Login: user=<{rng.choice(users)}>, method=PLAIN, rip={client}, "
        f"lip={local}, mpid={_pid(rng)}, TLS, session=<{_session(rng)}>"
    )


def _dovecot_failed(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"dovecot: {rng.choice(('imap', 'pop3'))}-login: Disconnected: Connection closed "
        f"(auth failed, 1 attempts in 2 secs): user=<{rng.choice(users)}>, method=PLAIN, "
        f"rip={_remote(rng)}, lip={SERVER_V4}, TLS, session=<{_session(rng)}>"
    )


def _dovecot_aborted(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        "dovecot: imap-login: Login aborted: Connection closed (auth failed, 3 attempts in 16 secs) "
        f"(auth_failed): user=<{rng.choice(users)}>, method=PLAIN, rip={_remote(rng)}, lip={SERVER_V4}, "
        f"TLS, session=<{_session(rng)}>"
    )


def _dovecot_logout(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"dovecot: imap({rng.choice(users)})<{_pid(rng)}><{_session(rng)}>: Logged out "
        f"in={rng.randrange(50, 900)} out={rng.randrange(500, 90000)} deleted=0 expunged=0 trashed=0 "
        "hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0"
    )


def _dovecot_auth_failed(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"dovecot: auth-worker({_pid(rng)}): pam({rng.choice(users)},{_remote(rng)},<{_session(rng)}>): "
        "pam_authenticate() failed: Authentication failure (password mismatch?)"
    )


def _courier_login(rng: random.Random, clients: list[str], users: list[str]) -> str:
    client = rng.choice(clients)
    shown = client if ":" in client else f"::ffff:{client}"
    program, protocol = rng.choice((("courierpop3login", "POP3"), ("imapd", "IMAP")))
    return f"{program}: LOGIN, user={rng.choice(users)}, ip=[{shown}], port=[{rng.randrange(1024, 65535)}], protocol={protocol}"


def _courier_failed(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"courierpop3login: LOGIN FAILED, user={rng.choice(users)}, ip=[::ffff:{_remote(rng)}]"


def _courier_logout(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"imapd: LOGOUT, user={rng.choice(users)}, ip=[::ffff:{rng.choice(clients)}], headers=0, body=0, "
        f"rcvd={rng.randrange(50, 900)}, sent={rng.randrange(500, 90000)}, time={rng.randrange(1, 600)}"
    )


def _cron(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"CRON[{_pid(rng)}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)"


def _sshd(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"sshd[{_pid(rng)}]: Failed password for invalid user admin from {_remote(rng)} port {rng.randrange(1024, 65535)} ssh2"


def _amavis(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"amavis[{_pid(rng)}]: ({_pid(rng)}-01) Passed CLEAN {{RelayedInbound}}, [{_remote(rng)}]:"
        f"{rng.randrange(1024, 65535)} <news@example.com> -> <{rng.choice(users)}@example.org>, "
        f"Queue-ID: {_queue_id(rng)}, Message-ID: <{_session(rng)}@example.com>, mail_id: {_session(rng)}, "
        f"Hits: -1.{rng.randrange(10, 99)}, size: {rng.randrange(800, 90000)}, {rng.randrange(100, 2000)} ms"
    )


def _spamd(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"spamd[{_pid(rng)}]: spamd: result: . -1 - ALL_TRUSTED,DKIM_SIGNED scantime=0.2,"
        f"size={rng.randrange(800, 90000)},user={rng.choice(users)},uid=1000,required_score=5.0"
    )


def _opendkim(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return f"opendkim[{_pid(rng)}]: {_queue_id(rng)}: DKIM-Signature field added (s=mail, d=example.org)"


def _postgrey(rng: random.Random, clients: list[str], users: list[str]) -> str:
    return (
        f"postgrey[{_pid(rng)}]: action=pass, reason=triplet found, client_name=unknown, "
        f"client_address={_remote(rng)}, sender=a@example.com, recipient={rng.choice(users)}@example.org"
    )


# Shares of a busy provider's mail log: Postfix most of it, about one line in
# eleven a POP/IMAP success.
MIX: tuple[tuple[Body, int], ...] = (
    (_smtpd_connect, 90),
    (_smtpd_client, 60),
    (_smtpd_disconnect, 90),
    (_smtpd_reject, 40),
    (_smtpd_hostile_helo, 2),
    (_sasl_failed, 15),
    (_cleanup, 60),
    (_qmgr_from, 60),
    (_qmgr_removed, 60),
    (_smtp_sent, 40),
    (_local_sent, 25),
    (_dovecot_login, 70),
    (_dovecot_failed, 15),
    (_dovecot_aborted, 5),
    (_dovecot_logout, 60),
    (_dovecot_auth_failed, 10),
    (_courier_login, 20),
    (_courier_failed, 5),
    (_courier_logout, 20),
    (_cron, 10),
    (_sshd, 20),
    (_amavis, 40),
    (_spamd, 30),
    (_opendkim, 30),
    (_postgrey, 30),
)


def client_addresses(count: int) -> list[str]:
    """Distinct POP/IMAP client addresses; about one in eight is IPv6."""
    addresses = []
    for index in range(count):
        if index % 8 == 7:
            addresses.append(f"2001:db8:{index >> 16:x}:{index & 0xFFFF:x}::17")
        else:
            addresses.append(f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}")
    return addresses


def body_pool(seed: int, clients: list[str], users: list[str]) -> list[str]:
    rng = random.Random(seed)
    makers = [maker for maker, _ in MIX]
    weights = [weight for _, weight in MIX]
    return [maker(rng, clients, users) for maker in rng.choices(makers, weights, k=POOL_SIZE)]


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _stamped(start: datetime, span: timedelta, count: int, host: str = "mail") -> Iterator[list[str]]:
    """Per second of the span, the stamp prefixes of the lines logged in it."""
    seconds = max(int(span.total_seconds()), 1)
    rate = count / seconds
    done = 0
    for second in range(seconds):
        upto = count if second == seconds - 1 else int((second + 1) * rate)
        here = upto - done
        if here <= 0:
            continue
        head = (start + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%S")
        step = 999_000 // here
        yield [f"{head}.{index * step + 1:06d}+00:00 {host} " for index in range(here)]
        done = upto


def write_mixed_log(path: Path, lines: int, end: datetime, span: timedelta, clients: int, seed: int) -> None:
    """A log of `lines` lines spread evenly over `span`, ending just before `end`."""
    users = [f"user{index}" for index in range(max(clients, 1))]
    pool = body_pool(seed, client_addresses(clients), users)
    mask = POOL_SIZE - 1
    rng = random.Random(seed + 1)
    offset = rng.randrange(POOL_SIZE)
    temporary = path.with_name(path.name + ".partial")
    written = 0
    with temporary.open("w", encoding="ascii", buffering=1 << 22) as stream:
        for prefixes in _stamped(end - span, span, lines):
            base = offset + written
            stream.write(
                "".join(f"{prefix}{pool[(base + index) & mask]}\n" for index, prefix in enumerate(prefixes))
            )
            written += len(prefixes)
            # Walk the pool from a new place now and then, so that the same
            # run of bodies does not repeat with a fixed period.
            if written % 4096 < len(prefixes):
                offset = rng.randrange(POOL_SIZE)
    temporary.replace(path)


def write_login_log(path: Path, addresses: list[str], end: datetime, span: timedelta) -> None:
    """One Dovecot success per address, in order, spread over `span` before `end`."""
    rng = random.Random(7)
    temporary = path.with_name(path.name + ".partial")
    step = span / max(len(addresses), 1)
    start = end - span
    with temporary.open("w", encoding="ascii", buffering=1 << 22) as stream:
        for index, address in enumerate(addresses):
            stream.write(login_line(start + step * index, address, f"user{index}", rng))
    temporary.replace(path)


def login_line(moment: datetime, address: str, user: str, rng: random.Random | None = None) -> str:
    rng = rng or random.Random(0)
    local = SERVER_V6 if ":" in address else SERVER_V4
    return (
        f"{stamp(moment)} mail dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={address}, "
        f"lip={local}, mpid={_pid(rng)}, TLS, session=<{_session(rng)}>\n"
    )


def write_sparse_login_log(
    path: Path, lines: int, end: datetime, span: timedelta, addresses: list[str], every: int, seed: int
) -> None:
    """A mixed log whose every `every`-th line is a Dovecot success, from `addresses` in turn.

    The other lines come from the mixed pool without its POP/IMAP successes,
    so the share of logins and the number of distinct addresses are exact.
    """
    users = [f"user{index}" for index in range(len(addresses))]
    rng = random.Random(seed)
    pool = [
        body
        for body in body_pool(seed, addresses, users)
        if "Login: user=<" not in body and "LOGIN, user=" not in body
    ]
    temporary = path.with_name(path.name + ".partial")
    written = 0
    with temporary.open("w", encoding="ascii", buffering=1 << 22) as stream:
        for prefixes in _stamped(end - span, span, lines):
            parts = []
            for prefix in prefixes:
                if written % every == every - 1:
                    index = written // every % len(addresses)
                    address = addresses[index]
                    local = SERVER_V6 if ":" in address else SERVER_V4
                    body = (
                        f"dovecot: imap-login: Login: user=<{users[index]}>, method=PLAIN, rip={address}, "
                        f"lip={local}, mpid={_pid(rng)}, TLS, session=<{_session(rng)}>"
                    )
                else:
                    body = pool[written % len(pool)]
                parts.append(f"{prefix}{body}\n")
                written += 1
            stream.write("".join(parts))
    temporary.replace(path)
