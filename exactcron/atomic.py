"""Every file exactcron creates, replaces, appends to or reads back goes through here.

The directories it writes in (state_dir, a map's, the metrics and log
directories) may be writable by another user: the owner of state_dir when
root runs a command, or a member of the directory's group. Whatever name
such a user plants (a symbolic link, a hard link, a FIFO, a directory), no
write lands outside and no open blocks:

- a file is replaced whole: a new file under a random name created with
  O_EXCL|O_NOFOLLOW beside it (never an existing name, never through a
  link), written, then renamed over the name (a rename replaces a planted
  link itself, not its target);
- an append (log_file) opens with O_NOFOLLOW|O_NONBLOCK and keeps the
  file only when it is a regular file with one link, owned by the runner;
- a read opens with O_NONBLOCK and reads a regular file only.

Not `tempfile`: importing it costs more than the rest of a quiet run.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO

from exactcron import faults
from exactcron.errors import StateWriteError

_TEMPORARY_TRIES = 100


def create_temporary(path: Path, mode: int = 0o600) -> tuple[int, str]:
    """A new file `.NAME.XXXXXXXX.tmp` beside `path` (what remove_leftovers finds), open for writing.

    The name is random, and O_EXCL refuses any name that exists, a planted
    link, FIFO or directory included: nothing else is ever opened.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMPORARY_TRIES):
        temporary = str(path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(temporary, flags, mode), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {path}")


def write_atomically(
    path: Path,
    data: bytes | Iterable[bytes],
    mode: int = 0o644,
    keep_same: bool = False,
    durable: bool = True,
    what: str = "",
) -> bool:
    """Replace `path` with `data` so that readers see the old or the new file, whole.

    `data` may come in chunks, so that a large file is never held whole in
    memory. With `keep_same`, a file that already holds exactly `data` is
    left as it is (the copy is discarded); returns whether `path` was
    replaced. Without `durable`, no fsync (a file rewritten every minute).
    `what` names the file in an error (`metrics_file`, say).
    """
    directory = path.parent
    subject = f"{what} {path}" if what else str(path)
    try:
        handle, temporary = create_temporary(path)
    except OSError as error:
        where = subject if what else f"in {directory}"
        raise StateWriteError(f"cannot write {where}: {error.strerror}", error.errno) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            previous = _Comparison(path) if keep_same else None
            for chunk in [data] if isinstance(data, bytes) else data:
                stream.write(chunk)
                if previous is not None:
                    previous.feed(chunk)
            if previous is not None and previous.same():
                remove_quietly(Path(temporary))
                return False
            stream.flush()
            faults.point(f"{path.name}:written")
            os.fchmod(stream.fileno(), mode)
            if durable:
                os.fsync(stream.fileno())
        faults.point(f"{path.name}:synced")
        os.replace(temporary, path)
        faults.point(f"{path.name}:renamed")
        if durable:
            fsync_directory(directory)
    except OSError as error:
        remove_quietly(Path(temporary))
        raise StateWriteError(f"cannot write {subject}: {error.strerror}", error.errno) from None
    except BaseException:
        remove_quietly(Path(temporary))
        raise
    return True


class _Comparison:
    """Compares what is written, chunk by chunk, with the file it is to replace."""

    def __init__(self, path: Path) -> None:
        try:
            self._stream: BinaryIO | None = open_regular(path)
        except OSError:
            self._stream = None

    def feed(self, chunk: bytes) -> None:
        if self._stream is not None and self._stream.read(len(chunk)) != chunk:
            self._close()

    def same(self) -> bool:
        """True when the file held exactly what was fed, and nothing more."""
        if self._stream is None:
            return False
        try:
            return self._stream.read(1) == b""
        finally:
            self._close()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class NotPlainFileError(OSError):
    """A name that holds something else than a regular file of the runner's."""


def open_regular(path: Path, follow: bool = True) -> BinaryIO:
    """`path` opened for reading, when it is a regular file (through a link, unless not `follow`).

    O_NONBLOCK: a FIFO planted at the name never blocks the open; it is
    refused, as is a device or a directory. Raises OSError (FileNotFoundError
    when missing, NotPlainFileError naming what it is instead).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if not follow and error.errno == errno.ELOOP:
            raise NotPlainFileError(errno.ELOOP, "a symbolic link; not followed") from None
        raise
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            what = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise NotPlainFileError(what, f"not a regular file ({file_kind(mode)})")
        # Reads of a regular file never wait; blocking mode for the stream's (and a child's) sake.
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def file_kind(mode: int) -> str:
    """What a non-regular file is, in a few words for a message."""
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a file"


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file `path` (see open_regular)."""
    with open_regular(path) as stream:
        return stream.read()


def open_for_append(path: Path, mode: int = 0o640) -> int:
    """A descriptor appending to `path`, created if missing; never through a link.

    Kept only when it is a regular file with one link, owned by the running
    user: a hard link planted at the name would make the append land in a
    file of somewhere else; a FIFO would block the writer. Raises OSError
    with a message that says which.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotPlainFileError(errno.ELOOP, "a symbolic link; not followed") from None
        raise
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise NotPlainFileError(errno.EINVAL, "not a regular file")
        if status.st_nlink != 1:
            raise NotPlainFileError(errno.EMLINK, f"has {status.st_nlink} hard links; not appended to")
        if status.st_uid != os.geteuid():
            raise NotPlainFileError(errno.EPERM, f"owned by uid {status.st_uid}, not by the running user")
        # Writes to a regular file never wait; blocking mode for the stream's sake.
        os.set_blocking(descriptor, True)
        return descriptor
    except BaseException:
        os.close(descriptor)
        raise


# What create_temporary adds to a file's name (and a map tool's suffix after it).
_TEMPORARY_TAIL = re.compile(r"\.[A-Za-z0-9_]{8}\.tmp(?:\.[a-z]+)?")


def remove_leftovers(path: Path, *siblings: str) -> list[Path]:
    """Delete the temporary files a killed run left beside `path` (and beside
    the `siblings`, other names in its directory: one listing for them all).

    Only call this under the lock: then no other run is writing them.
    """
    names = (path.name, *siblings)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not any(
            entry.name.startswith(f".{name}") and _TEMPORARY_TAIL.fullmatch(entry.name, len(name) + 1)
            for name in names
        ):
            continue
        if entry.is_dir(follow_symlinks=False):
            import shutil  # a map's build directory; rare, so imported here

            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            remove_quietly(Path(entry.path))
        removed.append(Path(entry.path))
    return removed


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_quietly(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()
