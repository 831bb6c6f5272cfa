"""The state lock: one file in state_dir, flocked, never opened through a link.

Not filelock's FileLock: that opens the name with O_TRUNC, so a hard link
planted at it empties the file it points to. The flock taken here is the
one filelock takes, so either excludes the other.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exactcron.errors import LockTimeoutError, StateWriteError

_POLL_SECONDS = 0.05


@contextmanager
def held(path: Path, wait_seconds: float) -> Iterator[None]:
    """Hold the lock at `path`; give up with exit 75 after `wait_seconds`."""
    descriptor = _open_lock(path)
    try:
        _wait_for_lock(descriptor, path, wait_seconds)
        yield
    finally:
        os.close(descriptor)  # lets the lock go


def _open_lock(path: Path) -> int:
    """The lock file, opened without truncating it; a FIFO never blocks the open."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        descriptor = os.open(path, flags, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise StateWriteError(f"lock file {path} is a symbolic link; remove it") from None
        raise StateWriteError(f"cannot create lock file in {path.parent}: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise StateWriteError(f"lock file {path} is not a regular file; remove it")
        if status.st_uid == os.geteuid() and status.st_mode & 0o077:
            # Whoever can open it can flock it and so stop every run.
            os.fchmod(descriptor, 0o600)
    except OSError as error:
        os.close(descriptor)
        raise StateWriteError(f"cannot use lock file {path}: {error.strerror}") from None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _wait_for_lock(descriptor: int, path: Path, wait_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeoutError(
                    f"another exactcron run has held {path} for over {wait_seconds:g}s; this run did nothing"
                ) from None
            time.sleep(min(_POLL_SECONDS, left))
        except OSError as error:
            raise StateWriteError(f"cannot lock {path}: {error.strerror}") from None
