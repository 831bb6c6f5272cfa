"""For `update --follow`: whether what was written to a log since the last step may hold a login.

A busy log is written many times a second, almost never a login. Each
write wakes the follower (sources/watch.py); instead of a full step (the
lock, every source read, the store and the checkpoints saved), it reads only
the bytes written since it last looked, starting where the last step's
checkpoint left the log, and steps only when they hold one of the needles
the source's rules search for (rules.parser.rule_needles, and the end lines
of sessions held while connected).

The peek decides nothing but when to step: the step reads from its
checkpoint as always, so a wrong answer here can only delay a grant to the
next step (an event of another kind, the idle step, a lease's end), never
grant or lose one. Whenever it cannot tell, it says to step: the file is
not the one the checkpoint names, it shrank or its first bytes changed (a
copytruncate, however fast it grew again), it cannot be opened, or more
than PEEK_MAX_BYTES were written since (a burst: the step reads them anyway).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from exactcron.atomic import open_regular
from exactcron.sources.base import SourceSettings
from exactcron.sources.checkpoint import Checkpoint, digest

# More new bytes than this in one wake-up: step instead of looking.
PEEK_MAX_BYTES = 256 * 1024


class LogPeek:
    """The bytes of one log file written since the last step, looked at for needles."""

    def __init__(self, path: Path, needles: frozenset[bytes]) -> None:
        self.path = path
        # Longest first: a needle that holds another is found by the shorter anyway.
        self.needles = tuple(sorted(needles, key=len, reverse=True))
        # A rule with no literal reads every line: any write may hold a login.
        self.every_write = not self.needles or b"" in self.needles
        # A needle cut by the end of one look is whole in the next: its start is kept.
        self.overlap = max((len(needle) for needle in self.needles), default=1) - 1
        # Where looking goes on: the file's identity, its first bytes' digest,
        # the offset, and the bytes just before it (None: step at the next write).
        self.identity: tuple[int, int] | None = None
        self.fingerprint: tuple[str, int] = ("", 0)
        self.offset = 0
        self.carry = b""

    def restart(self, saved: Any) -> None:
        """Look from where the step that saved checkpoint `saved` (JSON) left the live file."""
        checkpoint = Checkpoint.from_json(saved) if saved is not None else None
        live = checkpoint.live if checkpoint is not None else None
        if live is None or (live.device, live.inode) == (0, 0):
            self.identity = None
            return
        self.identity = (live.device, live.inode)
        self.fingerprint = (live.fingerprint, live.fingerprint_length)
        self.offset = live.offset
        # The checkpoint ends a line, and no needle holds a line's end.
        self.carry = b""

    def may_hold_login(self) -> bool:
        """Whether the bytes written since the last look may hold a login (True: step)."""
        if self.every_write or self.identity is None:
            return True
        try:
            with open_regular(self.path) as handle:
                return self._look(handle.fileno())
        except OSError:
            return True  # gone, replaced by something else, unreadable: the step finds out

    def _look(self, descriptor: int) -> bool:
        status = os.fstat(descriptor)
        if (status.st_dev, status.st_ino) != self.identity or status.st_size < self.offset:
            return True
        if status.st_size == self.offset:
            return False
        if status.st_size - self.offset > PEEK_MAX_BYTES:
            return True
        fingerprint, length = self.fingerprint
        if length and digest(os.pread(descriptor, length, 0)) != fingerprint:
            return True  # rewritten from its start (copytruncate) since the step
        start = self.offset - len(self.carry)
        data = os.pread(descriptor, status.st_size - start, start)
        if not data.startswith(self.carry) or len(data) < status.st_size - start:
            return True  # rewritten meanwhile
        if any(needle in data for needle in self.needles):
            return True
        self.offset = start + len(data)
        self.carry = data[-self.overlap :] if self.overlap else b""
        return False


def log_peek(settings: SourceSettings, needles: frozenset[bytes]) -> LogPeek | None:
    """The peek at the source's log file; None for a journal (its entries step at once)."""
    return None if settings.journal else LogPeek(settings.path, needles)
