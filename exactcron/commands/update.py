"""The run: `update`, from the lock to the checkpoints, and the reading of each source.

Order of writes: lease store, then maps, then checkpoints. A run killed
anywhere re-reads some lines on the next run at worst; merging a login twice
changes nothing, so no lease is ever lost. Leases are reached through the
LeaseStore interface only (stores/base.py); checkpoints, the lock and the
last-run record are local (stores/local.py). flush, add and render are in
changes.py, status in status.py, the fail-closed install in failclosed.py.

Over 400 lines: the run's sequence with its error handling (every source
read whatever fails, the `written_by` refusals kept) reads as one piece.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exactcron.addresses import normalize_address
from exactcron.commands.common import collect, known_leases, opened, reported
from exactcron.commands.quiet import Signatures, quiet_leases, settled_record
from exactcron.config import Config, SourceConfig
from exactcron.errors import DeadlineReachedError, ExactcronError, StoreUnavailableError
from exactcron.logs import keeping, log
from exactcron.model import Lease, Login
from exactcron.outputs.health import FollowerRecord, RunRecord, missing_logs
from exactcron.records import dataclass, field, replace
from exactcron.sources.base import Source
from exactcron.sources.checkpoint import Checkpoint, Untrusted
from exactcron.sources.open import open_source
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState

if TYPE_CHECKING:
    from exactcron.deadline import Deadline
    from exactcron.rules.parser import LineParser
    from exactcron.sessions import SessionBook

# Logins kept per source before they are merged (each address once, its
# latest login): bounds the memory a flood of fake success lines (or a
# first run over 100,000 logins) can take; merging early gives the same leases.
MAX_PENDING_LOGINS = 1 << 13


@dataclass
class SourceReport:
    """What a run read of one source."""

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
    # Bytes of the source left unread once read (None when unknown: a journal),
    # measured (`measured`) for the metrics only.
    unread_bytes: int | None = None
    measured: bool = False
    # Logins `[guard]` refused, per reason.
    refused: dict[str, int] = field(default_factory=dict)
    # The open sessions of its two-line rules as read (rules/pairing.py); None: it has none.
    pairings: dict[str, Any] | None = None
    # With `hold_while_connected`: the source's sessions, as read (commands/held.py holds them).
    sessions: SessionBook | None = None


@dataclass
class UpdateResult:
    """What a run did (cli.py prints it with -v, and log_file has its summary)."""

    sources: list[SourceReport] = field(default_factory=list)
    # Sorted, each address once. Not a set: 100,000 grants took 4 MB more.
    granted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    maps_written: list[Path] = field(default_factory=list)
    leases: int = 0
    # Per source, the bytes left unread, as the run found them (for the metrics):
    # asked of each source once read, or for a quiet run as the last full run left them.
    unread: dict[str, int | None] = field(default_factory=dict)
    # When the earliest lease in force ends (seconds since the epoch), or None: a
    # follower runs again then, to drop it from the maps.
    next_expiry: float | None = None
    # Per lease granted or extended: seconds from its login's stamp to its map
    # being installed (the metrics' exactcron_grant_delay_seconds).
    grant_delays: list[float] = field(default_factory=list)


def run_update(
    config: Config,
    now: datetime,
    count_lines: bool = True,
    under_lock: Callable[[LocalState], None] | None = None,
    installed_clock: Callable[[], datetime] | None = None,
    ends_follow: bool = False,
    follower: FollowerRecord | None = None,
) -> UpdateResult:
    """One run. `under_lock` is called first once the lock is held (a follower
    claims its generation there, follow.py). `installed_clock` tells when the
    maps were installed (the wall clock); without it, `now` (a virtual clock,
    as with --now). `ends_follow`: the run's deadline is the follow's own end,
    so reaching it is no failure (what was read is saved; the next run goes
    on): the last run's record is left as it was. `follower`: the follower
    whose step this is (its figures in the record, for `status`)."""
    result = _run(config, now, count_lines, under_lock, installed_clock, ends_follow, follower, False)
    assert result is not None
    return result


def run_if_quiet(
    config: Config, now: datetime, when_quiet: Callable[[], None] | None = None
) -> UpdateResult | None:
    """The run when it finds nothing to do (quiet.py); else None, having
    written nothing and said nothing, so that a full run starts afresh.

    Cron's every minute: the console entry (entry.py) tries this before it
    imports the command line. The lock is not waited for (held by another
    run: None, and the full run waits), and broken state files are left to
    the full run, which sets them aside. Once the run is known quiet, it goes
    on as run_update's own quiet run: warnings, the run's record, the metrics.
    `when_quiet` is called then, before anything is said (the caller opens
    log_file there: a run that is not quiet leaves that to the full run).
    """
    return _run(config, now, False, None, None, False, None, quiet_only=True, when_quiet=when_quiet)


def _run(
    config: Config,
    now: datetime,
    count_lines: bool,
    under_lock: Callable[[LocalState], None] | None,
    installed_clock: Callable[[], datetime] | None,
    ends_follow: bool,
    follower: FollowerRecord | None,
    quiet_only: bool,
    when_quiet: Callable[[], None] | None = None,
) -> UpdateResult | None:
    started = time.monotonic()
    with contextlib.ExitStack() as held:
        quiet = None
        if quiet_only:
            try:
                # What it says is said only once the run is known quiet (else the full run says it again).
                with keeping() as say_kept:
                    state, store = held.enter_context(opened(config, repair=False))
                    held.enter_context(state.locked(0))
                    saved = state.load_checkpoints(repair=False)
                    quiet = _quiet_result(config, state, saved, store, now, Signatures(config))
            except Exception:
                return None  # whatever it is, the full run meets it again and says it
            if quiet is None:
                return None
            if when_quiet is not None:
                when_quiet()
            say_kept()
        else:
            state, store = held.enter_context(opened(config))
            held.enter_context(state.locked(config.lock_wait.total_seconds()))
        if under_lock is not None:
            under_lock(state)
        record = RunRecord.from_json(state.load_last_run())
        warnings, record = missing_logs(record, _logs_present(config), now)
        for warning in warnings:
            log.warning("%s", warning)
        try:
            result = (
                quiet
                if quiet is not None
                else _update_locked(config, state, store, now, count_lines, installed_clock or (lambda: now))
            )
        except ExactcronError as error:
            if ends_follow and isinstance(error, DeadlineReachedError):
                # Cut short by the follow's end, not failed: the last step's record stands.
                raise
            if isinstance(error, StoreUnavailableError):
                # Relay never outlives its lease: what was last read, less what expired since.
                from exactcron.commands.failclosed import fail_closed

                fail_closed(config.maps, state, lambda: store.last_known(now))
            record = record.failed(now, str(error))
            _record_failure(state, record)
            _write_metrics(config, state, record, started, {})
            raise
        except Exception as error:
            # A bug, whatever it is: relay still ends with its leases, and `status` says why.
            _fail_closed_after_internal_error(config, state, store, now)
            record = record.failed(now, f"internal error: {type(error).__name__}: {error}")
            _record_failure(state, record)
            with contextlib.suppress(Exception):
                _write_metrics(config, state, record, started, {})
            raise
        logins = {str(report.path): report.logins for report in result.sources}
        unreadable = {str(report.path): report.unreadable for report in result.sources}
        refused: dict[str, int] = {}
        for report in result.sources:
            for reason, count in report.refused.items():
                refused[reason] = refused.get(reason, 0) + count
        record = record.succeeded(
            now,
            result.leases,
            logins,
            unreadable,
            refused,
            result.grant_delays,
            follower,
            len(result.granted),
        )
        state.save_last_run(record.to_json())
        _write_metrics(config, state, record, started, result.unread)
        return result


def _fail_closed_after_internal_error(
    config: Config, state: LocalState, store: LeaseStore, now: datetime
) -> None:
    """The maps pruned to the leases stored and still in force, after a run that broke.

    The stored leases are read again: the run's own may hold logins merged
    but never saved, which `show` would not list. When they cannot be read,
    those the store last knew, less the expired; failing that, none.
    """

    def stored() -> list[Lease]:
        with opened(config, repair=False) as (_, fresh):
            return fresh.snapshot(now).leases

    from exactcron.commands.failclosed import fail_closed

    fail_closed(config.maps, state, stored, lambda: store.last_known(now))


def _logs_present(config: Config) -> dict[str, bool]:
    """Whether each source has something to read (a log file that exists)."""
    return {str(source.path): open_source(source).present() for source in config.sources}


def _write_metrics(
    config: Config, state: LocalState, record: RunRecord, started: float, unread: dict[str, int | None]
) -> None:
    """The metrics file, from the run's own figures; a source the run has no
    figure for (a failed run, a source it could not read) is measured here."""
    if config.metrics_file is None:
        return
    from exactcron.outputs import metrics

    unmeasured = [source for source in config.sources if str(source.path) not in unread]
    if unmeasured:
        from exactcron.commands.status import source_statuses

        saved = state.load_checkpoints(repair=False)
        unread = {
            **unread,
            **{str(each.path): each.unread_bytes for each in source_statuses(unmeasured, saved)},
        }
    sources = [str(source.path) for source in config.sources]
    text = metrics.render(record, unread, sources, time.monotonic() - started)
    try:
        metrics.write(config.metrics_file, text)
    except ExactcronError as error:
        # Monitoring that cannot be written must not stop relay control.
        log.warning("%s", error)


def _update_locked(
    config: Config,
    state: LocalState,
    store: LeaseStore,
    now: datetime,
    count_lines: bool,
    installed_clock: Callable[[], datetime],
) -> UpdateResult:
    # Imported here, as what follows: a quiet run reads nothing and grants nothing.
    from exactcron import faults
    from exactcron.deadline import Deadline
    from exactcron.outputs import audit
    from exactcron.sources.trust import ForgeableLogError

    # Started once the lock is held: waiting for it does not count.
    deadline = Deadline(config.run_deadline)
    # Taken once: what the quiet check compares is what a full run records.
    signatures = Signatures(config)
    saved = state.load_checkpoints()
    quiet = _quiet_result(config, state, saved, store, now, signatures)
    if quiet is not None:
        return quiet
    result = UpdateResult()
    # Imported here: a quiet run installs nothing.
    from exactcron.commands.failclosed import begin_leases, install_maps

    begin_leases(config, state, store, now)
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
    before = known_leases(store)
    checkpoints = dict(saved)
    refused: dict[str, dict[str, Any]] = {}
    logs: dict[str, Any] = {}
    # Whatever fails, the run goes on: the other sources are read, and every
    # map that can be written drops the expired leases; the first error is
    # raised at the end.
    errors: list[ExactcronError] = []
    deadline_noted = False
    # Per address granted, its latest login's stamp to the microsecond (the grant delays).
    granted_stamps: dict[str, datetime] = {}
    for source in config.sources:
        key = str(source.path)
        # Taken before reading: whatever is written from now on makes the files differ.
        logs[key] = signatures.source(source)
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
                measure_unread=config.metrics_file is not None,
                granted_stamps=granted_stamps,
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
        if report.measured:
            result.unread[key] = report.unread_bytes
        untrusted[key] = read.untrusted
        if read.checkpoint is not None:
            checkpoints[key] = read.checkpoint.to_json()
            if report.pairings is not None:
                from exactcron.rules.pairing import PAIRINGS_KEY

                # In the checkpoint's own document: saved with it, or not at all.
                checkpoints[key][PAIRINGS_KEY] = report.pairings
        if report.stopped:
            errors.append(
                _deadline_error(deadline, f"after reading {report.bytes_read} bytes of {source.path}")
            )
            deadline_noted = True
    trust = {key: marks.to_json() for key, marks in untrusted.items() if marks}
    if trust != trust_recorded:
        # Before anything else is saved: a refusal recorded late could be lost.
        collect(errors, lambda: state.save_trust(trust))
    checkpoints = _with_untrusted(checkpoints, untrusted)
    # Read: the memory of the parsed addresses is better spent on the rest.
    normalize_address.cache_clear()
    # An address granted by two sources, or by two batches of one, once.
    result.granted = list(dict.fromkeys(result.granted))
    held = any(source.hold_while_connected for source in config.sources)
    if held:
        from exactcron.commands.held import hold_sessions

        sessions_read = {str(report.path): (report.sessions, report.stopped) for report in result.sources}
        checkpoints = hold_sessions(config, store, now, sessions_read, saved, checkpoints, errors)
    result.expired = store.prune(now, config.timeout, config.ignore)
    faults.point("update:merged")
    leases_saved = collect(errors, store.save)
    snapshot = store.snapshot(now) if leases_saved else None
    active = snapshot.leases if snapshot is not None else store.last_known(now)
    if audit.enabled() and snapshot is not None:
        _audit_update(result, before, active, now)
    result.maps_written = install_maps(config.maps, state, [lease.address for lease in active], errors)
    if result.granted:
        result.grant_delays = _grant_delays(result.granted, active, granted_stamps, installed_clock())
    result.leases = len(active)
    result.next_expiry = min((lease.expires.timestamp() for lease in active), default=None)
    faults.point("update:maps-written")
    if snapshot is not None:
        # Without an error, what the run depended on, so that the next can be quiet.
        settled = (
            settled_record(config, signatures, active, snapshot.version, logs, result.unread)
            if not errors
            else None
        )
        if settled is not None and held and _holds_any(checkpoints):
            # A held session's lease is extended at every run: none may be skipped as quiet.
            settled["held"] = True
        if checkpoints != saved or settled != state.settled or errors:
            collect(errors, lambda: state.save_checkpoints(checkpoints, settled))
        if rebuild and not errors:
            collect(errors, state.rebuild_done)
    elif refused:
        # The leases were not saved, so no checkpoint moves; but a refusal is kept.
        collect(
            errors, lambda: state.save_checkpoints(_with_untrusted({**recorded, **refused}, untrusted), None)
        )
    if errors:
        raise reported(errors)
    return result


def _quiet_result(
    config: Config,
    state: LocalState,
    saved: dict[str, dict[str, Any]],
    store: LeaseStore,
    now: datetime,
    signatures: Signatures,
) -> UpdateResult | None:
    """The result of a run that has nothing to do (quiet.py), or None."""
    if state.rebuild_pending():
        return None
    quiet = quiet_leases(config, state.settled, saved, store, now, signatures)
    if quiet is None:
        return None
    # Nothing changed since the last full run: the bytes it left unread are still unread.
    unread = _recorded_unread(state.settled) if config.metrics_file is not None else {}
    expires = state.settled.get("expires") if state.settled else None
    return UpdateResult(
        sources=[SourceReport(source.path) for source in config.sources],
        leases=quiet,
        unread=unread,
        next_expiry=float(expires) if isinstance(expires, int) else None,
    )


def _holds_any(checkpoints: dict[str, dict[str, Any]]) -> bool:
    from exactcron.sessions import SESSIONS_KEY

    return any(document.get(SESSIONS_KEY) for document in checkpoints.values())


def _grant_delays(
    granted: Sequence[str], active: Sequence[Lease], stamps: dict[str, datetime], installed: datetime
) -> list[float]:
    """Seconds from each granted lease's login stamp (to the microsecond, as
    the line gave it; the lease keeps only its second) to `installed`; a stamp
    ahead of the clock (believed up to a minute ahead) counts as no delay."""
    wanted = set(granted)
    return [
        max(0.0, (installed - stamps.get(lease.address, lease.last_login)).total_seconds())
        for lease in active
        if lease.address in wanted
    ]


def _keep_stamps(stamps: dict[str, datetime], merged: Sequence[Login], changed: Sequence[str]) -> None:
    """Into `stamps`, per address in `changed`, the latest stamp of its logins in
    `merged`: one entry per address granted, whatever the number of logins."""
    wanted = set(changed)
    for login in merged:
        if login.address in wanted:
            stamp = login.time
            if login.address not in stamps or stamps[login.address] < stamp:
                stamps[login.address] = stamp


def _recorded_unread(settled: dict[str, Any] | None) -> dict[str, int | None]:
    """The bytes the last full run left unread, per source, as its record holds them."""
    recorded = settled.get("unread") if settled else None
    if not isinstance(recorded, dict):
        return {}
    return {
        key: value
        for key, value in recorded.items()
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    }


def _deadline_error(deadline: Deadline, where: str) -> DeadlineReachedError:
    # What was read is merged, saved and rendered before this is raised.
    return DeadlineReachedError(f"{deadline.describe()} reached {where}; the next run goes on from there")


def _audit_update(result: UpdateResult, before: dict[str, Lease], active: list[Lease], now: datetime) -> None:
    from exactcron.outputs import audit

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
    measure_unread: bool = False,
    granted_stamps: dict[str, datetime] | None = None,
) -> tuple[SourceReport, Source]:
    """What `source` holds since its checkpoint, merged into `store`; the source
    as read (its new checkpoint, what is known of its trust)."""
    from exactcron.leases import LatestLogins, believed_login
    from exactcron.outputs import audit
    from exactcron.timestamps import TimestampParser, format_instant

    timestamps = TimestampParser(now, source.zone)
    # Logins older than this grant nothing: a file never seen is read from here on;
    # `[guard]` looks back over its window too (a rebuild reaches its verdicts again).
    guarded = config.guard.enabled
    since = now - max(config.timeout, config.guard.window) if guarded else now - config.timeout
    pairing_state = None
    if saved and any(rule.two_line is not None for rule in source.rules):
        from exactcron.rules.pairing import PAIRINGS_KEY

        pairing_state = saved.get(PAIRINGS_KEY)
    report = SourceReport(source.path)
    # Imported here: a quiet run parses no line.
    parser: LineParser
    if source.hold_while_connected:
        from exactcron.commands.held import session_parser

        parser, report.sessions = session_parser(
            source, saved, timestamps, now, config.timeout, count_lines, pairing_state
        )
    else:
        from exactcron.rules.parser import LineParser

        parser = LineParser(
            source.rules, timestamps, source.hosts, count_lines=count_lines, pairing_state=pairing_state
        )
    reader = open_source(source, saved, since, timestamps.stamp, untrusted)
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
        merged = list(ordered) if guarded else pending.logins()
        changed = store.merge(merged, now, config.timeout, config.ignore)
        if pending.spared or guarded:
            changed = list(dict.fromkeys(changed))  # an address merged twice, once
        granted.extend(changed)
        if changed and granted_stamps is not None:
            _keep_stamps(granted_stamps, merged, changed)
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
    if parser.pairings is not None:
        report.pairings = parser.pairings.to_json(now)
    report.bytes_read = reader.bytes_read
    report.stopped = reader.stopped
    report.unreadable = parser.too_long + parser.unreadable + reader.unreadable
    if measure_unread:
        report.unread_bytes = reader.unread_bytes()
        report.measured = True
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
    from exactcron.rules.parser import MAX_LINE_BYTES

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
        marked = replace(checkpoint, refused=marks.refused, trusted_from=marks.trusted_from).to_json()
        if document is not None and "format" in document:
            # What a source keeps beside its checkpoint (a two-line rule's open sessions) stays.
            owned = {*marked, "refused", "trusted_from"}
            marked.update((name, value) for name, value in document.items() if name not in owned)
        result[key] = marked
    return result


def _record_failure(state: LocalState, record: RunRecord) -> None:
    # When the state directory is what failed, the error itself is still reported.
    with contextlib.suppress(ExactcronError):
        state.save_last_run(record.to_json())
