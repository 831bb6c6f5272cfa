"""The state directory: lease file, checkpoints, last-run record and the lock.

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
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock, Timeout

from exactcron import faults
from exactcron.addresses import is_canonical
from exactcron.errors import ConfigError, LockTimeoutError, StateWriteError
from exactcron.leases import Lease, LeaseTable
from exactcron.timestamps import format_instant

log = logging.getLogger("exactcron")

SCHEMA = 1
LEASES_FILE = "leases.json"
CHECKPOINTS_FILE = "checkpoints.json"
LAST_RUN_FILE = "last-run.json"
LOCK_FILE = "lock"


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


def _remove_quietly(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.unlink()


class StateStore:
    """The files under `state_dir`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Set when a broken lease file was set aside: the caller re-reads the
        # logs to rebuild what the lost file held.
        self.leases_lost = False
        # What the last full run recorded beside the checkpoints (see update.py);
        # None when absent or not understood.
        self.settled: dict[str, Any] | None = None

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
            for name in (LEASES_FILE, CHECKPOINTS_FILE, LAST_RUN_FILE):
                remove_leftovers(self.directory / name)
            yield
        finally:
            lock.release()

    # -- leases --------------------------------------------------------------

    def load_leases(self, repair: bool = True) -> LeaseTable:
        """The lease table; a broken file is set aside when `repair` (under the lock)."""
        path = self.leases_path
        try:
            table = read_lease_lines(path)
        except FileNotFoundError:
            return LeaseTable()
        except OSError as error:
            raise StateWriteError(f"cannot read {path}: {error.strerror}") from None
        if table is not None:
            return table
        # Not laid out as this version writes it (edited by hand, say), or
        # broken: read whole and strictly, which tells the two apart.
        document = self._load_json(LEASES_FILE, repair)
        if document is None:
            return LeaseTable()
        try:
            return leases_from_json(document)
        except CorruptStateError as error:
            self._broken(LEASES_FILE, str(error), repair)
            self.leases_lost = repair
            return LeaseTable()

    def save_leases(self, table: LeaseTable) -> None:
        """Write the lease file, unless the table is unchanged since it was loaded from it."""
        path = self.leases_path
        if not table.changed and path.exists():
            return
        write_atomically(path, lease_file_chunks(table), 0o640, keep_same=True)
        table.changed = False

    @property
    def leases_path(self) -> Path:
        return self.directory / LEASES_FILE

    # -- checkpoints ---------------------------------------------------------

    def load_checkpoints(self, repair: bool = True) -> dict[str, dict[str, Any]]:
        document = self._load_json(CHECKPOINTS_FILE, repair)
        if document is None:
            return {}
        sources = document.get("sources")
        if document.get("schema") != SCHEMA or not isinstance(sources, dict):
            self._broken(CHECKPOINTS_FILE, "not a checkpoint file of this version", repair)
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

    def save_last_run(self, time: datetime, outcome: str) -> None:
        document = {"schema": SCHEMA, "time": format_instant(time), "outcome": outcome}
        write_atomically(self.directory / LAST_RUN_FILE, _dump(document), 0o644)

    # -- helpers -------------------------------------------------------------

    def _load_json(self, name: str, repair: bool) -> dict[str, Any] | None:
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
            self._broken(name, "not valid JSON", repair)
            self.leases_lost = repair and name == LEASES_FILE
            return None
        if not isinstance(document, dict):
            self._broken(name, "not a JSON object", repair)
            self.leases_lost = repair and name == LEASES_FILE
            return None
        return document

    def _broken(self, name: str, why: str, repair: bool) -> None:
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
        log.warning("%s is %s; moved it to %s and started afresh from the log", path, why, aside.name)


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()


# The lease file holds one lease a line, between a first line with the
# rest of the document and a last line that closes it. It is one JSON
# document all the same, but one that is read and written a few thousand
# leases at a time: 100,000 leases never sit in memory as text or as dicts.
_LEASES_OPEN = b'"leases":['
_READ_BATCH_BYTES = 1 << 18
_WRITE_BATCH_LEASES = 2048
# Distinct texts of times (or servers) remembered while reading: a lease
# file written here holds few, one that is not may hold any number.
_SHARED_MAX = 4096


def encode_leases(table: LeaseTable) -> bytes:
    """The lease file: `leases_to_json(table)`, keys sorted, compact but for one lease a line."""
    return b"".join(lease_file_chunks(table))


def lease_file_chunks(table: LeaseTable) -> Iterator[bytes]:
    """`encode_leases(table)` in pieces of a few thousand leases.

    Each lease is written with the C string encoder rather than through a
    dict and `json.dumps`: a tenth of the time and of the memory.
    """
    document = leases_to_json(table, with_leases=False)
    del document["schema"]
    # `leases` sorts after every other key but `schema`.
    head = json.dumps(document, separators=(",", ":"), sort_keys=True)
    yield f"{head[:-1]},{_LEASES_OPEN.decode()}\n".encode()
    quote = encode_basestring_ascii
    formatted: dict[datetime, str] = {}

    def instant(stamp: datetime) -> str:
        text = formatted.get(stamp)
        if text is None:
            if len(formatted) >= _SHARED_MAX:
                formatted.clear()
            text = formatted[stamp] = format_instant(stamp)
        return text

    leases = table.leases
    addresses = sorted(leases)
    for start in range(0, len(addresses), _WRITE_BATCH_LEASES):
        lines = []
        for address in addresses[start : start + _WRITE_BATCH_LEASES]:
            lease = leases[address]
            lines.append(
                f'{{"expires":"{instant(lease.expires)}","ip":"{address}",'
                f'"last_login":"{instant(lease.last_login)}",'
                f'"server":{"null" if lease.server is None else quote(lease.server)},'
                f'"user":{"null" if lease.user is None else quote(lease.user)}}}'
            )
        end = ",\n" if start + _WRITE_BATCH_LEASES < len(addresses) else "\n"
        yield (",\n".join(lines) + end).encode()
    yield f'],"schema":{SCHEMA}}}\n'.encode()


def read_lease_lines(path: Path) -> LeaseTable | None:
    """The lease file read a batch of lines at a time, when it is laid out as
    `lease_file_chunks` writes it; None when it is not, or when anything in it
    is off (the caller then reads it whole, which says what is wrong).

    Each piece is parsed as JSON on its own, and the pieces are checked to
    join into one document (commas between them, none after the last), so
    what this accepts is exactly what `json.loads` of the whole accepts.
    Raises OSError.
    """
    with open(path, "rb") as stream:
        try:
            return _read_lease_lines(stream)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None


def _read_lease_lines(stream: BinaryIO) -> LeaseTable | None:
    head = stream.readline().rstrip()
    # Starting with `{"`, the whole file is UTF-8 to `json.loads` too.
    if not head.startswith(b'{"') or not head.endswith(_LEASES_OPEN):
        return None
    members = head[: -len(_LEASES_OPEN)]
    if members == b"{":
        document: dict[str, Any] = {}
    elif members.endswith(b","):
        # Parses only when that comma ends a member of the outer object: then
        # `"leases":[` is no part of a string.
        document = _json_object(members[:-1] + b"}")
    else:
        return None
    reader = _LeaseReader()
    comma_after: bool | None = None  # whether the last piece read ended with a comma
    while True:
        lines = stream.readlines(_READ_BATCH_BYTES)
        if not lines:
            return None  # cut short: no closing line
        tail = lines.pop() if lines[-1].startswith(b"]") else None
        if lines:
            if comma_after is False or any(line.startswith(b"]") for line in lines):
                return None
            piece = b"".join(lines).rstrip()
            comma_after = piece.endswith(b",")
            items = json.loads(
                "[" + piece[: -1 if comma_after else None].decode("utf-8", "surrogatepass") + "]"
            )
            if not items:
                return None
            reader.add(items)
        if tail is not None:
            break
    if comma_after or stream.read(1):
        return None
    rest = tail[1:].strip()
    if rest.startswith(b","):
        closing = _json_object(b"{" + rest[1:])
    elif rest == b"}":
        closing = {}
    else:
        return None
    if "leases" in document or "leases" in closing:
        return None  # a key given twice: rare enough to leave to `json.loads`
    document.update(closing)
    if document.get("schema") != SCHEMA:
        return None
    _read_rest(reader.table, document)
    return reader.table


def _json_object(text: bytes) -> dict[str, Any]:
    document = json.loads(text.decode("utf-8", "surrogatepass"))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


class _LeaseReader:
    """Turns lease items into a table, strictly. Equal times and equal
    server names share one object: 100,000 leases hold a few thousand."""

    def __init__(self) -> None:
        self.table = LeaseTable()
        self._instants: dict[str, datetime] = {}
        self._servers: dict[str, str] = {}

    def add(self, items: Iterable[Any]) -> None:
        leases = self.table.leases
        instant = self._instant
        servers = self._servers
        # The file is ours: an address must be exactly as we write it
        # (canonical), which is cheaper to check than to parse it again.
        for item in items:
            address = item["ip"]
            user = item.get("user")
            server = item.get("server")
            if (
                not isinstance(address, str)
                or not is_canonical(address)
                or not isinstance(user, str | None)
                or not isinstance(server, str | None)
            ):
                raise CorruptStateError(f"holding a bad lease {item!r}")
            if server is not None:
                if len(servers) >= _SHARED_MAX:
                    servers.clear()
                server = servers.setdefault(server, server)
            leases[address] = Lease(
                address, user, instant(item["last_login"]), instant(item["expires"]), server
            )

    def _instant(self, text: object) -> datetime:
        if not isinstance(text, str):
            return _instant(text)  # raises
        stamp = self._instants.get(text)
        if stamp is None:
            if len(self._instants) >= _SHARED_MAX:
                self._instants.clear()
            stamp = self._instants[text] = _instant(text)
        return stamp


def _instant(text: object) -> datetime:
    """A time as this module writes it (ISO 8601 with offset). Raises ValueError."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is UTC:  # what this module writes: +00:00
        return stamp
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return stamp.astimezone(UTC)


def leases_to_json(table: LeaseTable, with_leases: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "leases": [
            {
                "ip": lease.address,
                "user": lease.user,
                "last_login": format_instant(lease.last_login),
                "expires": format_instant(lease.expires),
                "server": lease.server,
            }
            for lease in map(table.leases.__getitem__, sorted(table.leases))
            if with_leases
        ],
        "flushed": {address: format_instant(time) for address, time in sorted(table.flushed.items())},
        "flushed_all": format_instant(table.flushed_all) if table.flushed_all else None,
        # The networks every lease above was checked against (LeaseTable.ignore_checked).
        "ignore": list(table.ignore_checked) if table.ignore_checked is not None else None,
    }
    if not with_leases:
        del document["leases"]
    return document


def leases_from_json(document: dict[str, Any]) -> LeaseTable:
    """Read a lease file strictly: anything off makes the whole file suspect."""
    if document.get("schema") != SCHEMA:
        raise CorruptStateError(f"of schema {document.get('schema')!r}, not {SCHEMA}")
    try:
        reader = _LeaseReader()
        reader.add(document["leases"])
        _read_rest(reader.table, document)
    except CorruptStateError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CorruptStateError(f"not a lease file this version can read ({error})") from None
    return reader.table


def _read_rest(table: LeaseTable, document: dict[str, Any]) -> None:
    """The flush records and the `ignore` check of a lease file into `table`."""
    for address, time in document.get("flushed", {}).items():
        if not is_canonical(address):
            raise CorruptStateError(f"holding a bad flush record {address!r}")
        table.flushed[address] = _instant(time)
    flushed_all = document.get("flushed_all")
    table.flushed_all = _instant(flushed_all) if flushed_all is not None else None
    checked = document.get("ignore")
    # Unknown or odd: prune checks every lease against `ignore` again.
    if isinstance(checked, list) and all(isinstance(network, str) for network in checked):
        table.ignore_checked = tuple(checked)
