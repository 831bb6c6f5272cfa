"""A log file source: the reader (sources/logfile.py) behind the Source interface,
with the checks on who may have written the lines (`written_by`,
`syslog_senders`, sources/trust.py) and the marks of where a log once open
to forgers is trusted from again (Checkpoint.trusted_from).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from exactcron.logs import log
from exactcron.model import Login
from exactcron.records import replace
from exactcron.sources.base import LoginParser, SourceSettings, StampReader, can
from exactcron.sources.checkpoint import Checkpoint, Untrusted, merge_trusted_from
from exactcron.sources.rotation import files_signature, rotated_candidates, rotated_directories

if TYPE_CHECKING:
    # Imported where a log is read: a quiet run compares signatures only.
    from exactcron.sources.logfile import LogReader


class LogFileSource:
    """A configured log file and its rotated copies, from the saved checkpoint.

    The saved checkpoint is parsed only when it is needed: the quiet run
    compares signatures and never does.
    """

    counts_bytes = True

    def __init__(
        self,
        settings: SourceSettings,
        saved: dict[str, Any] | None,
        since: datetime | None = None,
        stamp_of: StampReader | None = None,
        untrusted: Untrusted | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.path
        self._saved = saved
        self.since = since
        self.stamp_of = stamp_of
        self.trust = untrusted if untrusted is not None else Untrusted()
        self.bytes_read = 0
        self.unreadable = 0
        self.stopped = False
        self._checkpoint: Checkpoint | None = None
        self._parsed = False

    @property
    def checkpoint(self) -> Checkpoint | None:
        if not self._parsed:
            self._checkpoint = Checkpoint.from_json(self._saved) if self._saved else None
            self._parsed = True
        return self._checkpoint

    @property
    def untrusted(self) -> Untrusted:
        return Untrusted.of(self.checkpoint)

    def present(self) -> bool:
        return os.path.lexists(self.name)

    def signature(self) -> list[Any] | None:
        # None when a directory cannot be listed: what changed there is unknown, never quiet.
        return files_signature(self.name, self.settings.olddir, self.settings.rotated)

    def quiet(self, recorded: Any, current: Any) -> bool:
        return current is not None and recorded == current

    def logins(
        self, parser: LoginParser, stop: Callable[[], bool] | None = None
    ) -> Iterator[Sequence[Login]]:
        settings = self.settings
        senders = None
        if settings.written_by is not None:
            from exactcron.sources.trust import check_written_by

            check_written_by(
                self.name,
                settings.written_by,
                rotated_directories(self.name, settings.olddir, settings.rotated),
                rotated_candidates(self.name, settings.olddir, settings.rotated),
            )
        elif settings.syslog_senders:
            from exactcron.sources.trust import SenderFilter, user_id

            senders = SenderFilter(
                user_id(name, f"syslog_senders of {self.name}") for name in settings.syslog_senders
            )
        start = self.checkpoint
        if start is not None and not start.marks():
            # Only a refusal was kept (the rebuild of a refused log): a first read.
            start = None
        reader = self._reader(start)
        if self.trust.refused:
            self._checkpoint = self._skip_refused(reader)
            return
        try:
            for block, end in reader.blocks(stop):
                if senders is not None:
                    yield parser.logins(senders.block(block[:end]))
                else:
                    yield parser.logins(block, end)
        finally:
            self.bytes_read = reader.bytes_read
            self.stopped = reader.stopped
        assert reader.checkpoint is not None
        # Where the log is trusted from is kept as long as the checkpoint.
        self._checkpoint = replace(reader.checkpoint, refused=False, trusted_from=self.trust.trusted_from)

    def unread_bytes(self) -> int | None:
        return self._reader(self.checkpoint).unread_bytes()

    def missing(self) -> list[str]:
        problems = []
        for directory in [self.name.parent] + ([self.settings.olddir] if self.settings.olddir else []):
            # Listing it finds a rotated log; searching it opens the live one.
            if not can(directory, os.R_OK | os.X_OK):
                problems.append(f"cannot list directory {directory} (of log {self.name})")
        if not self.name.exists():
            problems.append(f"log {self.name} does not exist")
        elif not can(self.name, os.R_OK):
            problems.append(f"cannot read log {self.name}")
        return problems

    def _reader(self, start: Checkpoint | None) -> LogReader:
        from exactcron.sources.logfile import LogReader

        return LogReader(
            self.name,
            start,
            self.since,
            self.stamp_of,
            self.settings.olddir,
            self.settings.rotated,
            floor=self.trust.trusted_from,
        )

    def _skip_refused(self, reader: LogReader) -> Checkpoint:
        """The first run that trusts a log refused by `written_by` before: what was written
        in between cannot be told from forged lines, so none of it is read (fail closed).
        Where each file ends now is where it is trusted from: no later read (a rebuild,
        a first run after the checkpoints were lost) reads a byte before it."""
        skipped, files, unfinished = reader.skip_to_end()
        log.warning(
            "%s: skipped %d bytes in %d files unread (to the end of the log and of its rotated copies): "
            "written while `written_by` refused it, they cannot be told from forged lines; "
            "logins logged since the last refused run grant nothing (those clients log in again)",
            reader.path,
            skipped,
            files,
        )
        assert reader.checkpoint is not None
        trusted_from = merge_trusted_from(reader.checkpoint.marks(), self.trust.trusted_from)
        if unfinished:
            # A line without its end yet: its start may be forged; skipped again next run.
            log.warning(
                "%s: it ends in a line not yet ended; what follows is skipped at the next run too",
                reader.path,
            )
        return replace(reader.checkpoint, refused=unfinished, trusted_from=trusted_from)
