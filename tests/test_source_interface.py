"""One interface for a log file and the journal (sources/base.py): what the
commands ask of a source, asked the same way of both kinds."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

from exactcron.config import SourceConfig
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.sources.open import open_source
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME as NOW
from tests.support.lines import dovecot_login

LOGIN = (dovecot_login("192.0.2.10") + "\n").encode()


def parser() -> LineParser:
    return LineParser((BUILTIN_RULES["dovecot"],), TimestampParser(NOW, UTC))


def file_source(log: Path) -> SourceConfig:
    return SourceConfig(path=log, rules=(BUILTIN_RULES["dovecot"],), zone=UTC)


def test_a_log_file_reads_from_its_checkpoint_and_knows_when_it_is_quiet(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    settings = file_source(log)
    assert not open_source(settings).present()
    log.write_bytes(LOGIN)
    source = open_source(settings, None, NOW - timedelta(hours=1))
    recorded = source.signature()
    logins = [login for batch in source.logins(parser()) for login in batch]
    assert [login.address for login in logins] == ["192.0.2.10"]
    assert source.checkpoint is not None and source.bytes_read == len(LOGIN)
    saved = source.checkpoint.to_json()
    again = open_source(settings, saved)
    assert again.present() and again.counts_bytes and again.unread_bytes() == 0
    assert again.quiet(recorded, again.signature())
    assert again.checkpoint is not None
    assert again.checkpoint.describe().endswith(f"offset {len(LOGIN)}")
    with log.open("ab") as stream:
        stream.write(LOGIN)
    assert not again.quiet(recorded, again.signature()) and again.unread_bytes() == len(LOGIN)
    assert [login for batch in again.logins(parser()) for login in batch] == logins


def test_a_journal_source_has_a_cursor_and_no_byte_count() -> None:
    settings = SourceConfig(
        path=Path("journal:dovecot.service"),
        rules=(BUILTIN_RULES["dovecot"],),
        zone=UTC,
        journal=("dovecot.service",),
    )
    source = open_source(settings, {"journal_cursor": "s=1;i=2"})
    assert source.present() and not source.counts_bytes and source.unread_bytes() is None
    assert source.checkpoint is not None and source.checkpoint.describe() == "journal cursor s=1;i=2"
    assert source.checkpoint.to_json() == {"journal_cursor": "s=1;i=2"}
    assert not open_source(settings).quiet(None, None)  # no cursor yet: a full run reads
