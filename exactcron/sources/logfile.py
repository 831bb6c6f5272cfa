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

The checkpoint format is in sources/checkpoint.py, rotation naming in
sources/rotation.py.

Over 400 lines: the reader, its file handles and the bisection share the
files found this run (`_File`) and are read together.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, BinaryIO

from exactcron.atomic import NotPlainFileError, file_kind, open_regular
from exactcron.errors import LogUnreadableError
from exactcron.logs import log
from exactcron.sources.base import StampReader
from exactcron.sources.checkpoint import (
    FINGERPRINT_BYTES,
    MAX_ROTATED_CANDIDATES,
    Checkpoint,
    FileMark,
    digest,
)
from exactcron.sources.compressed import ToolMissingError, is_compressed, open_log
from exactcron.sources.compressed import errors as _decompress_errors
from exactcron.sources.rotation import RotatedNames, rotated_candidates

CHUNK_BYTES = 1 << 20
# Smaller unseen files are read whole: bisecting would save less than it costs.
BISECT_MIN_BYTES = 4 << 20
# Bisection stops when the range is this small, and aims this far before the
# window, so that stamps a little out of order (several writers) are not skipped.
BISECT_STOP_BYTES = 64 * 1024
BISECT_SLACK = timedelta(minutes=10)


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
        with self._opened_files() as (live, rotated):
            yield from self._blocks_of(live, rotated, stop)

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
        with self._opened_files() as (live, rotated):
            return self._skip_to_end(live, rotated)

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

    @contextmanager
    def _opened_files(self) -> Iterator[tuple[_File | None, list[_File]]]:
        """The live log and its rotated copies, open, all closed again on the way out
        (also when finding the rotated copies fails after the live one is open)."""
        live = self._live_file()
        try:
            rotated = self._rotated_files()
        except BaseException:
            _close_all([live])
            raise
        try:
            yield live, rotated
        finally:
            _close_all([live, *rotated])

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
            digest(head),
            len(head),
            offset,
            file.status.st_dev,
            file.status.st_ino,
            complete,
        )


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
