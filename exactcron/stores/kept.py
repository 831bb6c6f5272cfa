"""The lease table a process last wrote, kept for its next run: a follower's step.

`update --follow` runs a step whenever a log grows, and each step used to read
the whole lease file back: with 10,000 leases and their `[guard]` state, 2.6 MB
and some 90 ms of CPU a step. After writing the file, the writer keeps the
table as reading that file back gives it (`read_back`, built from the table
in memory), and the next step takes it instead of reading, only when the file
is provably the one written: the same device, inode, size, mtime and ctime as
right after the rename, the inode held open meanwhile (so that its number
cannot pass to another file), and the same SHA-256 as the bytes written (an
edit in place within the clock's tick). Anything else (a `flush` or an `add` by another
process, a hand edit, a file set aside) reads the file, as before.

A kept table is handed out once (the step changes it), and it is built anew,
sharing nothing that can change with the table that was written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exactcron.addresses import is_canonical
from exactcron.atomic import open_regular
from exactcron.guard import REASONS, GuardState
from exactcron.leases import LeaseTable
from exactcron.model import Lease
from exactcron.stores.local import file_signature


@dataclass
class _Kept:
    signature: list[int]
    # The SHA-256 of the bytes written: a file rewritten in place within the
    # clock tick of the rename keeps its signature, not its content.
    digest: bytes
    table: LeaseTable
    # The written file, open: while it is, its inode number is no other file's.
    holder: int


# Per key of `granted` or `seen`: its entries as they were and as read back.
_MemberBack = dict[str, tuple[dict[str, datetime], dict[str, datetime]]]


class Memo:
    """What writing a lease file remembers for the next write of it: the
    texts of leases and guard members (file.py), which addresses were found
    canonical, and the guard members as read back. Each keyed by value:
    whatever changed is worked out again. Only speeds the writing up."""

    def __init__(self) -> None:
        self.lines: dict[str, tuple[Lease, str]] = {}
        self.members: dict[str, Any] = {}
        self.canonical: set[str] = set()
        self.back: dict[str, _MemberBack] = {"granted": {}, "seen": {}}
        # Per address, its lease as written and as read back (validated then).
        self.back_leases: dict[str, tuple[Lease, Lease]] = {}


# By the lease file's path: what this process wrote there last, and its memo.
_kept: dict[str, _Kept] = {}
_memos: dict[str, Memo] = {}
_MEMOS_KEPT = 4


def memo(path: Path) -> Memo:
    """The memo of the lease file `path` (a few files' are kept)."""
    found = _memos.pop(str(path), None)
    if found is None:
        found = Memo()
        while len(_memos) >= _MEMOS_KEPT:
            del _memos[next(iter(_memos))]
    _memos[str(path)] = found  # the most recent last
    return found


def take(path: Path) -> LeaseTable | None:
    """The table this process wrote to `path` last, when the file is still that one; else None."""
    kept = _kept.pop(str(path), None)
    if kept is None:
        return None
    try:
        held = os.fstat(kept.holder)
    except OSError:
        return None
    finally:
        os.close(kept.holder)
    if file_signature(path) != kept.signature or [held.st_dev, held.st_ino] != kept.signature[:2]:
        return None
    if _digest_of(path) != kept.digest:
        return None
    return kept.table


def digested(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    """`chunks`, each fed to `digest` (a hashlib object) on its way."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def new_digest() -> Any:
    import hashlib  # only a run that writes the lease file needs it

    return hashlib.sha256()


def _digest_of(path: Path) -> bytes | None:
    digest = new_digest()
    try:
        with open_regular(path) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return bytes(digest.digest())


def keep(path: Path, table: LeaseTable, digest: bytes) -> None:
    """Keep what reading `path` back gives, `path` having just been written from
    `table` (or found to hold exactly its encoding), whose bytes have the SHA-256
    `digest`; under the lock."""
    forget(path)
    read = read_back(table, memo(path))
    if read is None:
        return
    try:
        holder = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    held = os.fstat(holder)
    signature = file_signature(path)
    if signature is None or [held.st_dev, held.st_ino] != signature[:2]:
        os.close(holder)
        return
    while len(_kept) >= _MEMOS_KEPT:  # one process, a few lease files: each holds a descriptor
        forget(Path(next(iter(_kept))))
    _kept[str(path)] = _Kept(signature, digest, read, holder)


def forget(path: Path) -> None:
    kept = _kept.pop(str(path), None)
    if kept is not None:
        os.close(kept.holder)


def read_back(table: LeaseTable, remembered: Memo | None = None) -> LeaseTable | None:
    """The table that reading back the lease file encoded from `table` gives
    (stores/file.py: `lease_file_chunks`, then `read_lease_lines` or
    `leases_from_json`), or None when that file would not be read (it would be
    set aside as broken).

    Exactly: the same values, each time in UTC (a lease's to the second), each
    dict in the file's order, sharing nothing that can change with `table`.
    """
    memo = remembered if remembered is not None else Memo()
    known = memo.canonical
    found: set[str] = set()

    def canonical(address: object) -> bool:
        if address in known or (isinstance(address, str) and is_canonical(address)):
            found.add(address)
            return True
        return False

    leases: dict[str, Lease] = {}
    back, back_now = memo.back_leases, dict[str, tuple[Lease, Lease]]()
    for address in sorted(table.leases):
        lease = table.leases[address]
        known_lease = back.get(address)
        if known_lease is not None and known_lease[0] == lease:
            leases[address] = known_lease[1]
            back_now[address] = known_lease
            continue
        user, server, last, expires = lease.user, lease.server, lease.last_login, lease.expires
        if not canonical(address) or not isinstance(user, str | None) or not isinstance(server, str | None):
            return None
        if (
            lease.address != address
            or last.tzinfo is not UTC
            or last.microsecond
            or expires.tzinfo is not UTC
            or expires.microsecond
        ):
            leases[address] = Lease(address, user, _second(last), _second(expires), server)
        else:
            leases[address] = lease
        back_now[address] = (lease, leases[address])
    flushed = {}
    for address, time in sorted(table.flushed.items()):
        if not canonical(address):
            return None
        flushed[address] = _exact(time)
    read = LeaseTable(leases, flushed, None if table.flushed_all is None else _exact(table.flushed_all))
    guard = _guard_back(table.guard, canonical, memo.back)
    if guard is None:
        return None
    read.guard = guard
    checked = table.ignore_checked
    if checked is not None and all(isinstance(network, str) for network in checked):
        read.ignore_checked = tuple(checked)
    known.clear()
    known.update(found)
    memo.back_leases = back_now
    return read


def _guard_back(
    guard: GuardState, canonical: Callable[[object], bool], back: dict[str, _MemberBack]
) -> GuardState | None:
    read = GuardState()
    granted = _nested_back(
        guard.granted,
        back["granted"],
        lambda user, inner: isinstance(user, str) and all(map(canonical, inner)),
    )
    seen = _nested_back(
        guard.seen,
        back["seen"],
        lambda address, inner: canonical(address) and all(isinstance(user, str) for user in inner),
    )
    if granted is None or seen is None:
        return None
    read.granted, read.seen = granted, seen
    for user, (start, until) in sorted(guard.blocked.items()):
        if not isinstance(user, str):
            return None
        read.blocked[user] = (_exact(start), _exact(until))
    for (user, address), (time, reason) in sorted(guard.refused.items()):
        if not isinstance(user, str) or not canonical(address) or reason not in REASONS:
            return None
        read.refused[(user, address)] = (_exact(time), reason)
    return read


def _nested_back(
    table: dict[str, dict[str, datetime]],
    back: _MemberBack,
    valid: Callable[[str, dict[str, datetime]], bool],
) -> dict[str, dict[str, datetime]] | None:
    """`granted` or `seen` as read back: keys sorted, inner keys sorted, times
    exact; None when a key or an inner key would not be read. `back`: the
    members as read back last time (validated then), replaced by this time's."""
    keys = sorted(table)
    # In comprehensions, comparing dicts: a step changes few of the 20,000
    # members of 10,000 logins. Equal entries read back alike, in any order.
    unknown = [key for key in keys if (known := back.get(key)) is None or known[0] != table[key]]
    for key in unknown:
        inner = table[key]
        if not valid(key, inner):
            return None
        back[key] = (dict(inner), {each: _exact(inner[each]) for each in sorted(inner)})
    if len(back) > len(keys):
        for gone in set(back).difference(table):
            del back[gone]
    return {key: back[key][1].copy() for key in keys}


def _second(time: datetime) -> datetime:
    """A lease's time as the lease file keeps it: in UTC, to the second."""
    return time.astimezone(UTC).replace(microsecond=0)


def _exact(time: datetime) -> datetime:
    """A flush's or the guard's time as the lease file keeps it: in UTC, to the microsecond."""
    return time if time.tzinfo is UTC else time.astimezone(UTC)
