"""The one place that sequences I/O: update, flush, add, render, and the readers.

Order of writes in `update`: lease file, then maps, then checkpoints. A run
killed anywhere re-reads some lines on the next run at worst; merging a
login twice changes nothing, so no lease is ever lost.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from exactcron import faults
from exactcron.config import Config, MapConfig, SourceConfig
from exactcron.errors import ExactcronError
from exactcron.journal import JournalCheckpoint, JournalReader
from exactcron.leases import Lease, LeaseTable
from exactcron.maps import MapWriter
from exactcron.rules import LineParser
from exactcron.source import Checkpoint, LogReader
from exactcron.store import StateStore, remove_leftovers
from exactcron.timestamps import TimestampParser

log = logging.getLogger("exactcron")


@dataclass
class SourceReport:
    path: Path
    lines: int = 0
    logins: int = 0
    bytes_read: int = 0


@dataclass
class UpdateResult:
    sources: list[SourceReport] = field(default_factory=list)
    granted: set[str] = field(default_factory=set)
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
    result = UpdateResult()
    table = store.load_leases()
    saved = store.load_checkpoints()
    if store.leases_lost:
        # Rebuild from the logs: every login still inside the timeout grants again.
        saved = {}
    checkpoints = dict(saved)
    for source in config.sources:
        key = str(source.path)
        report, checkpoint = _read_source(source, saved.get(key), table, config, now, result.granted)
        result.sources.append(report)
        if checkpoint is not None:
            checkpoints[key] = checkpoint.to_json()
    result.expired = table.prune(now, config.timeout, config.ignore)
    faults.point("update:merged")
    store.save_leases(table)
    result.maps_written = _install_maps(config.maps, table, now)
    result.leases = len(table.active(now))
    faults.point("update:maps-written")
    if checkpoints != saved:
        store.save_checkpoints(checkpoints)
    return result


def _read_source(
    source: SourceConfig,
    saved: dict[str, Any] | None,
    table: LeaseTable,
    config: Config,
    now: datetime,
    granted: set[str],
) -> tuple[SourceReport, Checkpoint | JournalCheckpoint | None]:
    timestamps = TimestampParser(now, source.zone)
    # Logins older than this grant nothing: a file never seen is read from here on.
    since = now - config.timeout
    reader: LogReader | JournalReader
    if source.journal:
        start = JournalCheckpoint.from_json(saved) if saved else None
        reader = JournalReader(source.journal, start, since, source.journal_directory)
    else:
        checkpoint = Checkpoint.from_json(saved) if saved else None
        reader = LogReader(source.path, checkpoint, since, timestamps.stamp, source.olddir)
    parser = LineParser(source.rules, timestamps)
    report = SourceReport(source.path)
    for line in reader.lines():
        login = parser.parse(line)
        if login is None:
            continue
        report.logins += 1
        if table.merge(login, now, config.timeout, config.ignore):
            granted.add(login.address)
    report.lines = parser.lines
    report.bytes_read = reader.bytes_read
    if parser.too_long:
        log.warning("%s: skipped %d over-long lines", source.path, parser.too_long)
    return report, reader.checkpoint


def _install_maps(maps: Iterable[MapConfig], table: LeaseTable, now: datetime) -> list[Path]:
    addresses = [lease.address for lease in table.active(now)]
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
        _install_maps(config.maps, table, now)
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
            # A journal has a cursor, not an offset; what is unread is unknown without reading.
            sources.append(SourceStatus(source.path, JournalCheckpoint.from_json(document), None))
            continue
        checkpoint = Checkpoint.from_json(document) if document else None
        reader = LogReader(source.path, checkpoint, olddir=source.olddir)
        sources.append(SourceStatus(source.path, checkpoint, reader.unread_bytes()))
    return Status(sources, store.load_last_run(), len(store.load_leases(repair=False).active(now)))
