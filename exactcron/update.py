"""The one place that sequences I/O: update, flush, add, render, and the readers.

Order of writes in `update`: lease store, then maps, then checkpoints. A run
killed anywhere re-reads some lines on the next run at worst; merging a
login twice changes nothing, so no lease is ever lost. Leases are reached
through the LeaseStore interface only (leasestore.py); checkpoints, the
lock and the last-run record are local (state.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exactcron import faults
from exactcron.addresses import normalize_address
from exactcron.config import Config, MapConfig, SourceConfig
from exactcron.errors import ExactcronError
from exactcron.leases import Lease
from exactcron.leasestore import LeaseStore, open_lease_store
from exactcron.quiet import quiet_leases, settled_record
from exactcron.rules import LineParser, Login
from exactcron.source import Checkpoint, LogReader, files_signature
from exactcron.state import LocalState, remove_leftovers
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
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state)
    with state.locked(config.lock_wait.total_seconds()):
        try:
            result = _update_locked(config, state, store, now)
        except ExactcronError as error:
            _record_failure(state, now, error)
            raise
        state.save_last_run(now, "ok")
        return result


def _update_locked(config: Config, state: LocalState, store: LeaseStore, now: datetime) -> UpdateResult:
    saved = state.load_checkpoints()
    quiet = quiet_leases(config, state.settled, saved, store, now)
    if quiet is not None:
        return UpdateResult(sources=[SourceReport(source.path) for source in config.sources], leases=quiet)
    result = UpdateResult()
    if store.begin():
        # Rebuild from the logs: every login still inside the timeout grants again.
        saved = {}
    checkpoints = dict(saved)
    logs: dict[str, Any] = {}
    for source in config.sources:
        key = str(source.path)
        if not source.journal:
            # Taken before reading: whatever is written from now on makes the files differ.
            logs[key] = files_signature(source.path, source.olddir)
        report, checkpoint = _read_source(source, saved.get(key), store, config, now, result.granted)
        result.sources.append(report)
        if checkpoint is not None:
            checkpoints[key] = checkpoint.to_json()
    # Read: the memory of the parsed addresses is better spent on the rest.
    normalize_address.cache_clear()
    # An address granted by two sources, or by two batches of one, once.
    result.granted.sort()
    result.granted = [address for address, _ in groupby(result.granted)]
    result.expired = store.prune(now, config.timeout, config.ignore)
    faults.point("update:merged")
    store.save()
    snapshot = store.snapshot(now)
    active = snapshot.leases
    result.maps_written = _install_maps(config.maps, [lease.address for lease in active])
    result.leases = len(active)
    faults.point("update:maps-written")
    settled = settled_record(config, active, snapshot.version, logs)
    if checkpoints != saved or settled != state.settled:
        state.save_checkpoints(checkpoints, settled)
    return result


# -- reading ------------------------------------------------------------------


def _read_source(
    source: SourceConfig,
    saved: dict[str, Any] | None,
    store: LeaseStore,
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
        granted.extend(store.merge(pending.values(), now, config.timeout, config.ignore))
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


def _record_failure(state: LocalState, now: datetime, error: ExactcronError) -> None:
    # When the state directory is what failed, the error itself is still reported.
    with contextlib.suppress(ExactcronError):
        state.save_last_run(now, f"failed: {error}")


def _change_leases(config: Config, now: datetime, change: Callable[[LeaseStore], Any]) -> Any:
    """Apply `change(store)` under the lock, then save leases and rewrite maps."""
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state)
    with state.locked(config.lock_wait.total_seconds()):
        store.begin()
        outcome = change(store)
        store.prune(now, config.timeout, config.ignore)
        store.save()
        _install_maps(config.maps, [lease.address for lease in store.snapshot(now).leases])
        return outcome


def flush(config: Config, now: datetime, addresses: list[str] | None) -> list[str]:
    """Revoke the leases of `addresses` (all when None); return those that held one."""
    return _change_leases(config, now, lambda store: store.flush(addresses, now))  # type: ignore[no-any-return]


def add(config: Config, now: datetime, address: str, duration: timedelta) -> Lease:
    return _change_leases(config, now, lambda store: store.add(address, now, duration))  # type: ignore[no-any-return]


def render(config: Config, now: datetime) -> list[Path]:
    """Rewrite every map from the current leases, whether or not it changed."""
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state)
    with state.locked(config.lock_wait.total_seconds()):
        addresses = [lease.address for lease in store.snapshot(now).leases]
        from exactcron.maps import MapWriter

        writer = MapWriter()
        for spec in config.maps:
            remove_leftovers(spec.path)
            writer.install(spec, addresses, force=True)
        return [spec.path for spec in config.maps]


def current_leases(config: Config, now: datetime) -> list[Lease]:
    """Leases in force now. Reads without the lock: the file is only ever replaced whole."""
    return open_lease_store(config, LocalState(config.state_dir), repair=False).snapshot(now).leases


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
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state, repair=False)
    saved = state.load_checkpoints(repair=False)
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
    return Status(sources, state.load_last_run(), len(store.snapshot(now).leases))
