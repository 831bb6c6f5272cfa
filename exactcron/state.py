"""Local state under `state_dir`: checkpoints, the last-run record, the lock,
and the atomic file writes every state file and map goes through.

Every file here is replaced whole (temporary file in the same directory,
fsync, rename, fsync of the directory), so a crash leaves either the old or
the new version, never a mix. A file that cannot be read back (garbage, a
truncated write by a failing disk, a newer schema) is set aside under a name
that says so, and the run goes on from what the log still holds.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from exactcron import faults
from exactcron.errors import ConfigError, LockTimeoutError, StateWriteError

log = logging.getLogger("exactcron")

SCHEMA = 1
CHECKPOINTS_FILE = "checkpoints.json"
LAST_RUN_FILE = "last-run.json"
LOCK_FILE = "lock"
# Present while the leases must be rebuilt from the logs (a broken lease file
# was set aside): whichever command found it, the next update re-reads.
REBUILD_FILE = "rebuild-from-logs"
# What each installed map holds (maps.MapRecord).
MAP_RECORD_FILE = "maps.json"


class CorruptStateError(ValueError):
    """A state file whose content is not what this version writes."""


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new private file `.NAME.XXXXXXXX.tmp` beside `path` (what remove_leftovers finds).

    Not `tempfile`: importing it costs more than the rest of a quiet run.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    for _ in range(100):
        temporary = str(path.parent / f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(temporary, flags, 0o600), temporary
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_atomically(
    path: Path, data: bytes | Iterable[bytes], mode: int = 0o644, keep_same: bool = False
) -> bool:
    """Replace `path` with `data` so that readers see the old or the new file, whole.

    `data` may come in chunks, so that a large file is never held whole in
    memory. With `keep_same`, a file that already holds exactly `data` is
    left as it is (the copy is discarded); returns whether `path` was replaced.
    """
    directory = path.parent
    try:
        handle, temporary = _create_temporary(path)
    except OSError as error:
        raise StateWriteError(f"cannot write in {directory}: {error.strerror}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            previous = _Comparison(path) if keep_same else None
            for chunk in [data] if isinstance(data, bytes) else data:
                stream.write(chunk)
                if previous is not None:
                    previous.feed(chunk)
            if previous is not None and previous.same():
                _remove_quietly(Path(temporary))
                return False
            stream.flush()
            faults.point(f"{path.name}:written")
            os.fchmod(stream.fileno(), mode)
            os.fsync(stream.fileno())
        faults.point(f"{path.name}:synced")
        os.replace(temporary, path)
        faults.point(f"{path.name}:renamed")
        fsync_directory(directory)
    except OSError as error:
        _remove_quietly(Path(temporary))
        raise StateWriteError(f"cannot write {path}: {error.strerror}") from None
    except BaseException:
        _remove_quietly(Path(temporary))
        raise
    return True


class _Comparison:
    """Compares what is written, chunk by chunk, with the file it is to replace."""

    def __init__(self, path: Path) -> None:
        try:
            self._stream: BinaryIO | None = open(path, "rb")  # noqa: SIM115 -- closed in same()
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


def remove_leftovers(path: Path) -> list[Path]:
    """Delete the temporary files a killed run left beside `path`.

    Only call this under the lock: then no other run is writing them.
    """
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp(?:\.[a-z]+)?$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if pattern.match(entry.name):
            if entry.is_dir(follow_symlinks=False):
                import shutil  # a map's build directory; rare, so imported here

                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                _remove_quietly(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_signature(path: Path) -> list[int] | None:
    """What changes whenever the file is replaced or written; None when it cannot be seen."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _remove_quietly(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


class LocalState:
    """The files under `state_dir` that belong to this host alone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # What the last full run recorded beside the checkpoints (see quiet.py);
        # None when absent or not understood.
        self.settled: dict[str, Any] | None = None
        # Other files kept here (a lease store's), whose leftovers the lock clears.
        self.files: list[str] = [CHECKPOINTS_FILE, LAST_RUN_FILE, REBUILD_FILE, MAP_RECORD_FILE]
        # The files found broken and set aside by this process.
        self.set_aside_files: list[str] = []

    def ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as error:
            raise StateWriteError(
                f"cannot create state directory {self.directory}: {error.strerror}"
            ) from None
        if self.directory.stat().st_mode & stat.S_IWOTH:
            # Any user could plant a lease file (or a lock) and so grant relay.
            raise ConfigError(
                f"state_dir {self.directory} is writable by every user; refusing it (chmod o-w)"
            )

    @contextmanager
    def locked(self, wait_seconds: float) -> Iterator[None]:
        """Hold the state lock; give up with exit 75 after `wait_seconds`."""
        # Imported here: `status` and `show` take no lock, and never pay for it.
        from filelock import FileLock, Timeout

        self.ensure_directory()
        lock = FileLock(self.directory / LOCK_FILE, timeout=wait_seconds)
        try:
            lock.acquire()
        except Timeout:
            raise LockTimeoutError(
                f"another exactcron run has held {lock.lock_file} for over {wait_seconds:g}s; "
                "this run did nothing"
            ) from None
        except OSError as error:
            raise StateWriteError(f"cannot create lock file in {self.directory}: {error.strerror}") from None
        try:
            for name in self.files:
                remove_leftovers(self.directory / name)
            yield
        finally:
            lock.release()

    # -- rebuilding the leases from the logs ------------------------------------

    def request_rebuild(self) -> None:
        write_atomically(self.directory / REBUILD_FILE, b"leases set aside; rebuild from the logs\n", 0o644)

    def rebuild_pending(self) -> bool:
        return (self.directory / REBUILD_FILE).exists()

    def rebuild_done(self) -> None:
        try:
            (self.directory / REBUILD_FILE).unlink(missing_ok=True)
        except OSError as error:
            raise StateWriteError(
                f"cannot remove {self.directory / REBUILD_FILE}: {error.strerror}"
            ) from None

    # -- checkpoints ---------------------------------------------------------

    def load_checkpoints(self, repair: bool = True) -> dict[str, dict[str, Any]]:
        document = self.load_json(CHECKPOINTS_FILE, repair)
        if document is None:
            return {}
        sources = document.get("sources")
        if document.get("schema") != SCHEMA or not isinstance(sources, dict):
            self.set_aside(CHECKPOINTS_FILE, "not a checkpoint file of this version", repair)
            return {}
        settled = document.get("settled")
        self.settled = settled if isinstance(settled, dict) else None
        return {key: value for key, value in sources.items() if isinstance(value, dict)}

    def save_checkpoints(
        self, checkpoints: dict[str, dict[str, Any]], settled: dict[str, Any] | None = None
    ) -> None:
        """Write the checkpoints, and with them what a later run compares to skip its work."""
        document: dict[str, Any] = {"schema": SCHEMA, "sources": checkpoints}
        if settled is not None:
            document["settled"] = settled
        write_atomically(self.directory / CHECKPOINTS_FILE, _dump(document), 0o640)

    # -- last run ------------------------------------------------------------

    def load_last_run(self) -> dict[str, Any] | None:
        path = self.directory / LAST_RUN_FILE
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def save_last_run(self, record: dict[str, Any]) -> None:
        """The last update's record (health.RunRecord): time, outcome, counters."""
        document = {"schema": SCHEMA, **record}
        write_atomically(self.directory / LAST_RUN_FILE, _dump(document), 0o644)

    # -- helpers -------------------------------------------------------------

    def load_json(self, name: str, repair: bool) -> dict[str, Any] | None:
        """The JSON object in file `name`; None when missing or broken (then set aside)."""
        path = self.directory / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StateWriteError(f"cannot read {path}: {error.strerror}") from None
        try:
            document = json.loads(raw)
        except ValueError:
            self.set_aside(name, "not valid JSON", repair)
            return None
        if not isinstance(document, dict):
            self.set_aside(name, "not a JSON object", repair)
            return None
        return document

    def set_aside(self, name: str, why: str, repair: bool) -> None:
        """Move a broken file out of the way (when `repair`, i.e. under the lock), or warn."""
        path = self.directory / name
        if not repair:
            log.warning("%s is %s; the next update sets it aside", path, why)
            return
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{name}.corrupt-{stamp}")
        try:
            os.replace(path, aside)
        except OSError as error:
            raise StateWriteError(f"cannot set aside broken {path}: {error.strerror}") from None
        self.set_aside_files.append(name)
        log.warning("%s is %s; moved it to %s and started afresh from the log", path, why, aside.name)


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
