"""What every source is, whatever its lines come from: a log file (sources/file.py)
or the journal (sources/journal.py). sources/open.py picks one for a
configured source; no module above sources/ asks which kind it has.

The protocols are structural: config.SourceConfig is a SourceSettings and
rules.LineParser a LoginParser without importing this module (both sit on
this floor or above it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from exactcron.model import Login
from exactcron.sources.checkpoint import Untrusted

# A line's time, for skipping the part of a file older than the timeout window.
StampReader = Callable[[bytes], datetime | None]


class SourceSettings(Protocol):
    """What of a configured source decides where its lines come from and who may write them."""

    @property
    def path(self) -> Path: ...  # a journal source's is its name, `journal:UNIT[,UNIT...]`
    @property
    def olddir(self) -> Path | None: ...
    @property
    def rotated(self) -> tuple[str, ...]: ...
    @property
    def journal(self) -> tuple[str, ...]: ...
    @property
    def journal_directory(self) -> Path | None: ...
    @property
    def written_by(self) -> str | None: ...
    @property
    def syslog_senders(self) -> tuple[str, ...]: ...


class LoginParser(Protocol):
    """The rules, as a source feeds them: whole blocks of lines, or one line at a time."""

    def logins(self, block: bytes, size: int | None = None) -> list[Login]: ...

    def parse(self, line: bytes) -> Login | None: ...


class SourceCheckpoint(Protocol):
    """Where reading of a source stopped."""

    def to_json(self) -> dict[str, Any]: ...

    def describe(self) -> str:
        """For `status`: the file's identity and offset, or the journal cursor."""
        ...


class Source(Protocol):
    """One configured source, from its saved checkpoint."""

    @property
    def name(self) -> Path:
        """The source's `path`: its name in status and its checkpoint key."""
        ...

    @property
    def counts_bytes(self) -> bool:
        """Whether unread_bytes() can be known without reading (not for a journal)."""
        ...

    @property
    def bytes_read(self) -> int: ...

    @property
    def unreadable(self) -> int:
        """Entries skipped because they could not be read, besides what the parser skips."""
        ...

    @property
    def stopped(self) -> bool:
        """Reading ended because `stop` said so; the checkpoint is where it stopped."""
        ...

    @property
    def checkpoint(self) -> SourceCheckpoint | None:
        """Where reading stopped: as saved until logins() is exhausted, then the new one."""
        ...

    @property
    def untrusted(self) -> Untrusted:
        """What is known of the source having been open to forgers (`written_by`), after reading."""
        ...

    def present(self) -> bool:
        """Whether there is something to read (a log file that exists; a journal always)."""
        ...

    def signature(self) -> Any:
        """As JSON values, what a listing tells of the source, taken before reading;
        the next run is quiet only while quiet(signature) holds."""
        ...

    def quiet(self, recorded: Any, current: Any) -> bool:
        """Whether reading from the checkpoint would find nothing new, given the
        signature the last full run recorded and the one signature() gives now
        (taken once per run by the caller, which records it). Cheap for a log file."""
        ...

    def logins(
        self, parser: LoginParser, stop: Callable[[], bool] | None = None
    ) -> Iterator[Sequence[Login]]:
        """The logins of what was written since the checkpoint, in batches, in log
        order; updates the checkpoint once exhausted. `stop` is asked between
        batches: when it says so, reading ends there and `stopped` is set."""
        ...

    def unread_bytes(self) -> int | None:
        """Bytes not read yet, or None when unknown."""
        ...

    def missing(self) -> list[str]:
        """What keeps the running user from reading the source (for `check`)."""
        ...


def can(path: Path, mode: int) -> bool:
    """access(2) with the effective ids: the answer the cron job gets when `check` runs as its user."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
