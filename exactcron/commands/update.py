"""The one place that sequences I/O: update, flush, add, render, and the readers.

Order of writes in `update`: lease store, then maps, then checkpoints. A run
killed anywhere re-reads some lines on the next run at worst; merging a
login twice changes nothing, so no lease is ever lost. Leases are reached
through the LeaseStore interface only (stores/base.py); checkpoints, the
lock and the last-run record are local (stores/local.py).

Over 400 lines: the run, flush/add/render, status and the salvage still live
here; to be split by command (issue 19).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exactcron import faults
from exactcron.addresses import normalize_address
from exactcron.atomic import remove_leftovers
from exactcron.commands.quiet import quiet_leases, settled_record
from exactcron.config import DEFAULT_STATE_DIR, Config, MapConfig, SourceConfig
from exactcron.deadline import Deadline
from exactcron.errors import DeadlineReachedError, ExactcronError, MapNoRoomError, StoreUnavailableError
from exactcron.leases import LatestLogins, believed_login
from exactcron.model import Lease, Login
from exactcron.outputs import audit
from exactcron.outputs.health import RunRecord, missing_logs
from exactcron.rules.parser import MAX_LINE_BYTES, LineParser
from exactcron.sources.base import Source, SourceCheckpoint
from exactcron.sources.checkpoint import Checkpoint, Untrusted
from exactcron.sources.open import open_source
from exactcron.sources.trust import ForgeableLogError
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState
from exactcron.stores.open import open_lease_store
from exactcron.timestamps import TimestampParser, format_instant

log = logging.getLogger("exactcron")

# Logins kept per source before they are merged (each address once, its
# latest login): bounds the memory a flood of fake success lines (or a
# first run over 100,000 logins) can take; merging early gives the same leases.
MAX_PENDING_LOGINS = 1 << 13


@dataclass
class SourceReport:
    path: Path
    lines: int | None = 0  # None: not counted
    logins: int = 0
    bytes_read: int = 0
    # Logins stamped more than a minute ahead of the clock (not believed), and the first one's stamp.
    ahead: int = 0
    first_ahead: datetime | None = None
    # Lines skipped because they could not be read (over-long, a stamp that names no time).
    unreadable: int = 0
    # The addresses this source granted or extended; kept only for the audit trail.
    granted: list[str] = field(default_factory=list)
    # Reading stopped at the run's deadline; the checkpoint is where it stopped.
    stopped: bool = False
    # Logins `[guard]` refused, per reason.
    refused: dict[str, int] = field(default_factory=dict)


@dataclass
class UpdateResult:
    sources: list[SourceReport] = field(default_factory=list)
    # Sorted, each address once. Not a set: 100,000 grants took 4 MB more.
    granted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    maps_written: list[Path] = field(default_factory=list)
    leases: int = 0


@contextlib.contextmanager
def _opened(config: Config, repair: bool = True) -> Iterator[tuple[LocalState, LeaseStore]]:
    """This host's state and the lease store; the store is closed on leaving."""
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state, repair)
    try:
        yield state, store
    finally:
        store.close()


def run_update(config: Config, now: datetime, count_lines: bool = True) -> UpdateResult:
    started = time.monotonic()
    with _opened(config) as (state, store), state.locked(config.lock_wait.total_seconds()):
        record = RunRecord.from_json(state.load_last_run())
        warnings, record = missing_logs(record, _logs_present(config), now)
        for warning in warnings:
            log.warning("%s", warning)
        try:
            result = _update_locked(config, state, store, now, count_lines)
        except ExactcronError as error:
            if isinstance(error, StoreUnavailableError):
                # Relay never outlives its lease: what was last read, less what expired since.
                _install_maps_failing_closed(
                    config.maps, state, [lease.address for lease in store.last_known(now)]
                )
            record = record.failed(now, str(error))
            _record_failure(state, record)
            _write_metrics(config, state, record, started)
            raise
        except Exception as error:
            # A bug, whatever it is: relay still ends with its leases, and `status` says why.
            _fail_closed_after_internal_error(config, state, store, now)
            record = record.failed(now, f"internal error: {type(error).__name__}: {error}")
            _record_failure(state, record)
            with contextlib.suppress(Exception):
                _write_metrics(config, state, record, started)
            raise
        logins = {str(report.path): report.logins for report in result.sources}
        unreadable = {str(report.path): report.unreadable for report in result.sources}
        refused: dict[str, int] = {}
        for report in result.sources:
            for reason, count in report.refused.items():
                refused[reason] = refused.get(reason, 0) + count
        record = record.succeeded(now, result.leases, logins, unreadable, refused)
        state.save_last_run(record.to_json())
        _write_metrics(config, state, record, started)
        return result


def _fail_closed_after_internal_error(
    config: Config, state: LocalState, store: LeaseStore, now: datetime
) -> None:
    """The maps pruned to the leases stored and still in force, after a run that broke.

    The stored leases are read again: the run's own may hold logins merged
    but never saved, which `show` would not list. When they cannot be read,
    those the store last knew, less the expired; failing that, none.
    """
    try:
        with _opened(config, repair=False) as (_, fresh):
            addresses = [lease.address for lease in fresh.snapshot(now).leases]
    except Exception:
        try:
            addresses = [lease.address for lease in store.last_known(now)]
        except Exception:
            addresses = []
    try:
        _install_maps_failing_closed(config.maps, state, addresses)
    except Exception as error:
        log.info("also failed: %s", error)


def _logs_present(config: Config) -> dict[str, bool]:
    """Whether each source has something to read (a log file that exists)."""
    return {str(source.path): open_source(source).present() for source in config.sources}


def _write_metrics(config: Config, state: LocalState, record: RunRecord, started: float) -> None:
    if config.metrics_file is None:
        return
    from exactcron.outputs import metrics

    saved = state.load_checkpoints(repair=False)
    unread = {str(each.path): each.unread_bytes for each in _source_statuses(config, saved)}
    sources = [str(source.path) for source in config.sources]
    text = metrics.render(record, unread, sources, time.monotonic() - started)
    try:
        metrics.write(config.metrics_file, text)
    except ExactcronError as error:
        # Monitoring that cannot be written must not stop relay control.
        log.warning("%s", error)


# Every lease ever read, expired or not, as `LeaseStore.last_known` gives them.
_ALL_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def _known_leases(store: LeaseStore) -> dict[str, Lease]:
    """The leases as loaded, for the audit trail's user and expiry; empty when no one audits."""
    return {lease.address: lease for lease in store.last_known(_ALL_TIME)} if audit.enabled() else {}


def _update_locked(
    config: Config, state: LocalState, store: LeaseStore, now: datetime, count_lines: bool
) -> UpdateResult:
    # Started once the lock is held: waiting for it does not count.
    deadline = Deadline(config.run_deadline)
    saved = state.load_checkpoints()
    quiet = None if state.rebuild_pending() else quiet_leases(config, state.settled, saved, store, now)
    if quiet is not None:
        return UpdateResult(sources=[SourceReport(source.path) for source in config.sources], leases=quiet)
    result = UpdateResult()
    _begin(config, state, store, now)
    rebuild = state.rebuild_pending()
    recorded = saved
    # Logs once open to forgers: kept in the checkpoints and in a file of their
    # own, read as the union of the two (LocalState.load_trust says why).
    trust_recorded = state.load_trust()
    untrusted = _untrusted(saved, trust_recorded)
    if rebuild:
        # Rebuild from the logs: every login still inside the timeout grants again,
        # except what was written while a log was refused for `written_by`
        # (`untrusted`: such a log is skipped, and no byte before where it is
        # trusted from is read).
        saved = {}
    before = _known_leases(store)
    checkpoints = dict(saved)
    refused: dict[str, dict[str, Any]] = {}
    logs: dict[str, Any] = {}
    # Whatever fails, the run goes on: the other sources are read, and every
    # map that can be written drops the expired leases; the first error is
    # raised at the end.
    errors: list[ExactcronError] = []
    deadline_noted = False
    for source in config.sources:
        key = str(source.path)
        # Taken before reading: whatever is written from now on makes the files differ.
        logs[key] = open_source(source).signature()
        if deadline.passed():
            # Not read at all: its checkpoint stays, the next run reads it.
            if not deadline_noted:
                errors.append(_deadline_error(deadline, f"before reading {source.path}"))
                deadline_noted = True
            result.sources.append(SourceReport(source.path))
            continue
        try:
            report, read = _read_source(
                source,
                saved.get(key),
                untrusted.get(key, Untrusted()),
                store,
                config,
                now,
                result.granted,
                count_lines,
                deadline.passed,
            )
        except ForgeableLogError as error:
            # Whatever is written until the log is trusted again never grants.
            errors.append(error)
            result.sources.append(SourceReport(source.path))
            untrusted[key] = Untrusted(True, untrusted.get(key, Untrusted()).trusted_from)
            checkpoints[key] = refused[key] = _refused_checkpoint(saved.get(key), untrusted[key])
            continue
        except ExactcronError as error:
            errors.append(error)
            result.sources.append(SourceReport(source.path))
            continue
        result.sources.append(report)
        untrusted[key] = read.untrusted
        if read.checkpoint is not None:
            checkpoints[key] = read.checkpoint.to_json()
        if report.stopped:
            errors.append(
                _deadline_error(deadline, f"after reading {report.bytes_read} bytes of {source.path}")
            )
            deadline_noted = True
    trust = {key: marks.to_json() for key, marks in untrusted.items() if marks}
    if trust != trust_recorded:
        # Before anything else is saved: a refusal recorded late could be lost.
        _collect(errors, lambda: state.save_trust(trust))
    checkpoints = _with_untrusted(checkpoints, untrusted)
    # Read: the memory of the parsed addresses is better spent on the rest.
    normalize_address.cache_clear()
    # An address granted by two sources, or by two batches of one, once.
    result.granted = list(dict.fromkeys(result.granted))
    result.expired = store.prune(now, config.timeout, config.ignore)
    faults.point("update:merged")
    leases_saved = _collect(errors, store.save)
    snapshot = store.snapshot(now) if leases_saved else None
    active = snapshot.leases if snapshot is not None else store.last_known(now)
    if audit.enabled() and snapshot is not None:
        _audit_update(result, before, active, now)
    result.maps_written = _install_maps(config.maps, state, [lease.address for lease in active], errors)
    result.leases = len(active)
    faults.point("update:maps-written")
    if snapshot is not None:
        # Without an error, what the run depended on, so that the next can be quiet.
        settled = settled_record(config, active, snapshot.version, logs) if not errors else None
        if checkpoints != saved or settled != state.settled or errors:
            _collect(errors, lambda: state.save_checkpoints(checkpoints, settled))
        if rebuild and not errors:
            _collect(errors, state.rebuild_done)
    elif refused:
        # The leases were not saved, so no checkpoint moves; but a refusal is kept.
        _collect(
            errors, lambda: state.save_checkpoints(_with_untrusted({**recorded, **refused}, untrusted), None)
        )
    if errors:
        raise _reported(errors)
    return result


def _deadline_error(deadline: Deadline, where: str) -> DeadlineReachedError:
    # What was read is merged, saved and rendered before this is raised.
    return DeadlineReachedError(f"{deadline.describe()} reached {where}; the next run goes on from there")


def _reported(errors: list[ExactcronError]) -> ExactcronError:
    """The error for the one line on stderr; the others go only to -v and log_file.

    The first, unless a map ran out of room: what that map holds now (rewritten
    in place, or removed) is what the admin must know first.
    """
    first = next((error for error in errors if isinstance(error, MapNoRoomError)), errors[0])
    for other in errors:
        if other is not first:
            log.info("also failed: %s", other)
    return first


def _collect(errors: list[ExactcronError], action: Callable[[], object]) -> bool:
    """Run `action`; on an exactcron error, keep it in `errors`. True when it succeeded."""
    try:
        action()
    except ExactcronError as error:
        errors.append(error)
        return False
    return True


def _audit_update(result: UpdateResult, before: dict[str, Lease], active: list[Lease], now: datetime) -> None:
    after = {lease.address: lease for lease in active}
    for report in result.sources:
        for address in report.granted:
            lease = after.get(address)
            if lease is not None:
                audit.lease_granted(now, before.get(address), lease, str(report.path))
        report.granted = []
    for address in result.expired:
        audit.lease_expired(now, before.get(address), address)


# -- reading ------------------------------------------------------------------


def _read_source(
    source: SourceConfig,
    saved: dict[str, Any] | None,
    untrusted: Untrusted,
    store: LeaseStore,
    config: Config,
    now: datetime,
    granted: list[str],
    count_lines: bool = True,
    stop: Callable[[], bool] | None = None,
) -> tuple[SourceReport, Source]:
    """What `source` holds since its checkpoint, merged into `store`; the source
    as read (its new checkpoint, what is known of its trust)."""
    timestamps = TimestampParser(now, source.zone)
    # Logins older than this grant nothing: a file never seen is read from here on;
    # `[guard]` looks back over its window too (a rebuild reaches its verdicts again).
    guarded = config.guard.enabled
    since = now - max(config.timeout, config.guard.window) if guarded else now - config.timeout
    parser = LineParser(source.rules, timestamps, source.hosts, count_lines=count_lines)
    reader = open_source(source, saved, since, timestamps.stamp, untrusted)
    report = SourceReport(source.path)
    # Per address, its latest login (and what a flush may spare): the lease
    # they grant is the one all its logins would grant when merged one by one.
    pending = LatestLogins()
    # With `[guard]`, every login in log order instead: who logged in from where counts.
    ordered: list[Login] = []
    latest_possible = now.replace(microsecond=0)

    def keep(logins: Sequence[Login]) -> None:
        report.logins += len(logins)
        if guarded:
            not_believed = []
            for login in logins:
                believed = believed_login(login, now) if login.second >= latest_possible else login
                if believed is None:
                    not_believed.append(login)
                else:
                    ordered.append(believed)
        else:
            not_believed = pending.keep(logins, now)
        if not_believed:
            report.logins -= len(not_believed)
            report.ahead += len(not_believed)
            if report.first_ahead is None:
                report.first_ahead = not_believed[0].time
        if len(pending) > MAX_PENDING_LOGINS or len(ordered) > MAX_PENDING_LOGINS:
            merge()

    auditing = audit.enabled()

    def merge() -> None:
        changed = store.merge(
            list(ordered) if guarded else pending.logins(), now, config.timeout, config.ignore
        )
        if pending.spared or guarded:
            changed = list(dict.fromkeys(changed))  # an address merged twice, once
        granted.extend(changed)
        if auditing:
            report.granted.extend(changed)
        pending.clear()
        ordered.clear()
        for verdict in store.verdicts():
            report.refused[verdict.reason] = report.refused.get(verdict.reason, 0) + (
                verdict.kind == "refuse"
            )
            audit.guard_verdict(now, verdict, str(source.path))

    for logins in reader.logins(parser, stop):
        keep(logins)
    merge()
    report.lines = parser.lines if count_lines else None
    report.bytes_read = reader.bytes_read
    report.stopped = reader.stopped
    report.unreadable = parser.too_long + parser.unreadable + reader.unreadable
    if report.unreadable:
        # One line per source and run, however many lines were skipped.
        log.warning("%s: %s", source.path, _unreadable_summary(report.unreadable, parser))
    if report.first_ahead is not None:
        log.warning(
            "%s: %d logins stamped more than a minute ahead of the clock granted nothing "
            "(the first stamped %s): the writer's clock or the source's `timezone` is wrong",
            source.path,
            report.ahead,
            format_instant(report.first_ahead),
        )
    if parser.other_hosts:
        log.info("%s: %d logins from hosts not in `hosts` granted nothing", source.path, parser.other_hosts)
    return report, reader


def _unreadable_summary(count: int, parser: LineParser) -> str:
    parts = []
    if parser.too_long:
        parts.append(f"{parser.too_long} over {MAX_LINE_BYTES} bytes")
    if parser.unreadable:
        parts.append(f"{parser.unreadable} with a stamp that names no time or that the parser could not read")
    if parser.first_error:
        parts.append(f"first error: {parser.first_error}")
    if count > parser.too_long + parser.unreadable:
        parts.append(f"{count - parser.too_long - parser.unreadable} journal entries")
    return (
        f"skipped {count} unreadable line{'s' if count != 1 else ''} ({'; '.join(parts)}); they grant nothing"
    )


def _refused_checkpoint(saved: dict[str, Any] | None, untrusted: Untrusted) -> dict[str, Any]:
    """The checkpoint a run that refused a source for `written_by` leaves: where
    reading stopped, and that nothing written from there on is to be read."""
    checkpoint = Checkpoint.from_json(saved) if saved else None
    live, rotated = (checkpoint.live, checkpoint.rotated) if checkpoint is not None else (None, ())
    return Checkpoint(live, rotated, True, untrusted.trusted_from).to_json()


def _untrusted(
    checkpoints: dict[str, dict[str, Any]], trust: dict[str, dict[str, Any]]
) -> dict[str, Untrusted]:
    """Per source key, the union of what its checkpoint and the trust file say."""
    found: dict[str, Untrusted] = {}
    for key in {*checkpoints, *trust}:
        marks = Untrusted.of(Checkpoint.from_json(checkpoints[key]) if key in checkpoints else None)
        recorded = Untrusted.from_json(trust[key]) if key in trust else None
        if recorded is None and key in trust:
            log.warning("trust.json: the entry of %s is not understood; kept from its checkpoint", key)
        marks = marks.union(recorded or Untrusted())
        if marks:
            found[key] = marks
    return found


def _with_untrusted(
    checkpoints: dict[str, dict[str, Any]], untrusted: dict[str, Untrusted]
) -> dict[str, dict[str, Any]]:
    """The checkpoints, each holding what `untrusted` says of its log (a copy of trust.json's)."""
    result = dict(checkpoints)
    for key, marks in untrusted.items():
        document = result.get(key)
        if document is None and not marks:
            continue  # nothing read and nothing to record (a journal before its first entry)
        checkpoint = Checkpoint.from_json(document) if document is not None else Checkpoint(None)
        if checkpoint is None:
            continue  # not a file's checkpoint (a journal's): nothing to record
        result[key] = replace(checkpoint, refused=marks.refused, trusted_from=marks.trusted_from).to_json()
    return result


def _install_maps(
    maps: Sequence[MapConfig],
    state: LocalState,
    addresses: Sequence[str],
    errors: list[ExactcronError],
    force: bool = False,
) -> list[Path]:
    """Rewrite the maps whose content differs from `addresses` (normalized, sorted),
    or whose files are not those installed last (every map, with `force`).

    A map that fails leaves its error in `errors`; the others are still written.
    """
    from exactcron.outputs.maps import MapRecord, MapWriter

    writer = MapWriter()
    record = MapRecord(state.directory)
    written = []
    for spec in maps:
        # Under the lock, a temporary file beside the map is a killed run's.
        remove_leftovers(spec.path)
        try:
            if writer.install(spec, addresses, force, record):
                written.append(spec.path)
        except ExactcronError as error:
            errors.append(error)
    _collect(errors, lambda: record.save(maps))
    return written


def _install_maps_failing_closed(
    maps: Sequence[MapConfig], state: LocalState, addresses: Sequence[str]
) -> None:
    """Install the maps with `addresses` on the way out of a failed run; their own
    errors go to the log, since the run's error is the one reported."""
    errors: list[ExactcronError] = []
    _install_maps(maps, state, addresses, errors)
    for error in errors:
        log.info("also failed: %s", error)


def _begin(config: Config, state: LocalState, store: LeaseStore, now: datetime) -> bool:
    """Load the leases under the lock; True when they were lost (a broken file set aside).

    Leases that cannot be read justify no relay beyond what the store last
    gave (for the lease file: nothing): the maps keep only those still in
    force (fail closed) and the error is raised. Lost leases are rebuilt from
    the logs by the next update, whichever command found them lost: that is
    remembered.
    """
    try:
        lost = store.begin()
    except ExactcronError:
        try:
            known = [lease.address for lease in store.last_known(now)]
        except ExactcronError:
            known = []
        _install_maps_failing_closed(config.maps, state, known)
        raise
    if lost:
        state.request_rebuild()
    return lost


def _record_failure(state: LocalState, record: RunRecord) -> None:
    # When the state directory is what failed, the error itself is still reported.
    with contextlib.suppress(ExactcronError):
        state.save_last_run(record.to_json())


def _change_leases(config: Config, now: datetime, change: Callable[[LeaseStore], Any], what: str) -> Any:
    """Apply `change(store)` under the lock, then save leases and rewrite maps."""
    with _opened(config) as (state, store), state.locked(config.lock_wait.total_seconds()):
        _begin(config, state, store, now)
        before = _known_leases(store)
        stored = {lease.address for lease in store.last_known(now)}
        outcome = change(store)
        for address in store.prune(now, config.timeout, config.ignore):
            audit.lease_expired(now, before.get(address), address)
        errors: list[ExactcronError] = []
        saved = _collect(errors, store.save)
        if saved:
            active = store.snapshot(now).leases
        else:
            # Not saved: a revoked address leaves the maps all the same, an added one does not enter.
            active = [lease for lease in store.last_known(now) if lease.address in stored]
        _install_maps(config.maps, state, [lease.address for lease in active], errors)
        if not saved:
            # The maps hold what the store last knew, the change included when
            # it revokes (fail closed); but the next run reads the store as saved.
            # One line: that the change is lost, and what a map out of room holds now.
            maps = "; ".join(str(error) for error in errors[1:] if isinstance(error, MapNoRoomError))
            message = f"{what} not recorded: {errors[0]}; run it again once it can be" + (
                f"; {maps}" if maps else ""
            )
            for other in errors[1:]:
                log.info("also failed: %s", other)
            # The store's own error type: its exit code (73 for the lease file, 75 for the shared store).
            raise type(errors[0])(message)
        if errors:
            raise _reported(errors)
        return outcome


def flush(config: Config, now: datetime, addresses: list[str] | None, by: str | None = None) -> list[str]:
    """Revoke the leases of `addresses` (all when None); return those that held one."""

    def change(store: LeaseStore) -> list[str]:
        held = _known_leases(store)
        revoked = store.flush(addresses, now)
        if addresses is None:
            audit.record(now, "flush", "all", by=by, revoked=str(len(revoked)))
        for address in revoked if addresses is None else addresses:
            lease = held.get(address)
            user = lease.user if lease is not None and lease.expires > now else None
            audit.record(now, "flush", address, user=user, by=by)
        return revoked

    return _change_leases(config, now, change, "flush")  # type: ignore[no-any-return]


def add(config: Config, now: datetime, address: str, duration: timedelta, by: str | None = None) -> Lease:
    def change(store: LeaseStore) -> Lease:
        lease = store.add(address, now, duration)
        audit.record(now, "add", address, until=audit.utc_stamp(lease.expires), by=by)
        return lease

    return _change_leases(config, now, change, "add")  # type: ignore[no-any-return]


def render(config: Config, now: datetime) -> list[Path]:
    """Rewrite every map from the current leases, whether or not it changed."""
    with _opened(config) as (state, store), state.locked(config.lock_wait.total_seconds()):
        errors: list[ExactcronError] = []
        if _begin(config, state, store, now):
            # The broken file is set aside: store the (empty) leases, so that `show` agrees.
            _collect(errors, store.save)
        addresses = [lease.address for lease in store.snapshot(now).leases]
        _install_maps(config.maps, state, addresses, errors, force=True)
        if errors:
            raise _reported(errors)
        return [spec.path for spec in config.maps]


def salvage_maps(state_dir: Path, now: datetime) -> None:
    """After a configuration that cannot be loaded: drop expired leases from the maps
    the last run installed, as recorded in the state directory. Best effort."""
    if not state_dir.is_dir():
        return
    from exactcron.outputs.maps import MapRecord
    from exactcron.stores.file import FileLeaseStore

    state = LocalState(state_dir)
    with contextlib.suppress(ExactcronError), state.locked(5):
        specs = MapRecord(state_dir).specs()
        if specs:
            # The local lease file: with a broken configuration, no other store is known.
            leases = FileLeaseStore(state, repair=False).snapshot(now).leases
            _install_maps_failing_closed(specs, state, [lease.address for lease in leases])


def state_dir_of(config_file: Path) -> Path:
    """Where the state of a configuration that cannot be loaded lives: the
    `state_dir` it names, even when it is not TOML any more (a line of its
    own is still looked for); else, a configuration unreadable, missing or
    naming no usable directory, the default state directory."""
    import re
    import tomllib

    default = Path(DEFAULT_STATE_DIR)
    try:
        text = config_file.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return default
    try:
        value = tomllib.loads(text).get("state_dir", DEFAULT_STATE_DIR)
    except ValueError:
        line = re.search(
            r"""^[ \t]*state_dir[ \t]*=[ \t]*(["'])([^"'\n]+)\1[ \t]*(?:#.*)?$""", text, re.MULTILINE
        )
        value = line.group(2) if line else DEFAULT_STATE_DIR
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        return default
    try:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else (config_file.parent / path).resolve()
        named = path.is_dir()
    except (OSError, RuntimeError, ValueError):
        return default
    return path if named else default


def current_leases(config: Config, now: datetime) -> list[Lease]:
    """Leases in force now. Reads without the lock: the file is only ever replaced whole."""
    with _opened(config, repair=False) as (_, store):
        return store.snapshot(now).leases


@dataclass
class SourceStatus:
    path: Path
    checkpoint: SourceCheckpoint | None
    unread_bytes: int | None
    # False for a source whose unread bytes cannot be known (a journal).
    counts_bytes: bool = True


@dataclass
class Status:
    sources: list[SourceStatus]
    last_run: dict[str, Any] | None
    leases: int
    warnings: list[str] = field(default_factory=list)
    # `[guard]`: users refused for too many addresses within the window, and shared addresses.
    over_limit: list[dict[str, Any]] = field(default_factory=list)
    shared: list[dict[str, Any]] = field(default_factory=list)


def status(config: Config, now: datetime) -> Status:
    with _opened(config, repair=False) as (state, store):
        return _status(config, state, store, now)


def _status(config: Config, state: LocalState, store: LeaseStore, now: datetime) -> Status:
    saved = state.load_checkpoints(repair=False)
    leases = len(store.snapshot(now).leases)
    found = Status(_source_statuses(config, saved), state.load_last_run(), leases, store.warnings(now))
    rules = config.guard
    if rules.enabled:
        guard = store.guard_state(now)
        found.over_limit = guard.over_limit(now, rules)
        found.shared = guard.shared(now, rules)
        found.warnings += [
            f"{entry['address']} is shared: {entry['users']} users logged in from it within the guard's"
            f" window (more than max_users_per_address = {rules.max_users_per_address})"
            + ("; refused" if rules.refuse_shared else "; set refuse_shared = true to refuse it")
            for entry in found.shared
        ]
    return found


def _source_statuses(config: Config, saved: dict[str, dict[str, Any]]) -> list[SourceStatus]:
    sources = []
    for source in config.sources:
        read = open_source(source, saved.get(str(source.path)))
        sources.append(SourceStatus(source.path, read.checkpoint, read.unread_bytes(), read.counts_bytes))
    return sources
