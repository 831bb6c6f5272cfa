"""The audit trail: one greppable line per lease event in `log_file`.

`2026-11-30T13:00:00Z grant 192.0.2.44 user=alice until=2026-11-30T13:30:00Z source=/var/log/mail.log`

Events go to the logger `exactcron.audit`, which only the log file listens
to (cli.py attaches it); with no log file nothing is even formatted.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from json import dumps

from exactcron.guard import Verdict
from exactcron.logs import logger
from exactcron.model import Lease
from exactcron.timestamps import utc_stamp as utc_stamp  # the audit trail's stamp, named here too
from exactcron.users import user_name

# Through logs.py: the console's set-up of the logs (log_file's handler) is done first.
AUDIT = logger("exactcron.audit")
AUDIT.propagate = False
AUDIT.setLevel(logging.INFO)

# A value written bare; anything else (a user name from a log line with
# spaces, quotes or control bytes in it) is written as a JSON string, so
# that no value can forge another field or another line.
_BARE = re.compile(r"[A-Za-z0-9._@+:/=%,-]{1,256}")


def enabled() -> bool:
    return bool(AUDIT.handlers)


def line(time: datetime, event: str, subject: str, **fields: str | None) -> str:
    words = [utc_stamp(time), event, _value(subject)]
    words += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
    return " ".join(words)


def record(time: datetime, event: str, subject: str, **fields: str | None) -> None:
    if AUDIT.handlers:
        AUDIT.info("%s", line(time, event, subject, **fields))


def lease_granted(now: datetime, before: Lease | None, after: Lease, source: str) -> None:
    """`grant` for an address that held no lease in force, else `extend`."""
    event = "grant" if before is None or before.expires <= now else "extend"
    record(now, event, after.address, user=after.user, until=utc_stamp(after.expires), source=source)


def lease_expired(now: datetime, lease: Lease | None, address: str) -> None:
    if lease is None:
        record(now, "expire", address)
    else:
        record(now, "expire", address, user=lease.user, until=utc_stamp(lease.expires))


def guard_verdict(now: datetime, verdict: Verdict, source: str) -> None:
    """`refuse ADDRESS ... reason=`; a revocation as one `flush` per address, `by=guard`."""
    if verdict.kind == "refuse":
        record(
            now,
            "refuse",
            verdict.address,
            user=verdict.user,
            reason=verdict.reason,
            login=utc_stamp(verdict.time),
            source=source,
        )
        return
    for address in verdict.revoked:
        record(now, "flush", address, user=verdict.user, by="guard", reason=verdict.reason)


def who_ran() -> str:
    """The person behind a manual command: the sudo user, else the login
    user (runuser and su keep the login uid), else the current user."""
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user:
        return sudo_user
    try:
        with open("/proc/self/loginuid", encoding="ascii") as stream:
            login_uid = int(stream.read().strip())
    except (OSError, ValueError):
        login_uid = -1
    # 4294967295 ((uid_t)-1): no login behind this process (a daemon, cron).
    if 0 <= login_uid < 4294967295:
        return user_name(login_uid)
    return user_name(os.getuid())


def _value(value: str) -> str:
    return value if _BARE.fullmatch(value) else dumps(value)
