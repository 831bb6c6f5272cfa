"""A generated month for `exactcron report`: an audit trail and a Postfix log, rotated and compressed.

`write_month(folder, users, postfix_lines)` writes
- `exactcron.log` and its weekly copies (`.1`, `.2.gz`, ...): grant, extend,
  expire, flush, add and refuse events as exactcron writes them
  (outputs/audit.py's own formatter), between run lines;
- `mail.log` and its daily copies (`.1`, `.2.gz`, ...): Postfix's smtpd
  `client=` lines (with and without `sasl_method=..., sasl_username=...`)
  among cleanup, qmgr, smtp and postscreen lines, traditional syslog stamps
  (UTC), each file's mtime its last line's time, as logrotate leaves it.

Messages are mixed: relayed through a lease (no SASL), sent with SMTP AUTH
from a leased address, with SMTP AUTH from elsewhere (a user name in
another case, or a SASL-only user), and inbound mail, some of it from a
user's address outside its leases. Each address belongs to one user and its
leases never overlap, so a simple reference (tests/test_report.py) can
recompute every count from the files alone.

Also run by benchmarks/report.py at full size (10,000 users, 1,000,000 lines).
"""

from __future__ import annotations

import gzip
import os
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from exactcron.outputs.audit import line as audit_line
from exactcron.outputs.audit import utc_stamp
from tests.support.clock import NOW_TIME as NOW

DAYS = 30
TIMEOUT = timedelta(minutes=30)
LINES_PER_MESSAGE = 5  # client=, cleanup, qmgr from=, smtp to=, qmgr removed


@dataclass
class Session:
    user: str
    address: str
    start: datetime
    end: datetime  # the expire or flush event's stamp


def user_name(number: int) -> str:
    # Some names with a domain, some in another case than their SASL name.
    if number % 7 == 0:
        return f"User{number}@Example.org"
    return f"u{number}"


def user_addresses(number: int) -> list[str]:
    count = 1 + number % 3
    return [f"10.{(number >> 8) & 255}.{number & 255}.{index + 1}" for index in range(count)]


def write_month(folder: Path, users: int, postfix_lines: int, seed: int = 21) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    chance = random.Random(seed)
    start = NOW - timedelta(days=DAYS)
    sessions, events = _sessions(chance, users, start)
    _write_rotated(folder / "exactcron.log", events, days_per_file=7)
    lines = _postfix(chance, users, sessions, postfix_lines, start)
    _write_rotated(folder / "mail.log", lines, days_per_file=1)


def write_month_site(folder: Path, users: int, postfix_lines: int) -> None:
    """The month, an empty Dovecot log and a configuration with an audit trail that reads them."""
    write_month(folder, users, postfix_lines)
    (folder / "dovecot.log").touch()
    (folder / "exactcron.toml").write_text(
        f'state_dir = "{folder / "state"}"\nlog_file = "{folder / "exactcron.log"}"\n'
        f'[[source]]\npath = "{folder / "dovecot.log"}"\nserver = "dovecot"\ntimezone = "UTC"\n'
        f'[[map]]\nmta = "postfix"\npath = "{folder / "state" / "relay"}"\ntype = "texthash"\n'
    )


def _sessions(
    chance: random.Random, users: int, start: datetime
) -> tuple[list[Session], list[tuple[datetime, str]]]:
    sessions: list[Session] = []
    events: list[tuple[datetime, str]] = []
    source = "/var/log/mail.log"
    for number in range(users):
        name = user_name(number)
        if number % 10 == 9:
            continue  # a SASL-only user: never logs in by POP
        for address in user_addresses(number):
            moment = start + timedelta(seconds=chance.randrange(3600))
            while True:
                moment += timedelta(seconds=chance.randrange(3600, 4 * 86400))
                if moment >= NOW:
                    break
                logins = chance.randrange(1, 5)
                until = moment + TIMEOUT
                events.append(
                    (
                        moment,
                        audit_line(
                            moment, "grant", address, user=name, until=utc_stamp(until), source=source
                        ),
                    )
                )
                last = moment
                for _ in range(logins - 1):
                    last = last + timedelta(seconds=chance.randrange(60, 1500))
                    until = last + TIMEOUT
                    events.append(
                        (
                            last,
                            audit_line(
                                last, "extend", address, user=name, until=utc_stamp(until), source=source
                            ),
                        )
                    )
                if chance.random() < 0.1:
                    end = last + timedelta(seconds=chance.randrange(30, 1500))
                    events.append((end, audit_line(end, "flush", address, user=name, by="root")))
                else:
                    end = until + timedelta(seconds=chance.randrange(0, 60))
                    events.append(
                        (end, audit_line(end, "expire", address, user=name, until=utc_stamp(until)))
                    )
                sessions.append(Session(name, address, moment, end))
                moment = end
                if chance.random() < 0.02:
                    refused = moment + timedelta(seconds=1)
                    reason = "max-addresses" if chance.random() < 0.5 else "shared"
                    events.append(
                        (
                            refused,
                            audit_line(
                                refused, "refuse", "100.64.0.1", user=name, reason=reason, source=source
                            ),
                        )
                    )
    for hour in range(DAYS * 24):
        run = start + timedelta(hours=hour, seconds=1)
        events.append((run, f"{utc_stamp(run)} exactcron[{4000 + hour}]: INFO: read 12 lines, 1 login"))
    events.sort(key=lambda event: event[0])
    sessions.sort(key=lambda session: session.start)
    return sessions, events


def _postfix(
    chance: random.Random, users: int, sessions: list[Session], lines: int, start: datetime
) -> list[tuple[datetime, str]]:
    written: list[tuple[datetime, str]] = []
    span = int((NOW - start).total_seconds()) - 1
    for index in range(lines // LINES_PER_MESSAGE):
        kind = chance.random()
        sasl = None
        if kind < 0.55:
            session = chance.choice(sessions)
            seconds = max(int((session.end - session.start).total_seconds()), 1)
            time = session.start + timedelta(seconds=chance.randrange(seconds))
            address = session.address
            if kind >= 0.4:
                sasl = session.user.lower() if chance.random() < 0.5 else session.user
        elif kind < 0.75:
            time = start + timedelta(seconds=chance.randrange(span))
            number = chance.randrange(users)
            address = f"203.0.113.{number % 250 + 1}"
            sasl = user_name(number).lower() if number % 3 == 0 else user_name(number)
        elif kind < 0.85:
            # A user's own address, at any time: relayed only while a lease was in force.
            time = start + timedelta(seconds=chance.randrange(span))
            address = chance.choice(user_addresses(chance.randrange(users)))
        else:
            time = start + timedelta(seconds=chance.randrange(span))
            address = f"198.51.{chance.randrange(100)}.{chance.randrange(1, 255)}"
        written += _message(chance, time, index, address, sasl)
    written.sort(key=lambda item: item[0])
    return written


def _message(
    chance: random.Random, time: datetime, index: int, address: str, sasl: str | None
) -> list[tuple[datetime, str]]:
    queue = f"{index:X}".rjust(11, "4")
    pid = 1000 + index % 5000
    service = "postfix/submission/smtpd" if sasl and index % 2 else "postfix/smtpd"
    client = f"{service}[{pid}]: {queue}: client=host{index % 97}.example.net[{address}]"
    if sasl:
        client += f", sasl_method=PLAIN, sasl_username={sasl}"
    later = time + timedelta(seconds=1)
    return [
        (time, _syslog(time, client)),
        (
            time,
            _syslog(
                time,
                f"postfix/cleanup[{pid + 1}]: {queue}: message-id=<{index}.{chance.randrange(10**6)}@example.net>",
            ),
        ),
        (
            time,
            _syslog(
                time,
                f"postfix/qmgr[77]: {queue}: from=<s{index}@example.net>, size={chance.randrange(900, 90000)}, nrcpt=1 (queue active)",
            ),
        ),
        (
            later,
            _syslog(
                later,
                f"postfix/smtp[{pid + 2}]: {queue}: to=<r{index}@example.com>, relay=mx.example.com[192.0.2.25]:25, delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
            ),
        ),
        (later, _syslog(later, f"postfix/qmgr[77]: {queue}: removed")),
    ]


def _syslog(time: datetime, message: str) -> str:
    return f"{time:%b} {time.day:2d} {time:%H:%M:%S} mx {message}"


def _write_rotated(live: Path, lines: list[tuple[datetime, str]], days_per_file: int) -> None:
    """Cut at rotation times (every `days_per_file` days back from NOW): the newest part
    is `live`, then `.1`, then `.2.gz` and older, compressed."""
    parts: list[list[str]] = []
    ends: list[datetime] = []
    cut = NOW - timedelta(days=days_per_file)
    current: list[str] = []
    for time, text in reversed(lines):
        while time < cut:
            parts.append(current)
            ends.append(cut)
            current = []
            cut -= timedelta(days=days_per_file)
        current.append(text)
    parts.append(current)
    ends.append(cut)
    # parts[0] is the newest (live), parts[n] the oldest.
    for number, part in enumerate(parts):
        body = "".join(text + "\n" for text in reversed(part)).encode()
        if number == 0:
            path = live
            mtime = NOW
        else:
            path = live.with_name(f"{live.name}.{number}" + (".gz" if number > 1 else ""))
            mtime = ends[number - 1]
        if path.suffix == ".gz":
            with gzip.open(path, "wb", compresslevel=1) as stream:
                stream.write(body)
        else:
            path.write_bytes(body)
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
