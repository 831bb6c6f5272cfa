"""A log's whole history: its rotated copies, oldest first, then the live file.

`update` reads a log from its checkpoint and looks at only the newest
rotated copies; `report` reads what a log and every copy logrotate kept
hold since a time. The copies are found by the names logrotate gives them
(the same `RotatedNames` the reader uses) and opened as they are read
everywhere: regular files only, a rotated copy never through a link.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, BinaryIO

from exactcron.atomic import NotPlainFileError, file_kind, open_regular
from exactcron.errors import LogUnreadableError
from exactcron.logs import log
from exactcron.sources.compressed import SUFFIXES, is_compressed, open_log
from exactcron.sources.rotation import RotatedNames, rotated_candidates


@dataclass
class HistoryFile:
    """One file of a log's history, opened (as whoever found it) and not read yet."""

    path: Path
    handle: BinaryIO

    def close(self) -> None:
        self.handle.close()

    @contextmanager
    def content(self) -> Iterator[IO[bytes]]:
        """Its (decompressed) bytes from the start, read through the descriptor opened
        when it was found, never through its name."""
        descriptor = os.dup(self.handle.fileno())
        os.lseek(descriptor, 0, os.SEEK_SET)
        with os.fdopen(descriptor, "rb") as raw:
            if not is_compressed(self.path):
                yield raw
                return
            with open_log(self.path, raw) as stream:
                yield stream


def open_history(path: Path, since: datetime | None = None) -> list[HistoryFile]:
    """The live log at `path` and its rotated copies, opened, oldest first.

    A copy last written before `since` holds nothing newer and is not opened.
    A missing live log (rotated away a moment ago) is no error; an unreadable
    one is (LogUnreadableError). A copy that is not a regular file, or that
    cannot be opened, is skipped with a warning.
    """
    names = RotatedNames(path.name)
    copies: list[tuple[tuple[int, float], Path]] = []
    for candidate in rotated_candidates(path):
        try:
            status = os.lstat(candidate)
        except OSError:
            continue
        if not stat.S_ISREG(status.st_mode):
            log.warning(
                "%s: %s, not read as a rotated copy of %s", candidate, file_kind(status.st_mode), path
            )
            continue
        if since is not None and status.st_mtime < since.timestamp():
            continue
        copies.append((_age(candidate, names, status.st_mtime), candidate))
    plain = {candidate.name for _, candidate in copies}
    opened: list[HistoryFile] = []
    try:
        # Oldest first: the highest number, then the earliest written.
        for _, candidate in sorted(copies, reverse=True):
            if is_compressed(candidate) and _without_suffix(candidate.name) in plain:
                # logrotate writes path.1.gz before it removes path.1: the same lines twice.
                continue
            try:
                opened.append(HistoryFile(candidate, open_regular(candidate, follow=False)))
            except NotPlainFileError as error:
                log.warning("%s: %s, not read as a rotated copy of %s", candidate, error.strerror, path)
            except OSError as error:
                log.warning("%s: cannot read: %s", candidate, error.strerror)
        try:
            opened.append(HistoryFile(path, open_regular(path)))
        except FileNotFoundError:
            if not opened:
                raise LogUnreadableError(f"cannot read log {path}: no such file") from None
        except PermissionError:
            raise LogUnreadableError(f"cannot read log {path}: permission denied") from None
        except OSError as error:
            raise LogUnreadableError(f"cannot read log {path}: {error.strerror}") from None
    except BaseException:
        for each in opened:
            each.close()
        raise
    return opened


def _age(path: Path, names: RotatedNames, mtime: float) -> tuple[int, float]:
    """Sort key, newest first: a numbered copy by its number, a dated one by when it was written."""
    number = names.number(path.name)
    return (number, 0.0) if number is not None else (0, -mtime)


def _without_suffix(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
