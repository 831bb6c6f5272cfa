"""The one place that sequences I/O: update, flush, add, render, and the readers.

Order of writes in `update`: lease file, then maps, then checkpoints. A run
killed anywhere re-reads some lines on the next run at worst; merging a
login twice changes nothing, so no lease is ever lost.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exactcron import faults
from exactcron.addresses import normalize_address
from exactcron.config import Config, MapConfig, SourceConfig
from exactcron.errors import ExactcronError
from exactcron.leases import Lease, LeaseTable
from exactcron.rules import LineParser, Login
from exactcron.source import Checkpoint, LogReader, files_signature
from exactcron.store import StateStore, remove_leftovers
from exactcron.timestamps import TimestampParser

if TYPE_CHECKING:
    # Imported where used: a run without a journal source (or without a map
    # to rewrite) never pays for subprocess and its kin.
    from exactcron.journal import JournalCheckpoint, JournalReader

log = logging.getLogger("exactcron")

# Logins kept per source before they are merged (each address once, its
# latest login): bounds the memory a flood of fake success lines (or a
# first run over 100,000 logins) can take; merging early gives the same leases.
MAX_PENDING_LOGINS = 1 << 13


@dataclass
class SourceReport:
    path: Path
    lines: int = 0
    logins: int = 0
    bytes_read: int = 0


@dataclass
class UpdateResult:
    sources: list[SourceReport] = field(default_factory=list)
    # Sorted, each address once. Not a set: 100,000 grants took 4 MB more.
    granted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    maps_written: list[Path] = field(default_factory=list)
    leases: int = 0


def run_update(config: Config, now: datetime) -> UpdateResult:
    store = StateStore(config.state_dir)
    with store.locked(config.lock_wait.total_seconds()):
        try:
            result = _update_locked(config, store, now)
        except ExactcronError as error:
            _record_failure(store, now, error)
            raise
        store.save_last_run(now, "ok")
        return result


def _update_locked(config: Config, store: StateStore, now: datetime) -> UpdateResult:
    saved = store.load_checkpoints()
    quiet = _quiet_run(config, store, saved, now)
    if quiet is not None:
        return quiet
    result = UpdateResult()
    table = store.load_leases()
    if store.leases_lost:
        # Rebuild from the logs: every login still inside the timeout grants again.
        saved = {}
    checkpoints = dict(saved)
    logs: dict[str, Any] = {}
    for source in config.sources:
        key = str(source.path)
        if not source.journal:
            # Taken before reading: whatever is written from now on makes the files differ.
            logs[key] = files_signature(source.path, source.olddir)
        report, checkpoint = _read_source(source, saved.get(key), table, config, now, result.granted)
        result.sources.append(report)
        if checkpoint is not None:
            checkpoints[key] = checkpoint.to_json()
    # Read: the memory of the parsed addresses is better spent on the rest.
    normalize_address.cache_clear()
    # An address granted by two sources, or by two batches of one, once.
    result.granted.sort()
    result.granted = [address for address, _ in groupby(result.granted)]
    result.expired = table.prune(now, config.timeout, config.ignore)
    faults.point("update:merged")
    store.save_leases(table)
    active = table.active(now)
    result.maps_written = _install_maps(config.maps, [lease.address for lease in active])
    result.leases = len(active)
    faults.point("update:maps-written")
    settled = _settled(config, store, active, logs)
    if checkpoints != saved or settled != store.settled:
        store.save_checkpoints(checkpoints, settled)
    return result


# -- the quiet run ------------------------------------------------------------
#
# Most runs find nothing new. The last full run records, beside the
# checkpoints (saved last, so a run killed earlier leaves an older record
# that no longer fits), what its outcome depended on: the configuration, the
# identity and size of every log file before it read them, the lease file
# and the maps as it left them, and the earliest lease expiry. While all of
# that still holds, a full run would read nothing, grant nothing, expire
# nothing and write nothing: it is skipped. Anything missing, unknown or
# different means a full run.


def _quiet_run(
    config: Config, store: StateStore, saved: dict[str, dict[str, Any]], now: datetime
) -> UpdateResult | None:
    """The result of a run with nothing to do, or None when a full run is needed."""
    settled = store.settled
    if settled is None or store.leases_lost:
        return None
    expires = settled.get("expires", "")
    active = settled.get("active")
    if not (expires is None or isinstance(expires, int)) or not isinstance(active, int):
        return None
    if expires is not None and now.timestamp() >= expires:
        return None
    if settled.get("config") != _config_key(config):
        return None
    leases_file = _file_signature(store.leases_path)
    if leases_file is None or settled.get("leases_file") != leases_file:
        return None
    if settled.get("maps") != _maps_signature(config.maps):
        return None
    logs = settled.get("logs")
    if not isinstance(logs, dict):
        return None
    for source in config.sources:
        key = str(source.path)
        if key not in saved:
            return None
        if source.journal:
            if not _journal_is_quiet(source, saved[key], now - config.timeout):
                return None
        elif logs.get(key) != files_signature(source.path, source.olddir):
            return None
    return UpdateResult(sources=[SourceReport(source.path) for source in config.sources], leases=active)


def _journal_is_quiet(source: SourceConfig, saved: dict[str, Any], since: datetime) -> bool:
    from exactcron.journal import JournalCheckpoint, JournalReader

    start = JournalCheckpoint.from_json(saved)
    if start is None:
        return False
    reader = JournalReader(source.journal, start, since, source.journal_directory)
    # The full run that follows a non-empty answer asks journalctl again, from the same cursor.
    return next(iter(reader.lines()), None) is None and reader.checkpoint == start


def _settled(
    config: Config, store: StateStore, active: Sequence[Lease], logs: dict[str, Any]
) -> dict[str, Any]:
    earliest = min((lease.expires for lease in active), default=None)
    return {
        "config": _config_key(config),
        # Whole seconds, rounded down: a quiet run ends before any lease does.
        "expires": None if earliest is None else math.floor(earliest.timestamp()),
        "active": len(active),
        "leases_file": _file_signature(store.leases_path),
        "maps": _maps_signature(config.maps),
        "logs": logs,
    }


def _config_key(config: Config) -> list[Any]:
    """What of the configuration decides the leases and the maps, as JSON values."""
    return [
        config.timeout.total_seconds(),
        sorted(str(network) for network in config.ignore),
        [[spec.mta, str(spec.path), spec.type, str(spec.include or "")] for spec in config.maps],
        [
            [str(source.path), str(source.olddir or ""), [rule.name for rule in source.rules]]
            for source in config.sources
        ],
    ]


def _file_signature(path: Path) -> list[int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]


def _maps_signature(maps: Iterable[MapConfig]) -> list[Any]:
    """Each map's text and the databases built beside it (NAME.db, .lmdb, .cdb), and its include."""
    signature: list[Any] = []
    for spec in maps:
        files: list[Any] = [[spec.path.name, _file_signature(spec.path)]]
        try:
            entries = sorted(os.scandir(spec.path.parent), key=lambda entry: entry.name)
        except OSError:
            return [None]
        files += [
            [entry.name, _file_signature(Path(entry.path))]
            for entry in entries
            if entry.name.startswith(spec.path.name + ".")
        ]
        include = _file_signature(spec.include) if spec.include else None
        signature.append([str(spec.path), files, include])
    return signature


# -- reading ------------------------------------------------------------------


def _read_source(
    source: SourceConfig,
    saved: dict[str, Any] | None,
    table: LeaseTable,
    config: Config,
    now: datetime,
    granted: list[str],
) -> tuple[SourceReport, Checkpoint | JournalCheckpoint | None]:
    timestamps = TimestampParser(now, source.zone)
    # Logins older than this grant nothing: a file never seen is read from here on.
    since = now - config.timeout
    parser = LineParser(source.rules, timestamps)
    report = SourceReport(source.path)
    # Per address, its latest login only: the lease it grants is the one
    # all its logins would grant when merged one by one, in log order.
    pending: dict[str, Login] = {}

    def keep(logins: Iterable[Login]) -> None:
        for login in logins:
            report.logins += 1
            # Ties keep the first: merged in order, a later login of the same time changes nothing.
            current = pending.get(login.address)
            if current is None or min(login.time, now) > min(current.time, now):
                pending[login.address] = login
        if len(pending) > MAX_PENDING_LOGINS:
            merge()

    def merge() -> None:
        for login in pending.values():
            if table.merge(login, now, config.timeout, config.ignore):
                granted.append(login.address)
        pending.clear()

    reader: LogReader | JournalReader
    if source.journal:
        from exactcron.journal import JournalCheckpoint, JournalReader

        start = JournalCheckpoint.from_json(saved) if saved else None
        reader = JournalReader(source.journal, start, since, source.journal_directory)
        for line in reader.lines():
            login = parser.parse(line)
            if login is not None:
                keep((login,))
    else:
        checkpoint = Checkpoint.from_json(saved) if saved else None
        reader = LogReader(source.path, checkpoint, since, timestamps.stamp, source.olddir)
        for block in reader.blocks():
            keep(parser.logins(block))
    merge()
    report.lines = parser.lines
    report.bytes_read = reader.bytes_read
    if parser.too_long:
        log.warning("%s: skipped %d over-long lines", source.path, parser.too_long)
    return report, reader.checkpoint


def _install_maps(maps: Iterable[MapConfig], addresses: Sequence[str]) -> list[Path]:
    """Rewrite the maps whose content differs from `addresses` (normalized, sorted)."""
    from exactcron.maps import MapWriter

    writer = MapWriter()
    written = []
    for spec in maps:
        # Under the lock, a temporary file beside the map is a killed run's.
        remove_leftovers(spec.path)
        if writer.install(spec, addresses):
            written.append(spec.path)
    return written


def _record_failure(store: StateStore, now: datetime, error: ExactcronError) -> None:
    # When the state directory is what failed, the error itself is still reported.
    with contextlib.suppress(ExactcronError):
        store.save_last_run(now, f"failed: {error}")


def _change_leases(config: Config, now: datetime, change: Any) -> Any:
    """Apply `change(table)` under the lock, then save leases and rewrite maps."""
    store = StateStore(config.state_dir)
    with store.locked(config.lock_wait.total_seconds()):
        table = store.load_leases()
        outcome = change(table)
        table.prune(now, config.timeout, config.ignore)
        store.save_leases(table)
        _install_maps(config.maps, [lease.address for lease in table.active(now)])
        return outcome


def flush(config: Config, now: datetime, addresses: list[str] | None) -> list[str]:
    """Revoke the leases of `addresses` (all when None); return those that held one."""
    if addresses is None:
        return _change_leases(config, now, lambda table: table.flush_all(now))  # type: ignore[no-any-return]
    return _change_leases(config, now, lambda table: table.flush(addresses, now))  # type: ignore[no-any-return]


def add(config: Config, now: datetime, address: str, duration: timedelta) -> Lease:
    return _change_leases(config, now, lambda table: table.add(address, now, duration))  # type: ignore[no-any-return]


def render(config: Config, now: datetime) -> list[Path]:
    """Rewrite every map from the current leases, whether or not it changed."""
    store = StateStore(config.state_dir)
    with store.locked(config.lock_wait.total_seconds()):
        table = store.load_leases()
        addresses = [lease.address for lease in table.active(now)]
        from exactcron.maps import MapWriter

        writer = MapWriter()
        for spec in config.maps:
            remove_leftovers(spec.path)
            writer.install(spec, addresses, force=True)
        return [spec.path for spec in config.maps]


def current_leases(config: Config, now: datetime) -> list[Lease]:
    """Leases in force now. Reads without the lock: the file is only ever replaced whole."""
    return StateStore(config.state_dir).load_leases(repair=False).active(now)


@dataclass
class SourceStatus:
    path: Path
    checkpoint: Checkpoint | JournalCheckpoint | None
    unread_bytes: int | None


@dataclass
class Status:
    sources: list[SourceStatus]
    last_run: dict[str, Any] | None
    leases: int


def status(config: Config, now: datetime) -> Status:
    store = StateStore(config.state_dir)
    saved = store.load_checkpoints(repair=False)
    sources = []
    for source in config.sources:
        document = saved.get(str(source.path))
        if source.journal:
            from exactcron.journal import JournalCheckpoint

            # A journal has a cursor, not an offset; what is unread is unknown without reading.
            sources.append(SourceStatus(source.path, JournalCheckpoint.from_json(document), None))
            continue
        checkpoint = Checkpoint.from_json(document) if document else None
        reader = LogReader(source.path, checkpoint, olddir=source.olddir)
        sources.append(SourceStatus(source.path, checkpoint, reader.unread_bytes()))
    return Status(sources, store.load_last_run(), len(store.load_leases(repair=False).active(now)))
