"""What a command says, without click: the one line of an error and its exit
code, the run's summary, and the loggers of stderr and `log_file`.

cli.py prints through these; so does entry.py, cron's quiet `update`, which
never imports click unless it has something to print (-v, an error): then
through click.echo, as every other command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn, TypeVar

from exactcron.errors import ExactcronError
from exactcron.logs import log, logger, used, when_used
from exactcron.timestamps import utc_stamp

if TYPE_CHECKING:
    from pathlib import Path

    from exactcron.commands.update import UpdateResult

# outputs/audit.py's logger, named here so that setting up the logs does not import the audit trail.
AUDIT_LOGGER = "exactcron.audit"
# logging's levels, named without importing it (a quiet run logs nothing).
INFO, ERROR = 20, 40
# log_file's descriptor and --now, once it is open: only then does to_log_file write.
_log_file: tuple[int, datetime | None] | None = None
_LEVEL_NAMES = {INFO: "INFO", ERROR: "ERROR"}

T = TypeVar("T")


def echo(text: str, err: bool = False) -> None:
    import click

    click.echo(text, err=err)


def guarded(verbose: bool, action: Callable[[], T]) -> T:
    """Run `action`; turn an exactcron error into one line and its exit code."""
    try:
        return action()
    except ExactcronError as error:
        fail(error, verbose)
    except Exception as error:  # an unforeseen failure still gets one line
        if verbose:
            raise
        echo(
            f"exactcron: internal error: {type(error).__name__}: {error} (run with -v for details)", err=True
        )
        sys.exit(70)


def fail(error: ExactcronError, verbose: bool) -> NoReturn:
    if verbose:
        import traceback  # only for -v, on an error

        traceback.print_exception(error)
    to_log_file(ERROR, str(error))
    echo(f"exactcron: {safe(str(error))}", err=True)
    sys.exit(error.exit_code)


def report_update(verbose: bool, result: UpdateResult) -> None:
    lines = sum(source.lines or 0 for source in result.sources)
    summary = (
        f"read {plural(lines, 'line')}, "
        f"{plural(sum(source.logins for source in result.sources), 'login')}; "
        f"granted {len(result.granted)}, expired {len(result.expired)}, "
        f"{plural(result.leases, 'lease')}, {plural(len(result.maps_written), 'map')} written"
    )
    to_log_file(INFO, summary)
    if verbose:
        for source in result.sources:
            echo(f"{source.path}: {plural(source.lines or 0, 'new line')}, {plural(source.logins, 'login')}")
        for address in sorted(result.granted):
            echo(f"granted {address}")
        for address in result.expired:
            echo(f"expired {address}")
        for path in result.maps_written:
            echo(safe(f"wrote {path}"))
        echo(plural(result.leases, "lease"))


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def safe(text: str) -> str:
    """Text for a terminal: control characters (escape sequences, bidi overrides) escaped."""
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text
    )


def log_to_stderr(verbose: bool) -> None:
    """Warnings (with -v, everything) to stderr, once anything is logged (logs.py)."""
    global _log_file
    _log_file = None
    when_used(lambda: _stderr_handler(verbose))


def _stderr_handler(verbose: bool) -> None:
    import logging

    class OneLine(logging.Formatter):
        """A warning names paths and quotes log bytes: one line, control characters escaped."""

        def format(self, record: logging.LogRecord) -> str:
            return safe(super().format(record))

    exactcron = logging.getLogger("exactcron")
    exactcron.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.setFormatter(OneLine("exactcron: %(levelname)s: %(message)s"))
    exactcron.handlers = [handler]
    exactcron.propagate = False
    # The audit trail goes to log_file only, once the configuration names one.
    logging.getLogger(AUDIT_LOGGER).handlers = []


def log_to_file(path: Path, now: datetime | None) -> None:
    """Log to `path` through the one descriptor opened here, never reopened by name."""
    from exactcron.atomic import open_for_append

    global _log_file
    try:
        # 0640, as logrotate.d/exactcron creates it: the audit trail names users and addresses.
        descriptor = open_for_append(path, 0o640)
    except OSError as error:
        log.warning("cannot open log_file %s: %s; not logging to it", path, error.strerror)
        return
    _log_file = descriptor, now
    when_used(lambda: _file_handler(descriptor, now))


# A line of log_file; to_log_file writes the same without logging.
_FILE_LINE = "%(asctime)s exactcron[%(process)d]: %(levelname)s: %(message)s"


def _file_handler(descriptor: int, now: datetime | None) -> None:
    import logging

    class FileFormat(logging.Formatter):
        """Every line stamped in ISO 8601 UTC (the time of --now when given);
        audit lines carry their own stamp."""

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
            return utc_stamp(now or datetime.fromtimestamp(record.created, UTC))

        def format(self, record: logging.LogRecord) -> str:
            if record.name == AUDIT_LOGGER:
                return record.getMessage()
            return super().format(record)

    handler: logging.Handler = logging.StreamHandler(os.fdopen(descriptor, "a", encoding="utf-8"))
    handler.setLevel(logging.INFO)
    handler.setFormatter(FileFormat(_FILE_LINE))
    handler.set_name("file")
    logging.getLogger("exactcron").addHandler(handler)
    logging.getLogger(AUDIT_LOGGER).handlers = [handler]


def to_log_file(level: int, message: str) -> None:
    """Record in the log file only: stderr got its own line already."""
    if _log_file is None:
        return  # no log file: nothing to import logging for
    if not used():
        # Nothing else was logged (a quiet run's summary): the line the file's handler
        # would write, written without loading logging for it.
        descriptor, now = _log_file
        line = _FILE_LINE % {
            "asctime": utc_stamp(now or datetime.now(UTC)),
            "process": os.getpid(),
            "levelname": _LEVEL_NAMES.get(level, f"Level {level}"),
            "message": message,
        }
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            while data:
                data = data[os.write(descriptor, data) :]
            return
        except OSError:
            pass  # logging's handler says it (on stderr) and the run goes on, as ever
    exactcron = logger()
    for handler in exactcron.handlers:
        if handler.get_name() == "file":
            handler.handle(exactcron.makeRecord(exactcron.name, level, __file__, 0, "%s", (message,), None))
