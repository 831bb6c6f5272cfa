"""A systemd journal source: the entries of named units, from a saved cursor.

Entries are selected by the trusted `_SYSTEMD_UNIT` field, which journald
sets from the sender's cgroup and a local user cannot forge (anyone can
write a text-log line that says `dovecot:` with `logger -t dovecot`). Each
entry is turned into an RFC 3339 syslog line, so the same rules read it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exactcron.errors import LogUnreadableError
from exactcron.logs import log
from exactcron.model import Login
from exactcron.sources.base import LoginParser, SourceSettings, can
from exactcron.sources.checkpoint import Untrusted
from exactcron.timestamps import FIRST_YEAR, LAST_YEAR

# Fields the rules need; journalctl adds the cursor and the timestamps itself.
_FIELDS = "MESSAGE,SYSLOG_IDENTIFIER,_COMM,_HOSTNAME,_SYSTEMD_UNIT,_PID"
_SEARCH_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The __REALTIME_TIMESTAMP values (microseconds since the epoch) of the years a stamp may name.
_REALTIME_RANGE = range(
    (datetime(FIRST_YEAR, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1),
    (datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1),
)


# Where journald keeps the system's journal: persistent, then volatile; a folder per machine.
SYSTEM_JOURNAL_DIRECTORIES = (Path("/var/log/journal"), Path("/run/log/journal"))


def journalctl() -> str | None:
    """The journalctl a journal source runs, or None when there is none."""
    return shutil.which("journalctl", path=_SEARCH_PATH)


def journal_files(directory: Path | None) -> list[Path]:
    """The journal files journalctl reads: those in `directory` (None: the
    system's journal) and in its folders one level down. Without any, journalctl
    reads nothing and says so by no word and exit 0."""
    found: list[Path] = []
    for each in (directory,) if directory is not None else SYSTEM_JOURNAL_DIRECTORIES:
        for pattern in ("*.journal", "*.journal~", "*/*.journal", "*/*.journal~"):
            found += [path for path in each.glob(pattern) if path.is_file()]
    return sorted(found)


class UnreadableEntry(ValueError):
    """An entry of a watched unit whose time cannot be read: skipped and counted."""


@dataclass(frozen=True)
class JournalCheckpoint:
    """The cursor of the last entry read."""

    cursor: str

    def to_json(self) -> dict[str, Any]:
        return {"journal_cursor": self.cursor}

    def describe(self) -> str:
        return f"journal cursor {self.cursor}"

    @classmethod
    def from_json(cls, document: object) -> JournalCheckpoint | None:
        if not isinstance(document, dict):
            return None
        cursor = document.get("journal_cursor")
        if not isinstance(cursor, str) or not cursor or "\n" in cursor:
            return None
        return cls(cursor)


def entry_line(entry: dict[str, Any], units: frozenset[str]) -> bytes | None:
    """The syslog line for one `journalctl -o json` entry, or None when it is not
    from one of `units` or lacks what a line needs. Raises UnreadableEntry when
    its time is missing or names no time exactcron reads."""
    unit = entry.get("_SYSTEMD_UNIT")
    # Several values (a list) would mean a sender set the field itself: not trusted.
    if not isinstance(unit, str) or unit not in units:
        return None
    message = _text(entry.get("MESSAGE"))
    identifier = _text(entry.get("SYSLOG_IDENTIFIER")) or _text(entry.get("_COMM"))
    # Trusted like the unit: set by journald (or journal-remote, from the
    # sending machine); the source's `hosts` decide whether it counts.
    host = _text(entry.get("_HOSTNAME"))
    if message is None or not identifier or not host:
        return None
    realtime = entry.get("__REALTIME_TIMESTAMP")
    # journalctl writes the number as a string of digits; int() would also take ` 1_0`.
    if not isinstance(realtime, str) or not realtime.isascii() or not realtime.isdigit():
        raise UnreadableEntry(f"__REALTIME_TIMESTAMP {realtime!r:.40}")
    microseconds = int(realtime)
    if microseconds not in _REALTIME_RANGE:
        raise UnreadableEntry(f"__REALTIME_TIMESTAMP {realtime:.40}")
    stamp = _EPOCH + timedelta(microseconds=microseconds)
    # The sender's PID as journald recorded it (trusted): what two-line rules pair by.
    pid = entry.get("_PID")
    tag = (
        f"{identifier}[{pid}]"
        if isinstance(pid, str) and pid.isascii() and pid.isdigit() and len(pid) <= 10
        else identifier
    )
    return f"{stamp.isoformat(timespec='microseconds')} {host} {tag}: {message}".encode("utf-8", "replace")


def _text(value: object) -> str | None:
    """A journal field as text: JSON gives a string, or a list of byte values
    when the field is not UTF-8 (or several values, of which none is trusted)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(byte, int) and 0 <= byte < 256 for byte in value):
        return bytes(value).decode("utf-8", "replace")
    return None


class JournalReader:
    """Reads the entries of `units` logged since the checkpoint, as syslog lines."""

    def __init__(
        self,
        units: tuple[str, ...],
        checkpoint: JournalCheckpoint | None,
        since: datetime | None = None,
        directory: Path | None = None,
    ) -> None:
        self.units = frozenset(units)
        self.start = checkpoint
        self.checkpoint = checkpoint
        self.since = since
        self.directory = directory
        self.bytes_read = 0
        # Entries of the units that could not be read (their time, their JSON).
        self.unreadable = 0
        self.stopped = False

    def lines(self, stop: Callable[[], bool] | None = None) -> Iterator[bytes]:
        """The entries' lines; `stop`, asked before each entry, ends reading there
        with the checkpoint at the last entry read (`self.stopped` then set)."""
        try:
            yield from self._run(self.start, stop)
        except _CursorRejected:
            log.warning(
                "journal cursor of %s no longer valid (journal vacuumed or replaced); "
                "guessed: reading from the start of the timeout window",
                ", ".join(sorted(self.units)),
            )
            yield from self._run(None, stop)

    def unread_bytes(self) -> int | None:
        return None

    def _command(self, start: JournalCheckpoint | None) -> list[str]:
        binary = journalctl()
        if binary is None:
            raise LogUnreadableError("cannot read the journal: journalctl not found")
        command = [binary, "--output=json", f"--output-fields={_FIELDS}", "--no-pager", "--quiet"]
        if self.directory is not None:
            command.append(f"--directory={self.directory}")
        if start is not None:
            command.append(f"--after-cursor={start.cursor}")
        elif self.since is not None:
            command.append(f"--since=@{int(self.since.timestamp())}")
        # Several matches on one field are ORed by journalctl.
        command += [f"_SYSTEMD_UNIT={unit}" for unit in sorted(self.units)]
        return command

    def _run(self, start: JournalCheckpoint | None, stop: Callable[[], bool] | None) -> Iterator[bytes]:
        command = self._command(start)
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert process.stdout is not None and process.stderr is not None
        cursor = None
        try:
            for raw in process.stdout:
                if stop is not None and stop():
                    self.stopped = True
                    # The entries not read stay for the next run; journalctl need not finish.
                    process.kill()
                    break
                self.bytes_read += len(raw)
                try:
                    entry = json.loads(raw)
                except ValueError:
                    self.unreadable += 1
                    continue
                if not isinstance(entry, dict):
                    self.unreadable += 1
                    continue
                if isinstance(entry.get("__CURSOR"), str):
                    cursor = entry["__CURSOR"]
                try:
                    line = entry_line(entry, self.units)
                except Exception:  # containment: no entry ends a run (UnreadableEntry, or a bug)
                    self.unreadable += 1
                    continue
                if line is not None:
                    yield line
        finally:
            process.stdout.close()
            error = process.stderr.read().decode("utf-8", "replace").strip()
            process.stderr.close()
            code = process.wait()
        if self.stopped:
            if cursor is not None:
                self.checkpoint = JournalCheckpoint(cursor)
            return
        if code != 0:
            if start is not None and "cursor" in error.lower() and cursor is None:
                raise _CursorRejected(error)
            raise LogUnreadableError(f"cannot read the journal: journalctl: {error or f'exit {code}'}")
        if cursor is not None:
            self.checkpoint = JournalCheckpoint(cursor)


class _CursorRejected(Exception):
    pass


class JournalSource:
    """A configured journal source (its units' entries) from the saved cursor."""

    # Bytes unread cannot be known without reading.
    counts_bytes = False

    def __init__(
        self, settings: SourceSettings, saved: dict[str, Any] | None, since: datetime | None = None
    ) -> None:
        self.name = settings.path
        self.directory = settings.journal_directory
        self.reader = JournalReader(
            settings.journal, JournalCheckpoint.from_json(saved) if saved else None, since, self.directory
        )

    @property
    def checkpoint(self) -> JournalCheckpoint | None:
        return self.reader.checkpoint

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read

    @property
    def unreadable(self) -> int:
        return self.reader.unreadable

    @property
    def stopped(self) -> bool:
        return self.reader.stopped

    @property
    def untrusted(self) -> Untrusted:
        # Entries are chosen by the unit journald records: nothing to refuse or skip.
        return Untrusted()

    def present(self) -> bool:
        return True

    def signature(self) -> None:
        # Nothing a listing could tell: quiet() asks journalctl.
        return None

    def quiet(self, recorded: Any, current: Any) -> bool:
        start = self.reader.start
        if start is None:
            return False
        # The full run that follows a non-empty answer asks journalctl again, from the same cursor.
        return next(iter(self.reader.lines()), None) is None and self.reader.checkpoint == start

    def logins(
        self, parser: LoginParser, stop: Callable[[], bool] | None = None
    ) -> Iterator[Sequence[Login]]:
        # An entry may hold LFs: each is parsed as one line.
        for line in self.reader.lines(stop):
            login = parser.parse(line)
            if login is not None:
                yield (login,)

    def unread_bytes(self) -> int | None:
        return None

    def missing(self) -> list[str]:
        """journalctl, and journal files it may read: journalctl itself finds none and says nothing."""
        if journalctl() is None:
            return [f"journalctl not found (for {self.name}); install systemd"]
        directory = self.directory
        files = journal_files(directory)
        places = " or ".join(
            str(each) for each in ((directory,) if directory else SYSTEM_JOURNAL_DIRECTORIES)
        )
        if not files:
            return [
                f"{self.name}: no journal files in {places} (is journald keeping a journal? "
                "without one, read the server's log file with `path` instead)"
            ]
        if not any(can(file, os.R_OK) for file in files):
            return [f"{self.name}: cannot read the journal files in {places} (group adm reads them)"]
        return []
