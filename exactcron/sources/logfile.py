"""A log file read from a checkpoint, across rotations.

A file is known by a fingerprint of its first bytes (of the decompressed
content for .gz, .bz2, .xz and .zst), not by its name or inode: logrotate renames,
copies, truncates and compresses, and ext4 hands a freed inode number to the
next new file at once. The checkpoint keeps a mark (fingerprint, offset) for
the live file and for each rotated sibling seen, so that a file is finished
wherever rotation moved it, and lines a writer appended to a renamed file
before reopening its log (rsyslog until its HUP) are still read.

A file never seen before is new since the last run: it is read whole, except
that the part of a large file older than the timeout window is skipped by
bisecting on timestamps (those lines grant nothing). Only complete lines are
returned; an unterminated last line waits for its end.

Over 400 lines: the checkpoint format, rotation naming, the reader and the
bisection still live together; to be split into sources/checkpoint.py and
sources/rotation.py (issue 19).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

from exactcron.atomic import NotPlainFileError, file_kind, open_regular
from exactcron.errors import LogUnreadableError
from exactcron.sources.compressed import SUFFIXES, ToolMissingError, is_compressed, open_log
from exactcron.sources.compressed import errors as _decompress_errors

log = logging.getLogger("exactcron")

FINGERPRINT_BYTES = 1024
CHUNK_BYTES = 1 << 20
# Smaller unseen files are read whole: bisecting would save less than it costs.
BISECT_MIN_BYTES = 4 << 20
# Bisection stops when the range is this small, and aims this far before the
# window, so that stamps a little out of order (several writers) are not skipped.
BISECT_STOP_BYTES = 64 * 1024
BISECT_SLACK = timedelta(minutes=10)
# The newest rotated siblings examined (and remembered) per run.
MAX_ROTATED_CANDIDATES = 16
CHECKPOINT_FORMAT = 2
# The "trusted from" marks kept per source: those of the last skip and older
# ones of files not seen then, newest first.
MAX_TRUSTED_FROM = 4 * MAX_ROTATED_CANDIDATES

# The part logrotate puts between a log's name and a compression suffix: a
# number (`rotate`, `start`), or the date of `dateext` as any `dateformat`
# writes it (`-%Y%m%d`, `.%Y-%m-%d`, `_%Y%m%d%H%M%S`, `-%s`). Without a
# separator, only a whole date (`%Y%m%d`, 8 digits or more): `mail2.log` is
# another log, not a rotated `mail.log`.
_ROTATION = r"(?:\.\d{1,6}|[-._@+]\d(?:[\d\-_.:+@T]{0,40}\d)?|\d{8}(?:[\d\-_.:+@T]{0,40}\d)?)"
_COMPRESSION = "(?:" + "|".join(re.escape(suffix) for suffix in SUFFIXES) + ")?"
# A numbered copy's number, once the suffixes are off: the smaller, the newer.
_NUMBERED = re.compile(r"\.(\d{1,6})")

StampReader = Callable[[bytes], datetime | None]


@dataclass(frozen=True)
class FileMark:
    """How far one file (known by the fingerprint of its first bytes) has been read."""

    fingerprint: str
    fingerprint_length: int
    offset: int
    device: int = 0
    inode: int = 0
    # A compressed file read to its end (or skipped as too old): it never
    # changes again, so it is not decompressed again.
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "fingerprint_length": self.fingerprint_length,
            "offset": self.offset,
            "device": self.device,
            "inode": self.inode,
            "complete": self.complete,
        }

    @classmethod
    def from_json(cls, document: object) -> FileMark | None:
        if not isinstance(document, dict):
            return None
        try:
            mark = cls(
                str(document["fingerprint"]),
                int(document["fingerprint_length"]),
                int(document["offset"]),
                int(document.get("device", 0)),
                int(document.get("inode", 0)),
                document.get("complete", False) is True,
            )
        except (KeyError, TypeError, ValueError):
            return None
        if mark.offset < 0 or not 0 <= mark.fingerprint_length <= FINGERPRINT_BYTES:
            return None
        return mark

    def matches(self, head: bytes) -> bool:
        # A mark taken of an empty file identifies nothing; its offset is 0,
        # so treating the file as unseen reads the same bytes.
        if self.fingerprint_length == 0 or len(head) < self.fingerprint_length:
            return False
        return _digest(head[: self.fingerprint_length]) == self.fingerprint


@dataclass(frozen=True)
class Checkpoint:
    """Where reading of one log stopped: the live file and its recent rotated siblings."""

    live: FileMark | None
    rotated: tuple[FileMark, ...] = ()
    # Refused by `written_by` (others could write the log): what is written
    # until a run finds it trusted again is skipped unread (LogReader.skip_to_end).
    refused: bool = False
    # Where each file skipped that way becomes trusted: no byte before these
    # marks is ever read, not by a rebuild nor a first run (LogReader's `floor`).
    trusted_from: tuple[FileMark, ...] = ()

    # What `status` shows: the live file's identity and offset.
    @property
    def device(self) -> int:
        return self.live.device if self.live else 0

    @property
    def inode(self) -> int:
        return self.live.inode if self.live else 0

    @property
    def offset(self) -> int:
        return self.live.offset if self.live else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            # The live file's identity and offset at the top, as `status --json` has always shown them.
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "live": self.live.to_json() if self.live else None,
            "rotated": [mark.to_json() for mark in self.rotated],
            **({"refused": True} if self.refused else {}),
            **({"trusted_from": [mark.to_json() for mark in self.trusted_from]} if self.trusted_from else {}),
        }

    @classmethod
    def from_json(cls, document: object) -> Checkpoint | None:
        """A checkpoint, or None for anything this version did not write."""
        if not isinstance(document, dict):
            return None
        if "format" not in document:
            # Format 1 was one flat mark for the live file.
            mark = FileMark.from_json(document)
            return cls(mark) if mark is not None else None
        if document.get("format") != CHECKPOINT_FORMAT:
            return None
        raw_live = document.get("live")
        live = None if raw_live is None else FileMark.from_json(raw_live)
        raw_rotated = document.get("rotated", [])
        if (raw_live is not None and live is None) or not isinstance(raw_rotated, list):
            return None
        rotated = [FileMark.from_json(item) for item in raw_rotated]
        trusted_from = _marks_from_json(document.get("trusted_from", []))
        if any(mark is None for mark in rotated) or trusted_from is None:
            return None
        return cls(
            live,
            tuple(mark for mark in rotated if mark is not None),
            document.get("refused") is True,
            trusted_from,
        )

    def marks(self) -> list[FileMark]:
        return ([self.live] if self.live else []) + list(self.rotated)


@dataclass(frozen=True)
class Untrusted:
    """What is known of a source's log having been open to forgers (`written_by` refused it).

    Kept twice, in its checkpoint and in a file of its own (state.TRUST_FILE),
    and the two read as their union: losing either file (broken, set aside)
    loses neither the refusal nor where the log is trusted from again.
    """

    refused: bool = False
    trusted_from: tuple[FileMark, ...] = ()

    def __bool__(self) -> bool:
        return self.refused or bool(self.trusted_from)

    def union(self, other: Untrusted) -> Untrusted:
        return Untrusted(
            self.refused or other.refused, merge_trusted_from(self.trusted_from, other.trusted_from)
        )

    def to_json(self) -> dict[str, Any]:
        return {"refused": self.refused, "trusted_from": [mark.to_json() for mark in self.trusted_from]}

    @classmethod
    def from_json(cls, document: object) -> Untrusted | None:
        """None for anything this version did not write."""
        if not isinstance(document, dict):
            return None
        marks = _marks_from_json(document.get("trusted_from", []))
        if marks is None:
            return None
        return cls(document.get("refused") is True, marks)

    @classmethod
    def of(cls, checkpoint: Checkpoint | None) -> Untrusted:
        if checkpoint is None:
            return cls()
        return cls(checkpoint.refused, checkpoint.trusted_from)


def merge_trusted_from(*groups: Iterable[FileMark]) -> tuple[FileMark, ...]:
    """The marks of every group, one per file (the later of two: the safer), first groups first.

    A mark of an empty file identifies nothing (and nothing was skipped in it): dropped.
    """
    merged: dict[tuple[str, int], FileMark] = {}
    for group in groups:
        for mark in group:
            if mark.fingerprint_length == 0:
                continue
            key = (mark.fingerprint, mark.fingerprint_length)
            known = merged.get(key)
            if known is None or (not known.complete and (mark.complete or mark.offset > known.offset)):
                merged[key] = mark
    return tuple(merged.values())[:MAX_TRUSTED_FROM]


def _marks_from_json(document: object) -> tuple[FileMark, ...] | None:
    if not isinstance(document, list):
        return None
    marks = [FileMark.from_json(item) for item in document]
    if any(mark is None for mark in marks):
        return None
    return tuple(mark for mark in marks if mark is not None)


def _digest(data: bytes) -> str:
    import hashlib  # not needed by a run that finds nothing new

    return hashlib.sha256(data).hexdigest()


class RotatedNames:
    """Which names in a directory are rotated copies of one log.

    `mail.log` rotates to `mail.log.1`, `mail.log-20261125` (any `dateformat`)
    and, with logrotate's `extension .log` (or `addextension`), to
    `mail.1.log` and `mail-20261125.log`; each perhaps compressed.
    """

    def __init__(self, name: str) -> None:
        stem, dot, extension = name.rpartition(".")
        forms = [re.escape(name) + _ROTATION]
        if dot and stem:
            forms.append(re.escape(stem) + _ROTATION + re.escape("." + extension))
        self._pattern = re.compile("(?:" + "|".join(forms) + ")" + _COMPRESSION)
        self._extension = "." + extension if dot and stem else ""
        self._name = name

    def match(self, candidate: str) -> bool:
        return candidate != self._name and self._pattern.fullmatch(candidate) is not None

    def number(self, candidate: str) -> int | None:
        """The rotation number of `path.N` (or `path.N.ext`), None for a dated copy."""
        for suffix in SUFFIXES:
            candidate = candidate.removesuffix(suffix)
        if candidate.startswith(self._name):
            rest = candidate[len(self._name) :]
        else:
            rest = candidate.removesuffix(self._extension)[len(self._name) - len(self._extension) :]
        found = _NUMBERED.fullmatch(rest)
        return int(found.group(1)) if found else None


@dataclass
class _File:
    """A file found this run: the live log or a rotated sibling."""

    path: Path
    status: os.stat_result
    live: bool
    head: bytes = b""
    # The file as opened and checked (a regular file) when found: every later
    # read goes through it, never through its name, which may be replaced by then.
    handle: BinaryIO | None = None

    @property
    def compressed(self) -> bool:
        return is_compressed(self.path)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


@contextmanager
def _content(file: _File) -> Iterator[IO[bytes]]:
    """The (decompressed) bytes of `file` from its start, read through its checked
    descriptor (a decompressor gets that descriptor, never the name)."""
    assert file.handle is not None
    descriptor = os.dup(file.handle.fileno())
    os.lseek(descriptor, 0, os.SEEK_SET)
    with os.fdopen(descriptor, "rb") as raw:
        if not file.compressed:
            yield raw
            return
        with open_log(file.path, raw) as stream:
            yield stream


def _close_all(files: Iterable[_File | None]) -> None:
    for file in files:
        if file is not None:
            file.close()


class LogReader:
    """Reads the new complete lines of one configured log.

    `since` (now - timeout) and `stamp_of` (a line's time) let the reader skip
    the part of an unseen file that cannot grant anything; without them every
    unseen file is read whole. `olddir` is where logrotate moves rotated files,
    when not beside the log; `rotated` are globs naming other rotated copies.
    """

    def __init__(
        self,
        path: Path,
        checkpoint: Checkpoint | None,
        since: datetime | None = None,
        stamp_of: StampReader | None = None,
        olddir: Path | None = None,
        rotated: Sequence[str] = (),
        floor: Sequence[FileMark] = (),
    ) -> None:
        self.path = path
        # Checkpoint.trusted_from: never a byte before these, whatever else says where to start.
        self.floor = tuple(floor)
        self.start = checkpoint
        self.checkpoint = checkpoint
        self.since = since
        self.stamp_of = stamp_of
        self.olddir = olddir
        self.rotated = tuple(rotated)
        self.bytes_read = 0
        # Set when blocks() stopped because `stop` said so: the checkpoint is then
        # where reading stopped, and the files not reached keep their marks.
        self.stopped = False
        self._reached = 0  # offset after the last block of the file being read

    def lines(self) -> Iterator[bytes]:
        """Every complete line (without its LF) written since the checkpoint."""
        for block, end in self.blocks():
            yield from block[: end - 1].split(b"\n")

    def blocks(self, stop: Callable[[], bool] | None = None) -> Iterator[tuple[bytes, int]]:
        """The complete lines written since the checkpoint, in blocks: (block, end),
        where block[:end] is whole lines each ending in LF (what follows is not
        to be read); updates `self.checkpoint` once exhausted.

        `stop` is asked after each block is consumed; when it says so, reading
        ends there and the checkpoint is exactly what was read: the file being
        read is marked after its last block, the files not reached keep their marks.
        """
        live = self._live_file()
        try:
            rotated = self._rotated_files()
        except BaseException:
            _close_all([live])
            raise
        try:
            yield from self._blocks_of(live, rotated, stop)
        finally:
            _close_all([live, *rotated])

    def _blocks_of(
        self, live: _File | None, rotated: list[_File], stop: Callable[[], bool] | None
    ) -> Iterator[tuple[bytes, int]]:
        assigned = self._assign_marks(live, rotated)
        new_marks: list[FileMark] = []
        live_mark: FileMark | None = None
        # Oldest data first: rotated files from the oldest name to the newest, then the live file.
        files = [*reversed(rotated), *([live] if live else [])]
        for index, file in enumerate(files):
            mark = assigned.get(id(file))
            if mark is not None and mark.complete and file.compressed:
                new_marks.append(mark)
                continue
            blocks = self._read_file(file, mark)
            while True:
                try:
                    block = next(blocks)
                except StopIteration as finished:
                    end = finished.value
                    break
                yield block
                if stop is not None and stop():
                    blocks.close()
                    self.stopped = True
                    end = self._reached
                    break
            if end is None:
                continue
            # A compressed file left partway is not complete: the next run resumes it.
            done = self._mark(file, end, complete=file.compressed and not self.stopped)
            if file.live:
                live_mark = done
            else:
                new_marks.append(done)
            if self.stopped:
                for later in files[index + 1 :]:
                    kept = assigned.get(id(later))
                    if kept is not None and later.live:
                        live_mark = kept
                    elif kept is not None:
                        new_marks.append(kept)
                break
        self._warn_about_lost_marks(assigned, live)
        new_marks.reverse()  # newest first, as found
        self.checkpoint = Checkpoint(live_mark, tuple(new_marks[:MAX_ROTATED_CANDIDATES]))

    def skip_to_end(self) -> tuple[int, int, bool]:
        """Mark the live log and each rotated copy read to the end of its last whole
        line, reading none of them; sets `self.checkpoint`.

        Returns the bytes passed over (of uncompressed files), the number of
        files, and whether one ends in a line not yet ended (or could not be
        looked at): its end, written later, would be read with its start.
        """
        live = self._live_file()
        try:
            rotated = self._rotated_files()
        except BaseException:
            _close_all([live])
            raise
        try:
            return self._skip_to_end(live, rotated)
        finally:
            _close_all([live, *rotated])

    def _skip_to_end(self, live: _File | None, rotated: list[_File]) -> tuple[int, int, bool]:
        assigned = self._assign_marks(live, rotated)
        skipped, unfinished = 0, False
        live_mark: FileMark | None = None
        marks: list[FileMark] = []
        for file in [*([live] if live else []), *rotated]:
            end = 0
            if not file.compressed:
                assert file.handle is not None
                try:
                    found = _last_line_end(file.handle.fileno())
                except OSError:
                    unfinished = True
                    continue
                end, size = found
                unfinished = unfinished or end < size
                previous = assigned.get(id(file))
                skipped += max(end - (previous.offset if previous is not None else 0), 0)
            mark = self._mark(file, end, complete=file.compressed)
            if file.live:
                live_mark = mark
            else:
                marks.append(mark)
        self.checkpoint = Checkpoint(live_mark, tuple(marks[:MAX_ROTATED_CANDIDATES]))
        return skipped, len(marks) + (live_mark is not None), unfinished

    def unread_bytes(self) -> int | None:
        """Bytes of the live file past the checkpoint, or None when unknown."""
        try:
            with open_regular(self.path) as stream:
                size = os.fstat(stream.fileno()).st_size
                head = stream.read(FINGERPRINT_BYTES)
        except OSError:
            return None
        mark = self.checkpoint.live if self.checkpoint else None
        if mark is not None and (mark.matches(head) or mark.fingerprint_length == 0):
            return max(size - mark.offset, 0)
        return size

    # -- finding the files ------------------------------------------------------

    def _live_file(self) -> _File | None:
        # Through a symlink the configuration names, but only to a regular file,
        # and never waiting: a FIFO (or a device) planted there is refused.
        try:
            handle = open_regular(self.path)
        except FileNotFoundError:
            # Rotated away and not recreated yet: not an error; the rotated
            # copy is found by its fingerprint.
            return None
        except PermissionError:
            raise LogUnreadableError(f"cannot read log {self.path}: permission denied") from None
        except NotPlainFileError as error:
            # A directory worded as open(2) words it, as it always was.
            why = (
                os.strerror(errno.EISDIR)
                if error.errno == errno.EISDIR
                else f"{error.strerror}; refusing it (a log is a regular file)"
            )
            raise LogUnreadableError(f"cannot read log {self.path}: {why}") from None
        except OSError as error:
            raise LogUnreadableError(f"cannot read log {self.path}: {error.strerror}") from None
        try:
            descriptor = handle.fileno()
            return _File(
                self.path, os.fstat(descriptor), True, os.pread(descriptor, FINGERPRINT_BYTES, 0), handle
            )
        except OSError as error:
            handle.close()
            raise LogUnreadableError(f"cannot read log {self.path}: {error.strerror}") from None

    def _rotated_files(self) -> list[_File]:
        """Rotated siblings, newest first, with their (decompressed) first bytes."""
        found: list[_File] = []
        names = RotatedNames(self.path.name)
        for path in rotated_candidates(self.path, self.olddir, self.rotated):
            try:
                # Not through a link: logrotate writes regular files, and a link
                # or a FIFO among the copies was put there by someone else.
                status = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(status.st_mode):
                found.append(_File(path, status, False))
            else:
                self._not_a_copy(path, file_kind(status.st_mode))
        found.sort(key=lambda file: _rotation_age(file, names))
        files: list[_File] = []
        try:
            for file in found[:MAX_ROTATED_CANDIDATES]:
                try:
                    # Checked again on the descriptor: the name may have been replaced since.
                    file.handle = open_regular(file.path, follow=False)
                    file.status = os.fstat(file.handle.fileno())
                except NotPlainFileError as error:
                    self._not_a_copy(file.path, str(error.strerror))
                    continue
                except OSError as error:
                    log.debug("%s: skipped unreadable rotated file: %s", file.path, error)
                    continue
                try:
                    with _content(file) as stream:
                        file.head = stream.read(FINGERPRINT_BYTES)
                except ToolMissingError as error:
                    log.warning("%s", error)
                    file.close()
                    continue
                except _decompress_errors() as error:
                    log.debug("%s: skipped unreadable rotated file: %s", file.path, error)
                    file.close()
                    continue
                files.append(file)
        except BaseException:
            _close_all(files)
            raise
        kept = _without_compressed_copies(files)
        kept_ids = {id(file) for file in kept}
        _close_all(file for file in files if id(file) not in kept_ids)
        return kept

    def _not_a_copy(self, path: Path, what: str) -> None:
        log.warning(
            "%s: %s, not read as a rotated copy of %s (only regular files are, never through a link)",
            path,
            what,
            self.path,
        )

    def _assign_marks(self, live: _File | None, rotated: list[_File]) -> dict[int, FileMark]:
        """Each mark of the checkpoint to the file that holds it now, by fingerprint."""
        assigned: dict[int, FileMark] = {}
        if self.start is None:
            return assigned
        # The live file first, then uncompressed siblings (they may still grow).
        order = ([live] if live else []) + sorted(rotated, key=lambda file: file.compressed)
        for mark in self.start.marks():
            for file in order:
                if id(file) not in assigned and mark.matches(file.head):
                    assigned[id(file)] = mark
                    break
        return assigned

    def _warn_about_lost_marks(self, assigned: dict[int, FileMark], live: _File | None) -> None:
        if self.start is None or self.start.live is None:
            return
        mark = self.start.live
        if mark.fingerprint_length == 0 or any(found is mark for found in assigned.values()):
            return
        if live is not None and (live.status.st_dev, live.status.st_ino) == (mark.device, mark.inode):
            how = "was truncated in place (no rotated copy has its first bytes)"
        else:
            how = "is gone: rotated to a name not watched, or deleted"
        log.warning(
            "%s: the file read last time (up to byte %d) %s; lines written to it after the last run "
            "may be lost (guessed: reading the current file from its start)",
            self.path,
            mark.offset,
            how,
        )

    # -- reading ----------------------------------------------------------------

    def _read_file(
        self, file: _File, mark: FileMark | None
    ) -> Generator[tuple[bytes, int], None, int | None]:
        """Lines of `file` from its mark, or from the window start when unseen.

        Returns the offset reached, or None when the file could not be read.
        """
        opened = ExitStack()
        try:
            stream = opened.enter_context(_content(file))
        except OSError as error:
            if file.live:
                raise LogUnreadableError(f"cannot read log {file.path}: {error.strerror}") from None
            log.warning("%s: cannot read rotated file: %s", file.path, error)
            return None
        with opened:
            try:
                start = self._above_floor(file, stream, self._resume_at(file, mark, stream))
                return (yield from self._read(stream, start, final=file.compressed, path=file.path))
            except _decompress_errors() as error:
                log.warning("%s: stopped reading a damaged compressed file: %s", file.path, error)
                return None

    def _resume_at(self, file: _File, mark: FileMark | None, stream: IO[bytes]) -> int:
        """Where to read `file` from: its mark, or as a new file."""
        if mark is None:
            return self._unseen_start(file, stream)
        start = mark.offset
        if not file.compressed and start > os.fstat(stream.fileno()).st_size:
            # Same first bytes but shorter: truncated and rewritten
            # with the same start. The new bytes were never read.
            log.warning("%s: shorter than where reading stopped; reading it from the start", file.path)
            return 0
        if start > 0 and not _line_ends_before(stream, start):
            # Same first bytes, but not the file read last time (a restore,
            # `sed -i`): resuming would start mid-line, where a fragment of
            # another program's line could match a rule.
            log.warning(
                "%s: byte %d, where reading stopped, is no longer at the start of a line: "
                "the file was replaced; reading it as a new file",
                file.path,
                start,
            )
            return self._unseen_start(file, stream)
        return start

    def _above_floor(self, file: _File, stream: IO[bytes], start: int) -> int:
        """`start`, or where the file is trusted from (Checkpoint.trusted_from) when that is later."""
        floors = [mark for mark in self.floor if mark.matches(file.head)]
        if start < 0 or not floors:
            return start  # -1: skipped whole
        floor = max(floors, key=lambda mark: (mark.complete, mark.offset))
        if not floor.complete and start >= floor.offset:
            return start
        if file.compressed:
            # The floor was taken of these bytes before they were compressed (or of this file whole).
            if floor.complete or not _line_ends_before(stream, floor.offset):
                return -1
            return floor.offset
        size = os.fstat(stream.fileno()).st_size
        if not floor.complete and floor.offset <= size and _line_ends_before(stream, floor.offset):
            return floor.offset
        # Its first bytes are those of a file written while the log was refused,
        # but it is not that file as it was then: none of what it holds is trusted.
        log.warning(
            "%s: begins as a file written while `written_by` refused the log; skipped to its end",
            file.path,
        )
        return _last_line_end(stream.fileno())[0]

    def _unseen_start(self, file: _File, stream: IO[bytes]) -> int:
        if self.start is not None and not file.live:
            log.warning(
                "%s: rotated file never seen before (more than one rotation since the last run, "
                "or a file that was empty then); reading it from the start of the timeout window",
                file.path,
            )
        if file.compressed:
            if self.start is None and self.since is not None:
                # First run: an old compressed rotation cannot hold a login
                # inside the window; its mtime says when it was last written.
                modified = datetime.fromtimestamp(file.status.st_mtime, self.since.tzinfo)
                if modified < self.since - BISECT_SLACK:
                    return -1
            return 0
        if self.since is None or self.stamp_of is None or file.status.st_size < BISECT_MIN_BYTES:
            return 0
        start = window_start(stream, file.status.st_size, self.since - BISECT_SLACK, self.stamp_of)
        if start:
            log.info("%s: skipped %d bytes logged before %s", file.path, start, self.since)
        return start

    def _read(
        self, stream: IO[bytes], offset: int, final: bool, path: Path
    ) -> Generator[tuple[bytes, int], None, int]:
        """Blocks of complete lines from `offset` on (-1: none); returns the offset after the last one.

        Lines are not split here, and blocks are not copied: a block goes to
        the parser whole with where its last whole line ends, and the parser
        looks only at the lines that hold a needle. A plain file is read
        again from the start of a line cut by the end of a block; a
        compressed stream keeps the cut part and prepends it.
        """
        if offset < 0:
            return 0  # skipped whole; the mark says complete
        stream.seek(offset)
        position = offset
        carry = b""
        # Bytes of a line longer than a block, passed over up to its end: no
        # login line is that long, and keeping it would cost its length in memory.
        skipped: int | None = None
        while True:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            if skipped is not None:
                cut = chunk.find(b"\n") + 1
                if cut == 0:
                    skipped += len(chunk)
                    continue
                position += skipped + cut
                self.bytes_read += skipped + cut
                log.warning("%s: skipped a line of %d bytes", path, skipped + cut)
                skipped = None
                chunk = chunk[cut:]
                if not chunk:
                    continue
            if carry:
                chunk = carry + chunk
                carry = b""
            # Lines end at LF only: a CR inside a line is data (perhaps an
            # attacker's), never the start of a new line.
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                if len(chunk) >= CHUNK_BYTES:
                    skipped = len(chunk)
                else:
                    carry = chunk  # the start of a line not yet ended
                continue
            position += end
            self.bytes_read += end
            self._reached = position
            yield chunk, end
            if end < len(chunk):
                if final:
                    carry = chunk[end:]
                else:
                    stream.seek(position)
        if skipped is not None:
            if final:
                log.warning("%s: ignored an unterminated last line of %d bytes", path, skipped)
                position += skipped
        elif carry and final:
            # A finished (compressed) file whose last line has no end: a cut
            # line could carry a cut address, so it grants nothing.
            log.warning("%s: ignored an unterminated last line of %d bytes", path, len(carry))
            position += len(carry)
        return position

    def _mark(self, file: _File, offset: int, complete: bool) -> FileMark:
        head = file.head
        if len(head) < FINGERPRINT_BYTES and not file.compressed and file.handle is not None:
            # The live file may have grown since its first bytes were taken.
            try:
                now_head = os.pread(file.handle.fileno(), FINGERPRINT_BYTES, 0)
                if now_head.startswith(head):
                    head = now_head
            except OSError:
                pass
        # A compressed file is final: once read to its end, it is done.
        return FileMark(
            _digest(head),
            len(head),
            offset,
            file.status.st_dev,
            file.status.st_ino,
            complete,
        )


def rotated_directories(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Path]:
    """Every directory whose entries may be read as rotated copies of the log at `path`:
    its own (beside the name configured, not the file a symlink leads to: logrotate
    renames the name it is given), `olddir`, and the fixed part of each `rotated` glob."""
    directories = [path.parent] + ([olddir] if olddir is not None else [])
    for pattern in rotated:
        directory = Path(pattern).parent
        while any(character in str(directory) for character in "*?["):
            directory = directory.parent
        directories.append(directory)
    return directories


def rotated_candidates(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Path]:
    """The names read as rotated copies of the log at `path`, if they are files: its
    siblings named as logrotate names them, beside it and in `olddir`, and what the
    `rotated` globs name."""
    names = RotatedNames(path.name)
    found: list[Path] = []
    for directory in [path.parent] + ([olddir] if olddir is not None else []):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        found += [Path(entry.path) for entry in entries if names.match(entry.name)]
    seen = set(found)
    found += [globbed for globbed in _globbed(rotated, path) if globbed not in seen]
    return found


def _last_line_end(descriptor: int) -> tuple[int, int]:
    """Where the last whole line of the open plain file ends, and its size (raises OSError)."""
    size = position = os.fstat(descriptor).st_size
    while position > 0:
        start = max(position - CHUNK_BYTES, 0)
        found = os.pread(descriptor, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1, size
        position = start
    return 0, size


def _line_ends_before(stream: IO[bytes], offset: int) -> bool:
    """Whether the byte before `offset` ends a line (leaves the stream at `offset`)."""
    stream.seek(offset - 1)
    return stream.read(1) == b"\n"


def files_signature(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Any] | None:
    """The identity, size and times of a log and of its rotated siblings, as JSON values.

    Equal signatures mean nothing was written, renamed, truncated or
    created since: reading from the checkpoint would find nothing new. None
    when a directory cannot be listed: then what changed is unknown.
    """
    signature: list[Any] = []
    names = RotatedNames(path.name)
    for directory in [path.parent] + ([olddir] if olddir else []):
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            return None
        for entry in entries:
            if entry.name != path.name and not names.match(entry.name):
                continue
            signature.append(_file_state(entry.path))
    signature += [_file_state(str(found)) for found in _globbed(rotated, path)]
    return signature


def _file_state(path: str) -> list[Any]:
    try:
        status = os.stat(path)
    except OSError as error:
        return [path, error.errno]
    return [
        path,
        status.st_dev,
        status.st_ino,
        status.st_mode,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    ]


def _globbed(patterns: Sequence[str], live: Path) -> list[Path]:
    """The files the `rotated` globs name, sorted, without the live log itself."""
    if not patterns:
        return []
    import glob  # only for a source with `rotated`

    found = {Path(name) for pattern in patterns for name in glob.glob(pattern)}
    found.discard(live)
    return sorted(found)


def _rotation_age(file: _File, names: RotatedNames) -> tuple[int, float]:
    """Sort key, newest first: by rotation number for path.N, else by mtime."""
    number = names.number(file.path.name) if names.match(file.path.name) else None
    if number is not None:
        return (number, 0.0)
    return (0, -file.status.st_mtime)


def _without_compressed_copies(files: list[_File]) -> list[_File]:
    """Drop a compressed file whose uncompressed original is still there.

    logrotate writes path.1.gz before it deletes path.1; a run in between
    sees the same content twice (once perhaps half written).
    """
    plain_heads = {file.head for file in files if not file.compressed and file.head}
    return [file for file in files if not (file.compressed and file.head in plain_heads)]


def window_start(stream: IO[bytes], size: int, since: datetime, stamp_of: StampReader) -> int:
    """The start of a line at or before the first line stamped `since` or later.

    Bisects on the stamps of the first stamped line after each probe; a probe
    whose stamp cannot be read counts as new, so nothing new is skipped.
    """
    low, high = 0, size
    while high - low > BISECT_STOP_BYTES:
        middle = (low + high) // 2
        probe = _first_stamp_after(stream, middle, high, stamp_of)
        if probe is None:
            high = middle
            continue
        line_start, stamp = probe
        if stamp < since:
            low = line_start
        else:
            high = middle
    return low


def _first_stamp_after(
    stream: IO[bytes], position: int, limit: int, stamp_of: StampReader
) -> tuple[int, datetime] | None:
    stream.seek(position)
    block = stream.read(BISECT_STOP_BYTES)
    start = block.find(b"\n") + 1
    while 0 < start < len(block) and position + start < limit:
        end = block.find(b"\n", start)
        if end < 0:
            return None
        stamp = stamp_of(block[start:end])
        if stamp is not None:
            return position + start, stamp
        start = end + 1
    return None
