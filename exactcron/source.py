"""A log file read from a checkpoint, across rotations.

A file is known by a fingerprint of its first bytes, not by its name or
inode: logrotate renames, copies, truncates and compresses, and ext4 hands a
freed inode number to the next new file at once. On each run the reader
finishes the file it was reading (wherever rotation moved it), then reads the
live file from the start. Only complete lines are returned; an unterminated
last line is left for the next run.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from exactcron.errors import LogUnreadableError

log = logging.getLogger("exactcron")

FINGERPRINT_BYTES = 1024
CHUNK_BYTES = 1 << 20
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# Names logrotate gives a rotated `path`: path.1, path.2.gz, path-20261125, path-20261125.gz
_ROTATED_SUFFIX = re.compile(r"^(?:\.\d{1,4}|-\d{8}(?:\d{2})?|-\d{4}-\d\d-\d\d)(?:\.gz|\.bz2|\.xz)?$")
MAX_ROTATED_CANDIDATES = 32


@dataclass(frozen=True)
class Checkpoint:
    """Where reading of one log stopped: the file (by fingerprint) and the offset."""

    device: int
    inode: int
    offset: int
    fingerprint: str
    fingerprint_length: int

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "fingerprint": self.fingerprint,
            "fingerprint_length": self.fingerprint_length,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint | None:
        try:
            checkpoint = cls(
                int(document["device"]),
                int(document["inode"]),
                int(document["offset"]),
                str(document["fingerprint"]),
                int(document["fingerprint_length"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if checkpoint.offset < 0 or not 0 <= checkpoint.fingerprint_length <= FINGERPRINT_BYTES:
            return None
        return checkpoint


def _open(path: Path) -> IO[bytes]:
    opener = _OPENERS.get(path.suffix)
    if opener is None:
        return open(path, "rb")
    return opener(path, "rb")  # type: ignore[no-any-return]


def fingerprint(stream: IO[bytes], length: int) -> str:
    stream.seek(0)
    return hashlib.sha256(stream.read(length)).hexdigest()


class LogReader:
    """Reads the new complete lines of one configured log."""

    def __init__(self, path: Path, checkpoint: Checkpoint | None) -> None:
        self.path = path
        self.start = checkpoint
        self.checkpoint = checkpoint
        self.bytes_read = 0

    def lines(self) -> Iterator[bytes]:
        """Every complete line written since the checkpoint; updates `self.checkpoint`."""
        live = self._open_live()
        try:
            if self.start is not None:
                if live is not None and self._is_same_file(live, self.start):
                    if os.fstat(live.fileno()).st_size >= self.start.offset:
                        yield from self._read(live, self.start.offset)
                        return
                    # Shorter than where we stopped: truncated in place
                    # (copytruncate); the copy, if any, holds the rest.
                    log.warning("%s shrank below the checkpoint; reading it from the start", self.path)
                    yield from self._finish_rotated(exclude=live)
                else:
                    yield from self._finish_rotated(exclude=live)
            # A live log that is missing was rotated away and not recreated
            # yet: the old checkpoint stays until it appears.
            if live is not None:
                yield from self._read(live, 0)
        finally:
            if live is not None:
                live.close()

    def unread_bytes(self) -> int | None:
        """Bytes of the live file past the checkpoint, or None when unknown."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return None
        if self.checkpoint is None:
            return size
        try:
            identity = self.path.stat()
        except OSError:
            return None
        if (identity.st_dev, identity.st_ino) != (self.checkpoint.device, self.checkpoint.inode):
            return size
        return max(size - self.checkpoint.offset, 0)

    def _open_live(self) -> IO[bytes] | None:
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            return None
        except PermissionError:
            raise LogUnreadableError(f"cannot read log {self.path}: permission denied") from None
        except OSError as error:
            raise LogUnreadableError(f"cannot read log {self.path}: {error.strerror}") from None

    def _is_same_file(self, stream: IO[bytes], checkpoint: Checkpoint) -> bool:
        if checkpoint.fingerprint_length == 0:
            status = os.fstat(stream.fileno())
            return (status.st_dev, status.st_ino) == (checkpoint.device, checkpoint.inode)
        return fingerprint(stream, checkpoint.fingerprint_length) == checkpoint.fingerprint

    def _finish_rotated(self, exclude: IO[bytes] | None) -> Iterator[bytes]:
        """Read the rest of the file the checkpoint names, found among rotated names."""
        assert self.start is not None
        if self.start.fingerprint_length == 0:
            return
        for candidate in self._rotated_candidates():
            try:
                stream = _open(candidate)
            except OSError:
                continue
            with stream:
                try:
                    same = self._is_same_file(stream, self.start)
                except (OSError, EOFError, lzma.LZMAError, ValueError):
                    continue
                if same:
                    yield from self._read(stream, self.start.offset, rotated=candidate)
                    return
        log.warning(
            "%s was rotated and the file read last time was not found among its rotated names; "
            "lines written to it after the last run may be missed",
            self.path,
        )

    def _rotated_candidates(self) -> list[Path]:
        directory = self.path.parent
        prefix = self.path.name
        try:
            names = [
                entry
                for entry in os.scandir(directory)
                if entry.name.startswith(prefix)
                and _ROTATED_SUFFIX.match(entry.name[len(prefix) :])
                and entry.is_file()
            ]
        except OSError:
            return []
        names.sort(key=lambda entry: entry.stat().st_mtime, reverse=True)
        return [Path(entry.path) for entry in names[:MAX_ROTATED_CANDIDATES]]

    def _read(self, stream: IO[bytes], offset: int, rotated: Path | None = None) -> Iterator[bytes]:
        """Complete lines from `offset` on; the checkpoint follows each chunk."""
        stream.seek(offset)
        position = offset
        carry = b""
        while True:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            chunk = carry + chunk
            end = chunk.rfind(b"\n")
            if end < 0:
                carry = chunk
                continue
            carry = chunk[end + 1 :]
            complete = chunk[: end + 1]
            position += len(complete)
            self.bytes_read += len(complete)
            # Split on LF only: a CR inside a line is data (perhaps an
            # attacker's), never the start of a new line.
            yield from complete[:-1].split(b"\n")
        if rotated is not None:
            # A rotated file is finished: a partial last line there will never
            # be completed, so it is read as it is.
            if carry:
                self.bytes_read += len(carry)
                yield carry
            return
        self.checkpoint = self._checkpoint_for(stream, position)

    def _checkpoint_for(self, stream: IO[bytes], offset: int) -> Checkpoint:
        status = os.fstat(stream.fileno())
        length = min(offset, FINGERPRINT_BYTES)
        return Checkpoint(status.st_dev, status.st_ino, offset, fingerprint(stream, length), length)
