"""Two-line rules: servers that log the client's address and the successful
login on two lines of the same process (popa3d, GNU pop3d behind tcpd,
vm-pop3d, a site's `[rule.NAME]` with `connect`).

A connect line opens a session keyed by its host field, syslog tag and PID;
the success line of the same key grants the address the connect line named,
at the success line's own stamp. The session ends, granting nothing more,
at its success (one login per POP session), at an end line (a failure
that closes the session, the session's last line), at the next connect
line of the same key (a reused PID never lends an old address), after
MAX_SESSION_SECONDS, or when MAX_OPEN_SESSIONS newer sessions are open.
A success line with no open session of its own key grants nothing.

The open sessions live in the source's checkpoint document (`connects`,
saved with the checkpoint, so a connect read in one run pairs with its
success in the next, across rotation). The document is read as hostile:
anything malformed loads as no sessions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from exactcron.addresses import normalize_address
from exactcron.model import Login
from exactcron.rules.forms import microsecond_of
from exactcron.rules.grant import line_refusal

if TYPE_CHECKING:
    from exactcron.rules.forms import TwoLine

# The key a source's checkpoint document keeps its open sessions under.
PAIRINGS_KEY = "connects"
# How long after its connect line a success may still pair. RFC 1939 asks a
# POP3 server to drop a client idle for 10 minutes (popa3d's POP_TIMEOUT and
# GNU pop3d's default timeout are 600 s); a client that authenticates takes
# seconds. Older sessions are forgotten, so an address is never lent for longer.
MAX_SESSION_SECONDS = 600
# Open sessions kept per source; the oldest is dropped first. A flood of
# connect lines can push a real session out (its login then grants nothing:
# fail closed), never lend an address to another session.
MAX_OPEN_SESSIONS = 4096
_FORMAT = 1
_PID = re.compile(rb"\d{1,10}")
_STATE_PID = re.compile(r"\d{1,10}|=[0-9A-Za-z._:\-]{1,64}", re.ASCII)
# A session token (mailutils' session ID: 8 of [0-9A-Za-z]); a site rule's may be longer.
_TOKEN = re.compile(r"[0-9A-Za-z._:\-]{1,64}", re.ASCII)
_STATE_PROGRAM = re.compile(r"[A-Za-z0-9_.\-/]{1,64}")
_STATE_HOST = re.compile(r"[^\s:\[\]]{1,255}")
# Epoch seconds a stamp can name (years 1..9999), as the checkpoint holds them.
_EPOCH_RANGE = range(-62135596800, 253402300800)


# (host field or None, tag, PID), as logged.
_Key = tuple[bytes | None, bytes, bytes]


class Pairings:
    """The open sessions of one source, and what each line of a two-line rule does to them."""

    def __init__(self, rules: Sequence[tuple[str, TwoLine]], state: object = None) -> None:
        self._rules = tuple(rules)
        # Oldest first (dict order): (address or None, the connect line's epoch second).
        self._open: dict[_Key, tuple[str, int]] = _load(state)
        self._accepted: dict[bytes, bool] = {}
        # Success lines that granted nothing: no open session of their key, or one too old.
        self.unpaired = 0

    def accepts(self, program: bytes) -> bool:
        accepted = self._accepted.get(program)
        if accepted is None:
            if len(self._accepted) >= 1024:
                self._accepted.clear()  # tags are attacker-chosen
            text = program.decode("ascii")
            accepted = self._accepted[program] = any(rule.accepts(text) for _, rule in self._rules)
        return accepted

    def forget(self, host: bytes | None, program: bytes, line: bytes, head: re.Match[bytes]) -> None:
        """A line of the key that cannot be read (its stamp names no time): whatever it
        said, the key's session lends nothing after it."""
        pid = _pid(line, head)
        if pid is not None:
            self._open.pop((host, program, pid), None)

    def read(
        self,
        host: bytes | None,
        program: bytes,
        line: bytes,
        head: re.Match[bytes],
        second: datetime,
        ambiguity: timedelta,
        fraction: bytes | None,
    ) -> Login | None:
        """What one line of an accepted tag (its LINE_HEAD match `head`) does: the
        login of a success that pairs with its session, else None (the sessions updated).
        The parser still judges its host field."""
        found = self.paired(host, program, _pid(line, head), second, line[head.end() :])
        if found is None:
            return None
        name, user, address = found
        # What every login's line must pass (the address was normalized when its session opened).
        if line_refusal(user, address) is not None:
            return None
        microsecond = microsecond_of(fraction) if fraction else 0
        earliest = None
        if ambiguity:
            earliest = (second.replace(microsecond=microsecond) if microsecond else second) - ambiguity
        return Login(address, second, microsecond, user, name, earliest)

    def paired(
        self, host: bytes | None, program: bytes, pid: bytes | None, second: datetime, message: bytes
    ) -> tuple[str, str | None, str] | None:
        """(rule name, user, address) of a success that pairs with its session, else
        None; the sessions updated by whatever the line says."""
        # No PID and no session token: no process to pair within.
        process = (host, program, pid) if pid is not None and _PID.fullmatch(pid) else None
        text = message.decode("utf-8", "replace")
        tag = program.decode("ascii")
        epoch = int(second.timestamp())
        for name, rule in self._rules:
            if not rule.accepts(tag):
                continue
            # Connect first: a line that reads as both opens a session, never grants.
            for phrase in rule.connects:
                fields = phrase.fields(text)
                if fields is not None:
                    key = process if fields.get("session") is None else _token_key(host, program, fields)
                    if key is not None:
                        self._begin(key, fields.get("ip"), epoch)
                    return None
            for phrase in rule.ends:
                fields = phrase.fields(text)
                if fields is not None:
                    for key in (process, _token_key(host, program, fields)):
                        if key is not None:
                            self._open.pop(key, None)
                    return None
            for phrase in rule.successes:
                fields = phrase.fields(text)
                if fields is None:
                    continue
                # One login per session: the success ends it, paired or not. A line
                # with a session token pairs by it alone (the listener logged the
                # connection; the process's PID may have served another session),
                # one without by its process (tcpd logged it, then exec'd).
                by_process = self._open.pop(process, None) if process is not None else None
                if fields.get("session") is None:
                    session = by_process
                else:
                    token = _token_key(host, program, fields)
                    session = self._open.pop(token, None) if token is not None else None
                if session is None or not 0 <= epoch - session[1] <= MAX_SESSION_SECONDS:
                    self.unpaired += 1
                    return None
                return name, fields.get("user"), session[0]
        return None

    def _begin(self, key: _Key, logged: str | None, epoch: int) -> None:
        self._open.pop(key, None)
        address = normalize_address(logged) if logged is not None else None
        if address is None:
            return  # the earlier session ended; this one lends nothing
        self._open[key] = (address, epoch)
        if len(self._open) > MAX_OPEN_SESSIONS:
            del self._open[next(iter(self._open))]

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The open sessions that may still pair, for the source's checkpoint document."""
        # A success stamped up to a minute ahead of the clock is still believed.
        oldest = int(now.timestamp()) - MAX_SESSION_SECONDS - 60
        return {
            "format": _FORMAT,
            "open": [
                [_text(host), _text(program), _text(pid), address, epoch]
                for (host, program, pid), (address, epoch) in self._open.items()
                if epoch >= oldest
            ],
        }

    def __len__(self) -> int:
        return len(self._open)


def _token_key(host: bytes | None, program: bytes, fields: Mapping[str, str | None]) -> _Key | None:
    """The key of a line's session token (its `session` group), or None: none, or
    one not of the token's shape (`=` sets it apart from a PID)."""
    token = fields.get("session")
    if token is None or _TOKEN.fullmatch(token) is None:
        return None
    return host, program, b"=" + token.encode("ascii")


def _pid(line: bytes, head: re.Match[bytes]) -> bytes | None:
    """The PID of a line's `TAG[PID]: `, or None (LINE_HEAD's sixth group is the tag)."""
    after_tag = head.end(6)
    if line[after_tag : after_tag + 1] != b"[":
        return None
    return line[after_tag + 1 : head.end() - 3]


def _text(value: bytes | None) -> str | None:
    # Latin-1: every byte a character, so any host field survives JSON and back.
    return None if value is None else value.decode("latin-1")


def _load(state: object) -> dict[_Key, tuple[str, int]]:
    """The open sessions a checkpoint document holds; anything malformed: none."""
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        return {}
    entries = state.get("open")
    if not isinstance(entries, list) or len(entries) > MAX_OPEN_SESSIONS:
        return {}
    sessions: dict[_Key, tuple[str, int]] = {}
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 5:
            return {}
        host, program, pid, address, epoch = entry
        if not (
            (host is None or (isinstance(host, str) and _STATE_HOST.fullmatch(host) and _latin1(host)))
            and isinstance(program, str)
            and _STATE_PROGRAM.fullmatch(program)
            and isinstance(pid, str)
            and _STATE_PID.fullmatch(pid)
            and isinstance(address, str)
            and normalize_address(address) == address
            and type(epoch) is int
            and epoch in _EPOCH_RANGE
        ):
            return {}
        key = (None if host is None else host.encode("latin-1"), program.encode("ascii"), pid.encode("ascii"))
        sessions.pop(key, None)
        sessions[key] = (address, epoch)
    return sessions


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
