"""Holding a lease while its session is open (`hold_while_connected`). Pure; no I/O.

A source with the key keeps its open sessions (rules/sessions.py reads the
lines) in its checkpoint document, saved with the checkpoint. Holding is
done by extension, never by long leases: at each full run, each open
session whose address still has a lease in force gets one more login, at
min(now, login + session_max - timeout), so its lease ends at
min(now + timeout, login + session_max). When its end line (stamp D) is
read, one last login at min(D, login + session_max - timeout), and the
session is forgotten. So:

- relay ends `timeout` after the last run that saw the session open: when
  exactcron stops running, relay stops as it always did (fail closed);
- a session whose address has no lease in force at a run (flushed,
  expired, ignored, refused by [guard]), or whose own last extension has
  run out (no run for `timeout`), is forgotten and revives nothing;
- each extending login's `earliest` is the session's last hold (its last
  extension, at first its login): a flush since then wins over it
  (leases.flush_time), in the lease file and in the shared store alike.
  A refused extension ends the session for good, so a flush after the
  login is always met, within a timeout, while its record is kept;
- a session whose end is never read ends `session_max` after its login.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from exactcron.addresses import normalize_address
from exactcron.model import Lease, Login

# The checkpoint document's key for a source's open sessions.
SESSIONS_KEY = "sessions"
# Open sessions kept per source; past this the oldest are dropped (dropping
# one only shortens relay). Bounds the state a flood of logins can make.
MAX_SESSIONS = 10_000
_MAX_ID = 128
_MAX_USER = 512


class Session(NamedTuple):
    """An open session: who logged in from where, and when; and until when it
    has held its lease (`held`: its last extension's time, at first its login)."""

    address: str
    user: str | None
    login: datetime
    server: str
    held: datetime

    def same_login(self, other: Session) -> bool:
        return self[:4] == other[:4]


@dataclass
class SessionBook:
    """One source's open sessions (by ID, oldest first) and the ends read this run."""

    # An OrderedDict: dropping the oldest is O(1) (a dict's first key after
    # many deletions is found by scanning its holes).
    open: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    # Sessions whose end line was read this run, with the end's time.
    ended: list[tuple[Session, datetime]] = field(default_factory=list)

    def opened(self, session_id: str, login: Login, now: datetime, timeout: timedelta) -> None:
        """A login that opened a session. One already older than the timeout
        granted nothing: nothing held it since, so it holds nothing now.

        The same login read again (after a killed run) changes nothing; a
        different login under the same key (a PID used again) ends the
        session before it, at the new login's time.
        """
        session = Session(login.address, login.user, login.time, login.server, login.time)
        current = self.open.get(session_id)
        if current is not None and current.same_login(session):
            return
        if current is not None:
            self.closed(session_id, login.time)
        if login.second <= now - timeout:
            return
        self.open[session_id] = session
        if len(self.open) > MAX_SESSIONS:
            self.open.popitem(last=False)

    def closed(self, session_id: str, time: datetime, who: tuple[str, str] | None = None) -> None:
        """The end line of a session; an unknown session (never read, or
        already forgotten) ends nothing and extends nothing. `who`: the user
        and address the end line names, when the key is a process's; then
        they must be the login's."""
        session = self.open.get(session_id)
        if session is None or (who is not None and who != (session.user, session.address)):
            return
        del self.open[session_id]
        self.ended.append((session, time))


class Extension(NamedTuple):
    """A login that extends a held lease, and the session it holds (None: its last)."""

    login: Login
    session_id: str | None


def extensions(
    book: SessionBook,
    in_force: Mapping[str, Lease],
    now: datetime,
    timeout: timedelta,
    session_max: timedelta,
) -> tuple[list[Extension], dict[str, Session]]:
    """The logins that hold the book's leases at `now`, and the sessions still open after them.

    `in_force`: the leases in force at `now`, by address, as stored. Ended
    sessions get their last login; open ones past `session_max`, or whose
    address has no lease in force, are forgotten.
    """
    # Per address, the last login of its ended sessions that reaches furthest
    # (a log of short sessions ends thousands a run).
    last: dict[str, Login] = {}
    for session, ended in book.ended:
        login = _extension(session, min(ended, now), in_force, timeout, session_max, now)
        if login is not None:
            kept = last.get(login.address)
            if kept is None or (login.second, login.earliest) > (kept.second, kept.earliest):
                last[login.address] = login
    logins = [Extension(login, None) for login in last.values()]
    still_open: dict[str, Session] = {}
    for session_id, session in book.open.items():
        if session.login + session_max <= now or not _holding(session, in_force, now, timeout):
            continue
        login = _extension(session, now, in_force, timeout, session_max, now)
        if login is not None:
            logins.append(Extension(login, session_id))
        # Held on also when there is nothing to extend yet (a run in its login's second).
        still_open[session_id] = session
    return logins, still_open


def _holding(session: Session, in_force: Mapping[str, Lease], now: datetime, timeout: timedelta) -> bool:
    """Whether the session still holds a lease in force at `now` by its own
    extensions: a lease lapsed between two runs, and one in force only by
    another login, are no longer this session's."""
    return session.address in in_force and session.held.replace(microsecond=0) + timeout > now


def _extension(
    session: Session,
    until: datetime,
    in_force: Mapping[str, Lease],
    timeout: timedelta,
    session_max: timedelta,
    now: datetime,
) -> Login | None:
    if not _holding(session, in_force, now, timeout):
        return None
    time = min(until, session.login + session_max - timeout).replace(microsecond=0)
    if time <= session.held.replace(microsecond=0):
        return None  # it holds as much already
    # `earliest`: a flush since the session last held its lease wins over this
    # login. A flush between its login and then was caught by an earlier run
    # (that one's extension was refused): runs follow each other within the
    # timeout, or `_holding` forgets the session.
    return Login(session.address, time, 0, session.user, session.server, session.held)


def took(extension: Login, before: Lease, changed: Iterable[str], timeout: timedelta) -> bool:
    """Whether the store kept `extension`: it changed the lease, or the lease
    already reached as far; otherwise it was refused (a flush, `[guard]`)."""
    if extension.address in changed:
        return True
    return before.last_login >= extension.second and before.expires >= extension.second + timeout


def sessions_to_json(open_sessions: Mapping[str, Session]) -> list[list[Any]]:
    return [
        [
            session_id,
            session.address,
            session.user,
            session.login.isoformat(),
            session.server,
            session.held.isoformat(),
        ]
        for session_id, session in open_sessions.items()
    ]


def sessions_from_json(document: object, now: datetime, session_max: timedelta) -> dict[str, Session]:
    """The open sessions a checkpoint document holds: anything not exactly
    what sessions_to_json writes reads as no sessions (it is state a broken
    or planted file may hold: never a crash, never a longer hold)."""
    if not isinstance(document, list) or len(document) > MAX_SESSIONS:
        return {}
    found: dict[str, Session] = {}
    for item in document:
        session = _session(item, now, session_max)
        if session is None:
            return {}
        session_id, value = session
        if value is not None:
            found[session_id] = value
    return found


def _session(item: object, now: datetime, session_max: timedelta) -> tuple[str, Session | None] | None:
    if not isinstance(item, list) or len(item) != 6:
        return None
    session_id, address, user, login, server, held = item
    if not (isinstance(session_id, str) and 0 < len(session_id) <= _MAX_ID):
        return None
    if not isinstance(address, str) or normalize_address(address) != address:
        return None
    if not (user is None or (isinstance(user, str) and len(user) <= _MAX_USER)):
        return None
    if not (isinstance(server, str) and 0 < len(server) <= _MAX_ID):
        return None
    login_time, held_time = _instant(login), _instant(held)
    if login_time is None or held_time is None:
        return None
    # Stamped after now (a clock put back), held from before its login, or
    # past its session_max: held no more.
    if held_time > now or held_time < login_time or now - login_time >= session_max:
        return session_id, None
    return session_id, Session(address, user, login_time, server, held_time)


def _instant(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        time = datetime.fromisoformat(text)
        if time.tzinfo is None:
            return None
        return time.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
