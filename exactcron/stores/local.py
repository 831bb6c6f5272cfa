"""Local state under `state_dir`: checkpoints, the last-run record, the lock,
and the lock.

Every file here is replaced whole through atomic.py (a new file under a
random name in the same directory, fsync, rename, fsync of the directory), so a crash leaves either the old or
the new version, never a mix. A file that cannot be read back (garbage, a
truncated write by a failing disk, a newer schema) is set aside under a name
that says so, and the run goes on from what the log still holds.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from exactcron.atomic import read_regular, remove_leftovers, write_atomically
from exactcron.errors import ConfigError, StateWriteError
from exactcron.logs import log

SCHEMA = 1
CHECKPOINTS_FILE = "checkpoints.json"
LAST_RUN_FILE = "last-run.json"
LOCK_FILE = "lock"
# Present while the leases must be rebuilt from the logs (a broken lease file
# was set aside): whichever command found it, the next update re-reads.
REBUILD_FILE = "rebuild-from-logs"
# What each installed map holds (maps.MapRecord).
MAP_RECORD_FILE = "maps.json"
# Per source whose log `written_by` refused: that it is refused, and where each
# of its files is trusted from again (source.Untrusted). Also in the checkpoints:
# see load_trust.
TRUST_FILE = "trust.json"
# The newest follower's token (`update --follow`), written under the lock when it
# starts; an older follower sees it replaced and exits.
FOLLOWER_FILE = "follower"


class CorruptStateError(ValueError):
    """A state file whose content is not what this version writes."""


def file_signature(path: Path) -> list[int] | None:
    """What changes whenever the file is replaced or written; None when it cannot be seen."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


class LocalState:
    """The files under `state_dir` that belong to this host alone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # What the last full run recorded beside the checkpoints (see quiet.py);
        # None when absent or not understood.
        self.settled: dict[str, Any] | None = None
        # Other files kept here (a lease store's), whose leftovers the lock clears.
        self.files: list[str] = [
            CHECKPOINTS_FILE,
            LAST_RUN_FILE,
            REBUILD_FILE,
            MAP_RECORD_FILE,
            TRUST_FILE,
            FOLLOWER_FILE,
        ]
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
        from exactcron.lock import held

        self.ensure_directory()
        with held(self.directory / LOCK_FILE, wait_seconds):
            first, *others = self.files
            remove_leftovers(self.directory / first, *others)
            yield

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

    def _load_sources_document(self, name: str, what: str, repair: bool) -> dict[str, Any] | None:
        """The document of `name` when it is {"schema": SCHEMA, "sources": {...}};
        otherwise None, and a file of another shape is set aside as not `what` of this version."""
        document = self.load_json(name, repair)
        if document is None:
            return None
        if document.get("schema") != SCHEMA or not isinstance(document.get("sources"), dict):
            self.set_aside(name, f"not {what} of this version", repair)
            return None
        return document

    # -- checkpoints ---------------------------------------------------------

    def load_checkpoints(self, repair: bool = True) -> dict[str, dict[str, Any]]:
        document = self._load_sources_document(CHECKPOINTS_FILE, "a checkpoint file", repair)
        if document is None:
            return {}
        settled = document.get("settled")
        self.settled = settled if isinstance(settled, dict) else None
        return _sources_of(document)

    def save_checkpoints(
        self, checkpoints: dict[str, dict[str, Any]], settled: dict[str, Any] | None = None
    ) -> None:
        """Write the checkpoints, and with them what a later run compares to skip its work."""
        document: dict[str, Any] = {"schema": SCHEMA, "sources": checkpoints}
        if settled is not None:
            document["settled"] = settled
        write_atomically(self.directory / CHECKPOINTS_FILE, _dump(document), 0o640)

    # -- logs once open to forgers --------------------------------------------

    def load_trust(self, repair: bool = True) -> dict[str, dict[str, Any]]:
        """Per source key, what trust.json says of a log `written_by` refused (source.Untrusted).

        Why a file of its own as well as the checkpoints: once lost, a refusal
        cannot be told from the log (a forged line looks like any other), and a
        run without it reads the log from the start of the timeout window, the
        forged lines included. A broken checkpoint file is set aside and read as
        a first run; a broken lease file makes the next run ignore the
        checkpoints. Kept in both, and read as their union, losing one file
        loses no refusal and no "trusted from" mark. This file is small and
        rewritten only when a refusal begins or ends, so it is rarely the one
        a failing write breaks.
        """
        document = self._load_sources_document(TRUST_FILE, "a trust file", repair)
        return {} if document is None else _sources_of(document)

    def save_trust(self, sources: dict[str, dict[str, Any]]) -> None:
        write_atomically(self.directory / TRUST_FILE, _dump({"schema": SCHEMA, "sources": sources}), 0o640)

    # -- last run ------------------------------------------------------------

    def load_last_run(self) -> dict[str, Any] | None:
        path = self.directory / LAST_RUN_FILE
        try:
            document = json.loads(read_regular(path))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def save_last_run(self, record: dict[str, Any]) -> None:
        """The last update's record (health.RunRecord): time, outcome, counters."""
        document = {"schema": SCHEMA, **record}
        write_atomically(self.directory / LAST_RUN_FILE, _dump(document), 0o644)

    # -- followers -----------------------------------------------------------

    def claim_follower(self, token: str) -> list[int] | None:
        """Make `token` the newest follower's (under the lock); what the file looks like now."""
        path = self.directory / FOLLOWER_FILE
        write_atomically(path, token.encode() + b"\n", 0o644, durable=False)
        return file_signature(path)

    def load_follower(self) -> dict[str, Any] | None:
        """What the newest follower wrote of itself (JSON), or None."""
        try:
            document = json.loads(read_regular(self.directory / FOLLOWER_FILE))
        except (OSError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def follower_signature(self) -> list[int] | None:
        """A stat of the follower file: it changes when a newer follower claims it."""
        return file_signature(self.directory / FOLLOWER_FILE)

    # -- helpers -------------------------------------------------------------

    def load_json(self, name: str, repair: bool) -> dict[str, Any] | None:
        """The JSON object in file `name`; None when missing or broken (then set aside)."""
        path = self.directory / name
        try:
            raw = read_regular(path)
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


def _sources_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per source key, its entry; an entry that is not an object is dropped."""
    return {key: value for key, value in document["sources"].items() if isinstance(value, dict)}
