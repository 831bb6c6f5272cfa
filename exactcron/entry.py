"""The console entry (`exactcron`, `python3 -m exactcron`): cron's quiet
`update` without the command line's cost.

Cron starts `exactcron update` every minute, and most runs find nothing new
(commands/quiet.py). Such a run needs the configuration, the state and the
lock, not click, the rules' patterns or the map builders: importing those
cost several times the run itself. So the plain forms cron uses (the global
`--config PATH`, `--now TIME` and `-v`, then `update` alone) are recognised
here, by hand, and the run is tried as a quiet one (update.run_if_quiet),
with the same Config and the same run as the full command. Everything else
(any other command or option, a `--follow`, a configuration that does not
load, a run that is not quiet, a user who is not the state's owner) goes to
the click command line (cli.py) untouched, which does all as before.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

# The options of the command group that take a value, and the flag, as cron writes them.
_VALUED = ("--config", "--now")
_VERBOSE = ("-v", "--verbose")


class PlainUpdate:
    """`exactcron [--config PATH] [--now TIME] [-v] update`, as given."""

    def __init__(self) -> None:
        self.config: str | None = None
        self.now: str | None = None
        self.verbose = False


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
        if argument == "update" and position == len(arguments) - 1:
            return plain
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


def quiet_update(request: PlainUpdate) -> bool:
    """Run `update` if it is quiet, as the full command would; False when it is
    not (nothing was written or said: the full command runs)."""
    from exactcron import console
    from exactcron.commands.privilege import state_owner
    from exactcron.commands.update import run_if_quiet
    from exactcron.config import config_path, load_config
    from exactcron.timestamps import parse_instant

    try:
        now = parse_instant(request.now) if request.now is not None else None
        config = load_config(config_path(request.config))
        # A switch from root to the state's owner, `mynetworks` (postconf) and a
        # refusal are the full command's to make and say.
        if config.ignore_mynetworks or state_owner(config.state_dir)[0] != os.geteuid():
            return False
    except Exception:
        return False
    console.log_to_stderr(request.verbose)

    def log_to_file() -> None:
        if config.log_file is not None:
            console.log_to_file(config.log_file, now)

    result = console.guarded(request.verbose, lambda: run_if_quiet(config, now or _utc_now(), log_to_file))
    if result is None:
        return False
    console.report_update(request.verbose, result)
    return True


def _utc_now() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def main() -> None:
    request = plain_update(sys.argv[1:])
    # Shell completion (click's, through the environment) is click's alone.
    if request is not None and "_EXACTCRON_COMPLETE" not in os.environ:
        try:
            if quiet_update(request):
                return
        except (EOFError, KeyboardInterrupt):
            import click

            # As click's own main says an interrupted command.
            click.echo(file=sys.stderr)
            click.echo("Aborted!", file=sys.stderr)
            sys.exit(1)
    from exactcron.cli import main as command_line

    command_line()
