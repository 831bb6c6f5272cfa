"""The console entry (`exactcron`, `python3 -m exactcron`): cron's quiet
`update` without the command line's cost.

Cron starts `exactcron update` every minute, and most runs find nothing new
(commands/quiet.py). Such a run needs the configuration, the state and the
lock, not click, the rules' patterns or the map builders: importing those
cost several times the run itself. So the plain forms cron uses (the global
`--config PATH`, `--now TIME` and `-v`, then `update` alone) are recognised
here, by hand, and the run is tried as a quiet one (update.run_if_quiet),
with the same Config and the same run as the full command. `update
--follow` (or `--follow-for DURATION`), which cron runs by default, runs
here too, as the command line runs it (commands/follow.follow_from): its
steps need no click. Everything else (any other command or option, a
configuration or --now that does not load, a run that is not quiet, a user
who is not the state's owner) goes to the click command line (cli.py)
untouched, which does all as before.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exactcron.config import Config

# The options of the command group that take a value, and the flag, as cron writes them.
_VALUED = ("--config", "--now")
_VERBOSE = ("-v", "--verbose")


class PlainUpdate:
    """`exactcron [--config PATH] [--now TIME] [-v] update [--follow | --follow-for DURATION]`, as given."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.now: str | None = None
        self.verbose = False
        self.follow = False
        self.follow_for: str | None = None


def plain_update(arguments: list[str]) -> PlainUpdate | None:
    """The global options of a plain `update`, or None for anything else.

    Only what is surely that: each option once, values that do not look like
    options, `update` last. Whatever else (`update -h`, `--config=`, an
    option the group does not have) is left to click, which says what it is.
    """
    plain = PlainUpdate()
    seen: set[str] = set()
    position = 0
    while position < len(arguments):
        argument = arguments[position]
        name, equals, value = argument.partition("=")
        if argument == "update":
            return _follow_options(plain, arguments[position + 1 :])
        if argument in _VERBOSE and "verbose" not in seen:
            seen.add("verbose")
            plain.verbose = True
        elif name in _VALUED and name not in seen:
            seen.add(name)
            if not equals:
                position += 1
                value = arguments[position] if position < len(arguments) else ""
            if not value or value.startswith("-"):
                return None
            setattr(plain, name[2:], value)
        else:
            return None
        position += 1
    return None


def _follow_options(plain: PlainUpdate, rest: list[str]) -> PlainUpdate | None:
    """`update` alone, with `--follow`, or with one `--follow-for DURATION`."""
    if not rest:
        return plain
    if rest == ["--follow"]:
        plain.follow = True
        return plain
    name, equals, value = rest[0].partition("=")
    if name != "--follow-for" or len(rest) != (1 if equals else 2):
        return None
    value = value if equals else rest[1]
    if not value or value.startswith("-"):
        return None
    plain.follow_for = value
    return plain


def quiet_update(request: PlainUpdate) -> bool:
    """Run `update` if it is quiet, as the full command would; False when it is
    not (nothing was written or said: the full command runs)."""
    from exactcron import console
    from exactcron.commands.update import run_if_quiet

    loaded = _loaded(request)
    if loaded is None:
        return False
    config, now = loaded
    console.log_to_stderr(request.verbose)

    def log_to_file() -> None:
        if config.log_file is not None:
            console.log_to_file(config.log_file, now)

    result = console.guarded(request.verbose, lambda: run_if_quiet(config, now or _utc_now(), log_to_file))
    if result is None:
        return False
    console.report_update(request.verbose, result)
    return True


def follow(request: PlainUpdate) -> bool:
    """Run `update --follow` (or `--follow-for`) as the full command would, without
    click; False, having done nothing, when the full command must (see _loaded)."""
    import time

    from exactcron import console
    from exactcron.commands.follow import follow_from, follow_until_minute_end
    from exactcron.config import parse_duration

    if request.follow_for is None:
        duration = follow_until_minute_end(time.time())
    else:
        try:
            duration = parse_duration(request.follow_for).total_seconds()
        except ValueError:
            return False  # the command line says what is wrong with it
    loaded = _loaded(request)
    if loaded is None:
        return False
    config, now = loaded
    console.log_to_stderr(request.verbose)
    if config.log_file is not None:
        console.log_to_file(config.log_file, now)
    # Lines are counted only for whoever reads the count: -v, or the log file.
    count_lines = request.verbose or config.log_file is not None
    console.guarded(
        request.verbose,
        lambda: follow_from(
            config, now, duration, count_lines, lambda result: console.report_update(request.verbose, result)
        ),
    )
    return True


def _loaded(request: PlainUpdate) -> tuple[Config, datetime | None] | None:
    """The configuration and --now, or None when the full command must run:
    a --now or a configuration it must say is wrong, a switch from root to the
    state's owner, a refusal of another user, `mynetworks` (postconf)."""
    from exactcron.commands.privilege import state_owner
    from exactcron.config import config_path, load_config
    from exactcron.timestamps import parse_instant

    try:
        now = parse_instant(request.now) if request.now is not None else None
        config = load_config(config_path(request.config))
        if config.ignore_mynetworks or state_owner(config.state_dir)[0] != os.geteuid():
            return None
    except Exception:
        return None
    return config, now


def _utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def main() -> None:
    request = plain_update(sys.argv[1:])
    # Shell completion (click's, through the environment) is click's alone.
    if request is not None and "_EXACTCRON_COMPLETE" not in os.environ:
        try:
            if follow(request) if request.follow or request.follow_for is not None else quiet_update(request):
                return
        except (EOFError, KeyboardInterrupt):
            import click

            # As click's own main says an interrupted command.
            click.echo(file=sys.stderr)
            click.echo("Aborted!", file=sys.stderr)
            sys.exit(1)
    from exactcron.cli import main as command_line

    command_line()
