"""`exactcron report`: who relies on POP-before-SMTP, from the audit trail and the MTA's log.

The sequence: the MTA logs named on the command line are opened first, with
the rights of whoever typed the command (cli.py does it before the switch
to the owner of state_dir, so root can report on a log the service account
cannot read); the audit trail (`log_file` and its rotated copies) is opened
after the switch; then both are read as streams, oldest copy first, and
joined by outputs/relay_report.py. Nothing is written.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from exactcron.commands.check import bounded_lines
from exactcron.config import Config, system_zone
from exactcron.errors import ConfigError
from exactcron.logs import log
from exactcron.outputs.relay_report import (
    AuditEvent,
    Message,
    RelayReport,
    build_report,
    parse_audit_line,
    parse_smtpd_line,
)
from exactcron.rules.parser import MAX_LINE_BYTES
from exactcron.sources.compressed import errors as decompress_errors
from exactcron.sources.history import HistoryFile, open_history
from exactcron.timestamps import TimestampParser

# The audit trail is read from this long before the period: a lease granted
# then may still be in force when the period begins.
TRAIL_LEAD = timedelta(days=1)


@dataclass
class MtaLog:
    """One `--mta-log` PATH: its history, opened, oldest copy first."""

    path: Path
    files: list[HistoryFile]


def open_mta_logs(paths: Sequence[str], since: datetime) -> list[MtaLog]:
    """Open every `--mta-log` and its rotated copies written since `since`
    (raises LogUnreadableError; nothing stays open then)."""
    opened: list[MtaLog] = []
    try:
        for path in paths:
            opened.append(MtaLog(Path(path), open_history(Path(path), since)))
    except BaseException:
        close_all(opened)
        raise
    return opened


def close_all(logs: Iterable[MtaLog]) -> None:
    for each in logs:
        for file in each.files:
            file.close()


def run_report(config: Config, now: datetime, since: datetime, mta_logs: list[MtaLog] | None) -> RelayReport:
    """The report over [since, now]: the audit trail, joined to the MTA logs when given."""
    if config.log_file is None:
        raise ConfigError(f"{config.path}: log_file: not set; report reads the audit trail it holds")
    trail = open_history(config.log_file, since - TRAIL_LEAD)
    try:
        zone = config.sources[0].zone if config.sources else system_zone()
        messages = None
        if mta_logs is not None:
            streams = [_messages(each, TimestampParser(now, zone)) for each in mta_logs]
            messages = heapq.merge(*streams, key=lambda message: message.time)
        return build_report(_events(trail), messages, since, now)
    finally:
        for file in trail:
            file.close()


def _events(files: list[HistoryFile]) -> Iterator[AuditEvent]:
    for text in _lines(files):
        # Run and error lines share the file; an event's second word is its kind.
        event = parse_audit_line(text)
        if event is not None:
            yield event


def _messages(mta_log: MtaLog, timestamps: TimestampParser) -> Iterator[Message]:
    for text in _lines(mta_log.files, b": client="):
        stamped = timestamps.parse_prefix(text)
        if stamped is None:
            continue
        time, rest = stamped
        message = parse_smtpd_line(text[rest:], time)
        if message is not None:
            yield message


def _lines(files: list[HistoryFile], needle: bytes | None = None) -> Iterator[str]:
    """The lines of each file in turn (those holding `needle`), decoded; a damaged
    compressed copy is read up to the damage, with a warning."""
    for file in files:
        try:
            with file.content() as stream:
                for line in bounded_lines(stream):
                    # An over-long line (cut by bounded_lines) is neither an event nor a message.
                    if len(line) <= MAX_LINE_BYTES and (needle is None or needle in line):
                        yield line.decode("utf-8", "replace")
        except decompress_errors() as error:
            log.warning("%s: read up to a damaged part: %s", file.path, error)
