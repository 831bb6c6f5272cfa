"""The command line: parse options, call the library, print, map errors to exit codes.

The only module that prints.

Over 400 lines: one click declaration per command with its options and help
text (what `--help` prints); each command's sequence lives in commands/.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from exactcron import __version__
from exactcron.addresses import is_ignored, is_special, normalize_address
from exactcron.config import (
    DEFAULT_IGNORE,
    DEFAULT_STATE_DIR,
    DEFAULT_TIMEOUT,
    Config,
    config_path,
    load_config,
    parse_duration,
)
from exactcron.console import (
    fail,
    guarded,
    log_to_file,
    log_to_stderr,
    plural,
    report_update,
    safe,
    to_log_file,
)
from exactcron.errors import ConfigError, ExactcronError, LogUnreadableError
from exactcron.model import Lease
from exactcron.outputs.audit import who_ran
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.timestamps import format_instant, parse_instant

if TYPE_CHECKING:
    from exactcron.commands.check import UnmatchedLine
    from exactcron.outputs.health import FollowerRecord, RunRecord

log = logging.getLogger("exactcron")


class Context:
    def __init__(self, config_option: str | None, now: datetime | None, verbose: bool) -> None:
        self.config_file = config_path(config_option)
        self.given_now = now
        self.verbose = verbose
        self._config: Config | None = None

    @property
    def now(self) -> datetime:
        return self.given_now or datetime.now(UTC)

    def config(self) -> Config:
        """The configuration of any command; started as root, run as the owner of state_dir from here on.

        The switch comes before any file the owner or a group member can
        change is opened (log_file first): exactcron never writes as root.
        Run by any other user, a command that only reads runs as that user.
        """
        if self._config is None:
            config = load_config(self.config_file)
            if os.geteuid() == 0:
                from exactcron.commands.privilege import become_state_owner

                become_state_owner(config.state_dir)
            self._config = config
            if config.log_file is not None:
                log_to_file(config.log_file, self.given_now)
        return self._config

    def _with_postfix_networks(self, config: Config) -> Config:
        """`ignore`'s `mynetworks`, read now; when postconf fails, expired leases
        still leave the maps before the error is raised."""
        from exactcron.outputs.mynetworks import with_postfix_networks

        try:
            return with_postfix_networks(config)
        except ExactcronError:
            from exactcron.commands.failclosed import salvage_maps

            with contextlib.suppress(ExactcronError, OSError):
                salvage_maps(config.state_dir, self.now)
            raise

    def writer_config(self) -> Config:
        """The configuration of a command that writes state, run as the owner of state_dir.

        The switch comes before anything is written, exactcron's own log included.
        A configuration that cannot be loaded still lets expired leases leave
        the maps the last run installed.
        """
        if self._config is not None:
            return self._config
        from exactcron.commands.privilege import become_state_owner

        try:
            config = load_config(self.config_file)
        except ConfigError:
            from exactcron.commands.failclosed import salvage_maps
            from exactcron.statedir import state_dir_of

            # Unreadable, missing or wrong: the last recorded maps still lose what expired.
            state_dir = state_dir_of(self.config_file)
            with contextlib.suppress(ExactcronError, OSError, ValueError):
                become_state_owner(state_dir)
                salvage_maps(state_dir, self.now)
            raise
        become_state_owner(config.state_dir)
        if config.ignore_mynetworks:
            config = self._with_postfix_networks(config)
        self._config = config
        if config.log_file is not None:
            log_to_file(config.log_file, self.given_now)
        return config


def _parse_now(_: click.Context, __: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_instant(value)
    except ValueError as error:
        raise click.BadParameter(f"{value!r}: {error}") from None


def _parse_address(_: click.Context, __: click.Parameter, values: Any) -> Any:
    def one(text: str) -> str:
        address = normalize_address(text)
        if address is None:
            raise click.BadParameter(f"{text!r} is not an IP address")
        return address

    if isinstance(values, tuple):
        return tuple(one(value) for value in values)
    return one(values)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Configuration file [default: $EXACTCRON_CONFIG, else /etc/exactcron/exactcron.toml].",
)
@click.option(
    "--now",
    metavar="TIME",
    callback=_parse_now,
    help="Evaluate as if the clock said TIME (ISO 8601 with offset), for replays and tests.",
)
@click.option("-v", "--verbose", is_flag=True, help="Say what was done; show tracebacks.")
@click.version_option(__version__, prog_name="exactcron")
@click.pass_context
def main(context: click.Context, config_option: str | None, now: datetime | None, verbose: bool) -> None:
    """POP-before-SMTP relay control from cron.

    Reads the POP/IMAP server's log for successful logins, keeps a lease per
    client address, and writes the MTA's relay map. Run `exactcron update`
    from cron every minute.
    """
    log_to_stderr(verbose)
    context.obj = Context(config_option, now, verbose)


@main.command()
@click.option(
    "--follow",
    is_flag=True,
    help="After the run, keep granting logins until a second before the next minute.",
)
@click.option(
    "--follow-for", "follow_for", metavar="DURATION", help="After the run, keep granting for DURATION."
)
@click.pass_obj
def update(state: Context, follow: bool, follow_for: str | None) -> None:
    """Read new log lines, grant and prune leases, rewrite changed maps.

    The cron job. Silent on success unless -v. With --follow or --follow-for,
    each login is granted within a second of being logged, until the end;
    the lock is held only to write.
    """
    if follow and follow_for is not None:
        raise click.UsageError("--follow and --follow-for exclude each other")
    duration: float | None = None
    if follow_for is not None:
        try:
            duration = parse_duration(follow_for).total_seconds()
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--follow-for") from None
    elif follow:
        from exactcron.commands.follow import follow_until_minute_end

        duration = follow_until_minute_end(time.time())
    config = _guarded(state, state.writer_config)
    # Lines are counted only for whoever reads the count: -v, or the log file.
    count_lines = state.verbose or config.log_file is not None
    # The grant delays are measured on the wall clock; with --now, on the given time.
    installed_clock = None if state.given_now is not None else _wall_clock
    if duration is None:
        from exactcron.commands.update import run_update

        report_update(
            state.verbose,
            _guarded(
                state,
                lambda: run_update(
                    config, state.now, count_lines=count_lines, installed_clock=installed_clock
                ),
            ),
        )
        return
    from exactcron.commands.follow import follow_from

    _guarded(
        state,
        lambda: follow_from(
            config, state.given_now, duration, count_lines, lambda r: report_update(state.verbose, r)
        ),
    )


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object with a key `leases`.")
@click.pass_obj
def show(state: Context, as_json: bool) -> None:
    """List the leases in force: address, user, last login, expiry."""
    from exactcron.commands.status import current_leases

    leases = _guarded(state, lambda: current_leases(state.config(), state.now))
    if as_json:
        click.echo(json.dumps({"leases": [_lease_json(lease) for lease in leases]}, indent=2))
        return
    if not leases:
        click.echo("no leases")
        return
    rows = [("ADDRESS", "USER", "LAST LOGIN", "EXPIRES")]
    rows += [
        (
            lease.address,
            safe(lease.user or "-"),
            format_instant(lease.last_login),
            format_instant(lease.expires),
        )
        for lease in leases
    ]
    _echo_table(rows)


@main.command()
@click.argument("addresses", nargs=-1, callback=_parse_address, metavar="ADDRESS...")
@click.option("--all", "flush_all", is_flag=True, help="Revoke every lease.")
@click.pass_obj
def flush(state: Context, addresses: tuple[str, ...], flush_all: bool) -> None:
    """Revoke leases now and rewrite the maps.

    A login logged before the flush never grants the address again.
    """
    from exactcron.commands.changes import flush as flush_leases

    if flush_all == bool(addresses):
        raise click.UsageError("give one or more addresses, or --all")
    chosen = None if flush_all else list(addresses)
    by = who_ran()
    revoked = _guarded(state, lambda: flush_leases(state.writer_config(), state.now, chosen, by))
    for address in revoked:
        click.echo(f"revoked {address}")
    for address in addresses:
        if address not in revoked:
            click.echo(f"{address} held no lease; logins logged before now will not grant it")


@main.command()
@click.argument("address", callback=_parse_address)
@click.option(
    "--for", "duration", metavar="DURATION", help="How long: 90s, 30m, 2h, 7d [default: the timeout]."
)
@click.pass_obj
def add(state: Context, address: str, duration: str | None) -> None:
    """Grant a lease by hand and rewrite the maps."""
    from exactcron.commands.changes import add as add_lease

    config = _guarded(state, state.writer_config)
    if duration is None:
        length = config.timeout
    else:
        try:
            length = parse_duration(duration)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--for") from None
    if is_ignored(address, config.ignore):
        raise click.BadParameter(f"{address} is in `ignore`; it is never granted", param_hint="ADDRESS")
    if is_special(address):
        raise click.BadParameter(
            f"{address} is unspecified, broadcast, multicast or link-local; it is never granted",
            param_hint="ADDRESS",
        )
    by = who_ran()
    lease = _guarded(state, lambda: add_lease(config, state.now, address, length, by))
    click.echo(f"added {lease.address} until {format_instant(lease.expires)}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def status(state: Context, as_json: bool) -> None:
    """Per source: checkpoint and bytes not yet read; the last run; the lease count.

    Exits 1 when unhealthy: the last update failed, or none succeeded
    within stale_after. The reason is one line on stderr.
    """
    from exactcron.commands.status import status as read_status
    from exactcron.outputs.health import RunRecord, assess

    config = _guarded(state, state.config)
    report = _guarded(state, lambda: read_status(config, state.now))
    record = RunRecord.from_json(report.last_run)
    health = assess(record, state.now, config.stale_after)
    last_run_time = None if record.time is None else format_instant(record.time)
    forgeable = {str(source.path) for source in config.sources if source.forgeable}
    document = {
        "sources": [
            {
                "path": str(source.path),
                "checkpoint": source.checkpoint.to_json() if source.checkpoint else None,
                "unread_bytes": source.unread_bytes,
                # Any local user can write a line of it that counts (a plain syslog-fed file).
                "forgeable": str(source.path) in forgeable,
                # Lines skipped as unreadable since the state began.
                "unreadable_lines": record.unreadable_lines.get(str(source.path), 0),
            }
            for source in report.sources
        ],
        "last_run": None if record.time is None else {"time": last_run_time, "outcome": record.outcome},
        "leases": report.leases,
        "healthy": health.healthy,
        "last_success": None if record.last_success is None else format_instant(record.last_success),
        "last_error": record.last_error,
        "warnings": report.warnings,
        "guard": {
            "enabled": config.guard.enabled,
            "over_limit": [_instants_formatted(entry) for entry in report.over_limit],
            "shared": report.shared,
            "refused_total": dict(record.refused_total),
        },
        "follower": _follower_json(report.follower, report.follower_running),
        "grant_delay": _grant_delay_json(record),
    }
    for warning in report.warnings:
        click.echo(safe(f"warning: {warning}"), err=True)
    if as_json:
        click.echo(json.dumps(document, indent=2))
        _exit_unhealthy(health.reason)
        return
    for source in report.sources:
        click.echo(f"source {safe(str(source.path))}")
        if str(source.path) in forgeable:
            click.echo(f"  trust: {FORGEABLE_WARNING}")
        point = source.checkpoint
        if point is None:
            click.echo("  checkpoint: none (not read yet)")
        else:
            click.echo(f"  checkpoint: {safe(point.describe())}")
        # A journal has no byte count (and before its first entry, no checkpoint either).
        if source.counts_bytes:
            unread = "unknown (log missing)" if source.unread_bytes is None else str(source.unread_bytes)
            click.echo(f"  unread bytes: {unread}")
        click.echo(f"  unreadable lines: {record.unreadable_lines.get(str(source.path), 0)}")
    if record.time is None:
        click.echo("last run: never")
    else:
        click.echo(f"last run: {last_run_time} {safe(str(record.outcome))}")
    if record.last_success is not None and record.outcome != "ok":
        click.echo(f"last success: {format_instant(record.last_success)}")
    click.echo(f"leases: {report.leases}")
    for entry in report.over_limit:
        blocked = entry["blocked_until"]
        click.echo(
            safe(
                f"guard: user {entry['user']} over the limit: {entry['addresses']} addresses,"
                f" {entry['refused']} refused, the last at {format_instant(entry['last_refused'])}"
                + (f"; revoked, refused until {format_instant(blocked)}" if blocked else "")
            )
        )
    for entry in report.shared:
        click.echo(f"guard: shared address {entry['address']}: {entry['users']} users")
    follower = report.follower
    if follower is not None:
        click.echo(
            f"follower: {'running' if report.follower_running else 'not running'}, pid {follower.pid},"
            f" from {format_instant(follower.started)} until {format_instant(follower.until)};"
            f" {plural(follower.steps, 'step')}, {follower.granted} granted"
        )
    delays = _grant_delay_json(record)
    if delays["recent"]:
        click.echo(
            f"grant delay: median {delays['median']:.6f}s, 99th percentile {delays['p99']:.6f}s"
            f" (the latest {plural(delays['recent'], 'grant')})"
        )
    click.echo("healthy" if health.healthy else "unhealthy")
    _exit_unhealthy(health.reason)


def _follower_json(follower: FollowerRecord | None, running: bool) -> dict[str, Any] | None:
    if follower is None:
        return None
    return {"running": running, **follower.to_json()}


def _grant_delay_json(record: RunRecord) -> dict[str, Any]:
    """The grant delays: all counted, and the median and 99th percentile of the latest."""
    from exactcron.outputs.health import nearest_rank

    recent = sorted(record.recent_grant_delays)
    return {
        "count": record.grant_delay_count,
        "recent": len(recent),
        "median": round(nearest_rank(recent, 0.5), 6) if recent else None,
        "p99": round(nearest_rank(recent, 0.99), 6) if recent else None,
    }


def _instants_formatted(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: format_instant(value) if isinstance(value, datetime) else value for key, value in entry.items()
    }


@main.command()
@click.option(
    "--since",
    "since_text",
    default="30d",
    show_default=True,
    metavar="DURATION",
    help="The period: 7d, 30d, 12h.",
)
@click.option(
    "--mta-log",
    "mta_logs",
    multiple=True,
    metavar="PATH",
    help="Postfix's log (its rotated and compressed copies are read too); repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_obj
def report(state: Context, since_text: str, mta_logs: tuple[str, ...], as_json: bool) -> None:
    """Who relies on POP-before-SMTP, so that it can be retired.

    Per user, from log_file's audit trail: the logins that granted relay,
    the distinct addresses, the first and last, the guard's refusals. With
    --mta-log, also the messages each user's leased addresses sent without
    SMTP AUTH while the lease was in force, and whether the user already
    sends with SMTP AUTH. The users still depending on it come first.
    """
    from exactcron.commands.report import close_all, open_mta_logs, run_report

    try:
        since = state.now - parse_duration(since_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    # The logs named here are opened first, with the rights of whoever typed the
    # command (root may read any log); they are decompressed and read after the
    # switch to the owner of state_dir, and nothing is written.
    opened = _guarded(state, lambda: open_mta_logs(mta_logs, since)) if mta_logs else None
    try:
        config = _guarded(state, state.config)
        result = _guarded(state, lambda: run_report(config, state.now, since, opened))
    finally:
        close_all(opened or ())
    if as_json:
        click.echo(json.dumps(_report_json(result, config, mta_logs), indent=2))
        return
    _echo_report(result)


def _report_json(result: Any, config: Config, mta_logs: tuple[str, ...]) -> dict[str, Any]:
    with_mta = result.with_mta

    def user(summary: Any) -> dict[str, Any]:
        return {
            "user": summary.user,
            "logins": summary.logins,
            "addresses": len(summary.addresses),
            "first": None if summary.first is None else format_instant(summary.first),
            "last": None if summary.last is None else format_instant(summary.last),
            "refused": dict(sorted(summary.refused.items())),
            "relayed": summary.relayed if with_mta else None,
            "sasl_from_lease": summary.sasl_from_lease if with_mta else None,
            "sasl_messages": summary.sasl_messages if with_mta else None,
            "smtp_auth": summary.sasl_messages > 0 if with_mta else None,
        }

    return {
        "since": format_instant(result.since),
        "until": format_instant(result.until),
        "log_file": str(config.log_file),
        "mta_logs": list(mta_logs) if with_mta else None,
        "users": [user(summary) for summary in result.users],
        "totals": {
            "users": sum(1 for summary in result.users if summary.user is not None),
            "logins": sum(summary.logins for summary in result.users),
            "refused": sum(sum(summary.refused.values()) for summary in result.users),
            "messages": result.messages if with_mta else None,
            "relayed": result.through_lease if with_mta else None,
            "sasl_from_lease": result.sasl_from_lease if with_mta else None,
            "sasl": result.sasl if with_mta else None,
        },
    }


def _echo_report(result: Any) -> None:
    def stamp(time: datetime | None) -> str:
        return "-" if time is None else time.strftime("%Y-%m-%d %H:%M")

    click.echo(f"POP-before-SMTP from {stamp(result.since)} to {stamp(result.until)} (UTC)")
    if not result.users:
        click.echo("no relay granted, no login refused")
    header: tuple[str, ...] = ("USER", "LOGINS", "ADDRESSES", "FIRST", "LAST", "REFUSED")
    if result.with_mta:
        header += ("RELAYED", "SMTP AUTH", "AUTH FROM LEASE")
    rows: list[tuple[str, ...]] = [header] if result.users else []
    for summary in result.users:
        row: tuple[str, ...] = (
            safe(summary.user if summary.user is not None else "(no user)"),
            str(summary.logins),
            str(len(summary.addresses)),
            stamp(summary.first),
            stamp(summary.last),
            str(sum(summary.refused.values())),
        )
        if result.with_mta:
            auth = f"yes ({summary.sasl_messages})" if summary.sasl_messages else "no"
            row += (str(summary.relayed), "-" if summary.user is None else auth, str(summary.sasl_from_lease))
        rows.append(row)
    if rows:
        _echo_table(rows)
    users = sum(1 for summary in result.users if summary.user is not None)
    if not result.with_mta:
        click.echo(f"{plural(users, 'user')}; with --mta-log PATH, the messages each relayed through a lease")
        return
    depending = sum(1 for summary in result.users if summary.relayed and summary.user is not None)
    click.echo(
        f"{plural(result.messages, 'message')}: {result.through_lease} relayed through a lease, "
        f"{result.sasl} with SMTP AUTH ({result.sasl_from_lease} of them from a leased address); "
        f"{depending} of {plural(users, 'user')} still relay through a lease"
    )


def _exit_unhealthy(reason: str) -> None:
    if reason:
        click.echo(safe(f"exactcron: unhealthy: {reason}"), err=True)
        sys.exit(1)


@main.command()
@click.argument("logfile", required=False, metavar="[LOGFILE|-]")
@click.option(
    "--server",
    "servers",
    multiple=True,
    metavar="NAME",
    help="Use this rule (built-in or [rule.NAME]) instead of the configured ones; repeat or comma-separate.",
)
@click.option(
    "--all", "list_all", is_flag=True, help="List every login, quoted line and address, however big the log."
)
@click.pass_obj
def check(state: Context, logfile: str | None, servers: tuple[str, ...], list_all: bool) -> None:
    """Validate the configuration; with a log, show the logins it would grant.

    Per rule, the lines it matched, and those of them that speak of failure;
    the lines that looked like a login but matched no rule; and why an
    address is not granted. A big log is summed up per rule unless --all.
    Touches no state.
    """
    from exactcron.addresses import parse_network
    from exactcron.commands.check import LISTED, check_log
    from exactcron.config import own_host_names, system_zone
    from exactcron.rules.parser import MAX_LINE_BYTES
    from exactcron.timestamps import TimestampParser

    # The log named here is opened first, with the rights of whoever typed the
    # command (root may read any log: only root sees what is printed); it is
    # decompressed and parsed after the switch to the owner of state_dir, and
    # nothing is ever written, so no planted name can make root write.
    raw_log = _open_raw_log(logfile) if logfile not in (None, "-") else None
    names = tuple(
        dict.fromkeys(name.strip() for value in servers for name in value.split(",") if name.strip())
    )
    # Built-in rules need no configuration; but `--server` overrides the rules
    # only: a configuration, when there is one, still gives the source's
    # `timezone` and `hosts` (and a site rule).
    needs_config = logfile is None or not names or state.config_file.exists()
    config = _guarded(state, state.config) if needs_config else None
    if logfile is None:
        assert config is not None
        _check_permissions(state, config)
        click.echo(f"{safe(str(state.config_file))}: OK ({len(config.sources)} sources)")
        for each in config.sources:
            if each.forgeable:
                click.echo(f"warning: {safe(str(each.path))}: {FORGEABLE_WARNING}")
        return
    source = None
    if config is not None:
        resolved = Path(logfile).resolve() if logfile != "-" else None
        source = next((each for each in config.sources if each.path == resolved), None)
    if names:
        # Built-in rules are compiled only when looked up: no copy of them all.
        site_rules = config.site_rules if config else {}
        unknown = [name for name in names if name not in site_rules and name not in BUILTIN_RULES]
        if unknown:
            raise click.BadParameter(
                f"unknown rule {unknown[0]!r} (expected one of: {', '.join(sorted({*site_rules, *BUILTIN_RULES}))})",
                param_hint="--server",
            )
        rules = tuple(site_rules[name] if name in site_rules else BUILTIN_RULES[name] for name in names)
    elif source is not None:
        rules = source.rules
    else:
        assert config is not None
        rules = tuple(dict.fromkeys(rule for each in config.sources for rule in each.rules))
    chosen = source if source is not None else config.sources[0] if config and config.sources else None
    if config is None:
        zone, timeout, hosts = system_zone(), parse_duration(DEFAULT_TIMEOUT), own_host_names()
        ignore = tuple(parse_network(text) for text in DEFAULT_IGNORE)
    else:
        # A configuration without sources (a host that only renders a shared store): this host's defaults.
        zone, hosts = (chosen.zone, chosen.hosts) if chosen else (system_zone(), own_host_names())
        if config.ignore_mynetworks:
            from exactcron.outputs.mynetworks import with_postfix_networks

            config = _guarded(state, lambda: with_postfix_networks(config))
        timeout, ignore = config.timeout, config.ignore
        if chosen is not None and chosen.forgeable:
            click.echo(f"warning: {safe(str(chosen.path))}: {FORGEABLE_WARNING}")
    with _open_log(logfile, raw_log) as stream:
        listed = None if list_all else LISTED
        report = check_log(stream, rules, TimestampParser(state.now, zone), timeout, ignore, listed, hosts)
    for login in report.logins:
        click.echo(f"{format_instant(login.time)} {login.server} {safe(login.user or '-')} {login.address}")
    left_out = report.login_count - len(report.logins)
    if left_out:
        click.echo(f"and {plural(left_out, 'more login')} (--all lists every one)")
    for name, count in report.matched.items():
        summary = report.summaries[name]
        line = f"rule {name}: {plural(count, 'line')} matched"
        if left_out and count:
            assert summary.first is not None and summary.last is not None
            line += (
                f", {plural(len(summary.addresses), 'address', 'addresses')}, "
                f"{plural(len(summary.users), 'user')}, "
                f"{format_instant(summary.first)} to {format_instant(summary.last)}"
            )
        click.echo(line)
        if summary.failure_lines:
            click.echo(
                f"  warning: {plural(summary.failure_lines, 'line')} of them "
                f"{'speaks' if summary.failure_lines == 1 else 'speak'} of failure; "
                "a rule must match successful logins only"
            )
            _echo_quoted(summary.failure_examples, summary.failure_lines)
    click.echo(
        f"read {plural(report.lines, 'line')}, {plural(report.login_count, 'login')}; "
        f"{plural(report.looked_like_logins, 'line')} looked like a login but matched no rule"
    )
    _echo_quoted(report.examples, report.looked_like_logins)
    if report.too_long:
        click.echo(f"skipped {plural(report.too_long, 'line')} longer than {MAX_LINE_BYTES} bytes")
    if report.unreadable:
        click.echo(
            f"skipped {plural(report.unreadable, 'line')} whose stamp names no time "
            "(or that the parser could not read); they grant nothing"
        )
    if report.too_old:
        click.echo(f"not granted, older than the timeout: {_cut(report.too_old, listed)}")
    if report.ahead:
        click.echo(
            f"not granted, stamped more than a minute ahead of the clock (the writer's clock "
            f"or the source's `timezone` is wrong): {_cut(report.ahead, listed)}"
        )
    if report.ignored:
        click.echo(f"not granted, in ignore: {_cut(report.ignored, listed)}")
    if report.special:
        click.echo(
            f"never granted (unspecified, broadcast, multicast, link-local): {_cut(report.special, listed)}"
        )
    if report.other_hosts:
        click.echo(f"not granted, from a host not in `hosts`: {plural(report.other_hosts, 'login line')}")
    if report.unpaired:
        click.echo(
            "not granted, no connect line of the same process before it (two-line rules): "
            f"{plural(report.unpaired, 'login line')}"
        )
    click.echo("would grant: " + (_cut(report.granted, listed) if report.granted else "nothing"))


def _check_permissions(state: Context, config: Config) -> None:
    """One line per right or tool the running user lacks for `update`; exit with the first one's code."""
    from exactcron.commands.permissions import cron_user, missing, missing_as
    from exactcron.users import user_name

    # Run as root, the rights that matter are those of the cron job's user.
    owner = cron_user(config)
    problems = missing(config) if owner is None else _guarded(state, lambda: missing_as(config, owner))
    if not problems:
        return
    user = user_name(os.geteuid()) if owner is None else owner[0]
    for problem in problems:
        to_log_file(logging.ERROR, f"check: as user {user}: {problem.message}")
        click.echo(safe(f"exactcron: as user {user}: {problem.message}"), err=True)
    sys.exit(problems[0].exit_code)


def _echo_quoted(lines: list[UnmatchedLine], total: int) -> None:
    """Quoted log lines, and how many of `total` were left out."""
    for quoted in lines:
        click.echo(safe(f"  line {quoted.number}: {quoted.text}"))
    if total > len(lines):
        click.echo(f"  and {total - len(lines)} more")


def _cut(addresses: list[str], listed: int | None) -> str:
    """Addresses as one line: the first `listed`, and how many more."""
    if listed is None or len(addresses) <= listed:
        return " ".join(addresses)
    return " ".join(addresses[:listed]) + f" and {len(addresses) - listed} more"


FORGEABLE_WARNING = (
    "a syslog-fed log: any local user can forge its lines (logger -t dovecot ...); "
    "see docs/security.md: use journal, written_by or syslog_senders"
)


def _open_raw_log(logfile: str) -> Any:
    try:
        return open(logfile, "rb")
    except OSError as error:
        fail(LogUnreadableError(f"cannot read {logfile}: {error.strerror}"), verbose=False)


def _open_log(logfile: str, raw: Any) -> Any:
    if logfile == "-":
        return sys.stdin.buffer
    try:
        from exactcron.sources.compressed import open_log

        return open_log(Path(logfile), raw)
    except OSError as error:
        fail(LogUnreadableError(f"cannot read {logfile}: {error.strerror}"), verbose=False)


@main.command()
@click.pass_obj
def render(state: Context) -> None:
    """Rewrite every map from the current leases (after a config change, or a deleted map)."""
    from exactcron.commands.changes import render as render_maps

    for path in _guarded(state, lambda: render_maps(state.writer_config(), state.now)):
        click.echo(safe(f"wrote {path}"))


@main.command("import-exact")
@click.argument("exact_conf", metavar="EXACT_CONF", type=click.Path(dir_okay=False))
@click.argument("servers_conf", metavar="[SERVERS_CONF]", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--state-dir",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    metavar="DIR",
    help="The state_dir of the configuration printed.",
)
def import_exact(exact_conf: str, servers_conf: str | None, state_dir: str) -> None:
    """Print an exactcron.toml equivalent to Exact's exact.conf (and exact-servers.conf).

    Without SERVERS_CONF, the file exact.conf names in `serverdefs` is read
    when it exists. What has no equivalent becomes a comment and a warning.
    """
    from exactcron.tools.exact_import import convert, serverdefs_path

    def read(path: str) -> str:
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            fail(ConfigError(f"{path}: cannot read: {error.strerror}"), verbose=False)

    exact_text = read(exact_conf)
    if servers_conf is None:
        named = serverdefs_path(exact_text)
        if named is not None and Path(named).is_file():
            servers_conf = named
    servers_text = read(servers_conf) if servers_conf is not None else None
    try:
        conversion = convert(exact_text, exact_conf, servers_text, servers_conf, state_dir)
    except ConfigError as error:
        fail(error, verbose=False)
    for warning in conversion.warnings:
        click.echo(safe(f"exactcron: warning: {warning}"), err=True)
    click.echo(conversion.toml, nl=False)


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "ip": lease.address,
        "user": lease.user,
        "last_login": format_instant(lease.last_login),
        "expires": format_instant(lease.expires),
        "server": lease.server,
    }


def _echo_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _guarded(state: Context, action: Any) -> Any:
    """Run `action`; turn an exactcron error into one line and its exit code."""
    return guarded(state.verbose, action)
