"""Mail-log lines as each server writes them, one builder per server."""

from __future__ import annotations

from datetime import datetime

LOGIN_TIME = "2026-11-25T17:50:13.486319+00:00"
FAILURE_TIME = "2026-11-25T17:50:14+00:00"


def dovecot_login(
    address: str,
    user: str = "alice",
    time: str = LOGIN_TIME,
    *,
    host: str = "mail",
    session: str = "Mr1iP0TtYMEKTQAC",
) -> str:
    """A Dovecot POP3 success line as Debian's rsyslog writes it (no newline)."""
    return (
        f"{time} {host} dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, "
        f"rip={address}, lip=10.77.0.1, mpid=10899, session=<{session}>"
    )


def dovecot_failure(
    address: str,
    user: str = "mallory",
    time: str = FAILURE_TIME,
    *,
    host: str = "mail",
    session: str | None = "Xr1iP0TtYMEKTQAC",
) -> str:
    """A Dovecot POP3 failed login (auth failed) as Debian's rsyslog writes it (no newline)."""
    line = (
        f"{time} {host} dovecot: pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): "
        f"user=<{user}>, method=PLAIN, rip={address}, lip=10.77.0.1"
    )
    return line if session is None else f"{line}, session=<{session}>"


def login_line(address: str, user: str = "alice", second: int = 0) -> str:
    """The map tests' login: from host `vm` at 17:50:SECOND, newline-ended."""
    stamp = f"2026-11-25T17:50:{second:02d}.486319+00:00"
    return dovecot_login(address, user, stamp, host="vm", session=f"abc{second}") + "\n"


def failed_line(address: str) -> str:
    """The map tests' failed login: from host `vm` at 17:50:30, newline-ended."""
    return dovecot_failure(address, time="2026-11-25T17:50:30.000000+00:00", host="vm", session=None) + "\n"


def dovecot_imap_login(address: str, stamp: datetime, user: str = "alice") -> str:
    """A Dovecot IMAP login over TLS as Debian's rsyslog writes it, from host `mail` (no newline)."""
    return (
        f"{stamp.isoformat(timespec='microseconds')} mail dovecot: imap-login: Login: user=<{user}>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=10899, TLS, session=<Mr1iP0TtYMEKTQAC>"
    )
