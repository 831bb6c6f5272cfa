"""The embedded lease store: one JSON file, `leases.json`, in `state_dir`.

Guarded by the local lock; replaced whole like every state file.

Over 400 lines: the lease file's schema (encode, and decode checking every
field of a file that may be hostile) and the store over it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from exactcron.addresses import Network, is_canonical
from exactcron.atomic import open_regular, read_regular, write_atomically
from exactcron.config import GuardConfig
from exactcron.errors import StateWriteError
from exactcron.guard import GuardState, Verdict
from exactcron.leases import LeaseTable
from exactcron.logs import log
from exactcron.model import Lease, Login, Snapshot
from exactcron.stores.local import SCHEMA, CorruptStateError, LocalState, file_signature
from exactcron.timestamps import format_instant

if TYPE_CHECKING:
    from exactcron.stores.kept import Memo

LEASES_FILE = "leases.json"


class FileLeaseStore:
    """The lease table in `leases.json` (or another file `name` in `state_dir`),
    loaded on first use, written by `save`."""

    def __init__(
        self,
        state: LocalState,
        repair: bool = True,
        name: str = LEASES_FILE,
        guard: GuardConfig | None = None,
    ) -> None:
        self.path = state.directory / name
        # `[guard]`, when on; its verdicts wait in `_verdicts` for the caller to audit.
        self._guard = guard if guard is not None and guard.enabled else None
        self._verdicts: list[Verdict] = []
        self._name = name
        self._state = state
        self._repair = repair
        self._table: LeaseTable | None = None
        self._lost = False
        # Whether the table is the one this process wrote last (stores/kept.py), not read.
        self._taken = False
        state.files.append(name)

    @property
    def table(self) -> LeaseTable:
        if self._table is None:
            self._table = self._load()
        return self._table

    def begin(self) -> bool:
        self.table  # noqa: B018 -- loads it, which tells whether it was lost
        return self._lost

    def version(self) -> Any:
        return file_signature(self.path)

    def merge(
        self, logins: Iterable[Login], now: datetime, timeout: timedelta, ignore: Sequence[Network]
    ) -> list[str]:
        if self._guard is None:
            return self.table.merge_all(logins, now, timeout, ignore)
        admitted, verdicts = self.table.screen(logins, now, timeout, ignore, self._guard)
        self._verdicts.extend(verdicts)
        return self.table.merge_all(admitted, now, timeout, ignore, screened=True)

    def verdicts(self) -> list[Verdict]:
        taken, self._verdicts = self._verdicts, []
        return taken

    def guard_state(self, now: datetime) -> GuardState:
        return self.table.guard

    def add(self, address: str, now: datetime, duration: timedelta) -> Lease:
        return self.table.add(address, now, duration)

    def flush(self, addresses: Sequence[str] | None, now: datetime) -> list[str]:
        if addresses is None:
            return self.table.flush_all(now)
        return self.table.flush(addresses, now)

    def prune(self, now: datetime, timeout: timedelta, ignore: Sequence[Network]) -> list[str]:
        table = self.table
        if self._guard is not None:
            table.guard.prune(now, self._guard.window + timeout)
            if table.guard.changed:
                table.changed = True
        return table.prune(now, timeout, ignore)

    def save(self) -> None:
        """Write the file, unless the table is unchanged since it was loaded from it.

        What was written is kept for this process's next run (stores/kept.py).
        """
        from exactcron.stores import kept  # only a run that writes: a quiet one does not

        table = self.table
        if not table.changed and self.path.exists():
            if self._taken:
                # Unchanged, as far as the table knows: kept again only when the
                # file holds its encoding still.
                digest = kept.new_digest()
                chunks = kept.digested(lease_file_chunks(table, kept.memo(self.path)), digest)
                if _holds(self.path, chunks):
                    kept.keep(self.path, table, digest.digest())
            return
        kept.forget(self.path)
        digest = kept.new_digest()
        chunks = kept.digested(lease_file_chunks(table, kept.memo(self.path)), digest)
        write_atomically(self.path, chunks, 0o640, keep_same=True)
        table.changed = table.guard.changed = False
        kept.keep(self.path, table, digest.digest())

    def snapshot(self, now: datetime) -> Snapshot:
        return Snapshot(self.table.active(now), self.version())

    def last_known(self, now: datetime) -> list[Lease]:
        return self.table.active(now)

    def warnings(self, clock: datetime) -> list[str]:
        return []

    def close(self) -> None:
        """Nothing to let go of: the file is read whole and written whole."""

    def hold(self, table: LeaseTable) -> None:
        """Keep `table` in place of what the file holds, for `save` to write."""
        self._table = table

    def _load(self) -> LeaseTable:
        """The lease table; a broken file is set aside when repairing (under the lock)."""
        from exactcron.stores import kept

        path = self.path
        taken = kept.take(path)
        if taken is not None:
            self._taken = True
            return taken
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
        try:
            raw = read_regular(path)
        except OSError:
            raw = b""
        document = self._state.load_json(self._name, self._repair)
        if document is None:
            self._lost = self._name in self._state.set_aside_files
            return salvage_flushes(raw) if self._lost else LeaseTable()
        try:
            return leases_from_json(document)
        except CorruptStateError as error:
            self._state.set_aside(self._name, str(error), self._repair)
            self._lost = self._repair
            return salvage_flushes(raw) if self._lost else LeaseTable()


def _holds(path: Path, chunks: Iterable[bytes]) -> bool:
    """Whether the file `path` holds exactly `chunks`, joined."""
    try:
        with open_regular(path) as stream:
            return all(stream.read(len(chunk)) == chunk for chunk in chunks) and stream.read(1) == b""
    except OSError:
        return False


# The flush records of a lease file, as written (or edited by hand).
_FLUSHED = re.compile(rb'"flushed"\s*:\s*(\{[^{}]*\})')
_FLUSHED_ALL = re.compile(rb'"flushed_all"\s*:\s*"([^"]{1,64})"')


def salvage_flushes(raw: bytes) -> LeaseTable:
    """An empty table with the flush records still readable in a broken lease file.

    The leases are rebuilt from the logs, which still hold the logins that
    a flush revoked: without its record, a flushed address would be granted
    again. Whatever cannot be read is lost, as the leases are.
    """
    table = LeaseTable()
    found = _FLUSHED.search(raw)
    records: Any = {}
    if found is not None:
        try:
            records = json.loads(found.group(1))
        except ValueError:
            records = {}
    for address, time in records.items() if isinstance(records, dict) else ():
        try:
            if isinstance(address, str) and is_canonical(address):
                table.flushed[address] = _instant(time)
        except ValueError:
            continue
    everything = _FLUSHED_ALL.search(raw)
    if everything is not None:
        with contextlib.suppress(ValueError):
            table.flushed_all = _instant(everything.group(1).decode("ascii", "replace"))
    if table.flushed or table.flushed_all:
        table.changed = True
        kept = len(table.flushed) + bool(table.flushed_all)
        log.warning("kept %d flush record%s of the broken lease file", kept, "" if kept == 1 else "s")
    return table


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


def lease_file_chunks(table: LeaseTable, memo: Memo | None = None) -> Iterator[bytes]:
    """`encode_leases(table)` in pieces of a few thousand leases.

    Each lease is written with the C string encoder rather than through a
    dict and `json.dumps`: a tenth of the time and of the memory. `memo`:
    the texts of the last write of the file, by value (a lease's text
    depends only on its values, its times written in UTC), for a follower
    that writes it at every step; left holding this write's.
    """
    document = leases_to_json(table, with_leases=False, with_guard=False)
    del document["schema"]
    # `leases` sorts after every other key but `schema`, `guard` between
    # `flushed_all` and `ignore`; the guard's state is encoded by itself.
    head = json.dumps(document, separators=(",", ":"), sort_keys=True)
    before, after = head[:-1].split(',"ignore":', 1)
    guard = table.guard.json_text(memo.members if memo is not None else None)
    yield f'{before},"guard":{guard},"ignore":{after},{_LEASES_OPEN.decode()}\n'.encode()
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
    known: dict[str, tuple[Lease, str]] = memo.lines if memo is not None else {}
    lines_now: dict[str, tuple[Lease, str]] = {}
    for start in range(0, len(addresses), _WRITE_BATCH_LEASES):
        lines = []
        for address in addresses[start : start + _WRITE_BATCH_LEASES]:
            lease = leases[address]
            line = known.get(address)
            if line is None or line[0] != lease:
                line = (
                    lease,
                    f'{{"expires":"{instant(lease.expires)}","ip":"{address}",'
                    f'"last_login":"{instant(lease.last_login)}",'
                    f'"server":{"null" if lease.server is None else quote(lease.server)},'
                    f'"user":{"null" if lease.user is None else quote(lease.user)}}}',
                )
            if memo is not None:
                lines_now[address] = line
            lines.append(line[1])
        end = ",\n" if start + _WRITE_BATCH_LEASES < len(addresses) else "\n"
        yield (",\n".join(lines) + end).encode()
    if memo is not None:
        memo.lines = lines_now
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
    with open_regular(path) as stream:
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


def leases_to_json(table: LeaseTable, with_leases: bool = True, with_guard: bool = True) -> dict[str, Any]:
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
        "flushed": {address: _flush_instant(time) for address, time in sorted(table.flushed.items())},
        "flushed_all": _flush_instant(table.flushed_all) if table.flushed_all else None,
        # The networks every lease above was checked against (LeaseTable.ignore_checked).
        "ignore": list(table.ignore_checked) if table.ignore_checked is not None else None,
        # What `[guard]` remembers (guard.py); absent in files of 0.2 and before.
        "guard": table.guard.to_json() if with_guard else None,
    }
    if not with_guard:
        del document["guard"]
    if not with_leases:
        del document["leases"]
    return document


def _flush_instant(stamp: datetime) -> str:
    """A flush's time to the microsecond (the fraction left out when it is
    zero, as every lease file before kept it): a login logged within the
    flush's second, before it, must not grant again once read back."""
    return stamp.astimezone(UTC).isoformat()


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
    try:
        table.guard = GuardState.from_json(document.get("guard"))
    except ValueError as error:
        raise CorruptStateError(f"holding a bad guard record ({error})") from None
    checked = document.get("ignore")
    # Unknown or odd: prune checks every lease against `ignore` again.
    if isinstance(checked, list) and all(isinstance(network, str) for network in checked):
        table.ignore_checked = tuple(checked)
