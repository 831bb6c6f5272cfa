"""The journal source against a real journal file.

systemd-journal-remote (Debian package systemd-journal-remote) writes a
journal file from export format; `journalctl --directory` reads it, as it
would /var/log/journal. The trusted `_SYSTEMD_UNIT` field is set by the
export stream here, as journald sets it from the sender's cgroup.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from exactcron.sources.journal import JournalCheckpoint, JournalReader, entry_line
from tests.support.clock import NOW_TIME

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
HOUR_BEFORE_NOW = NOW_TIME - timedelta(hours=1)  # the clock of these tests
BOOT = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def journal_remote() -> Path:
    if not JOURNAL_REMOTE.exists():
        message = "systemd-journal-remote is not installed (Debian package systemd-journal-remote)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return JOURNAL_REMOTE


def login(address: str) -> str:
    return f"imap-login: Login: user=<bob>, method=PLAIN, rip={address}, lip=10.0.0.1, mpid=7, TLS"


def write_journal(tool: Path, file: Path, entries: list[tuple[int, str, str, str]], first: int) -> None:
    """Entries (minutes before HOUR_BEFORE_NOW, unit, identifier, message) into a new journal file."""
    blocks = []
    for number, (minutes, unit, identifier, message) in enumerate(entries, start=first):
        microseconds = int((HOUR_BEFORE_NOW - timedelta(minutes=minutes)).timestamp() * 1_000_000)
        blocks.append(
            f"__REALTIME_TIMESTAMP={microseconds}\n__MONOTONIC_TIMESTAMP={number}\n_BOOT_ID={BOOT}\n"
            f"_HOSTNAME=mx\n_TRANSPORT=syslog\n_SYSTEMD_UNIT={unit}\nSYSLOG_IDENTIFIER={identifier}\n"
            f"MESSAGE={message}\n\n"
        )
    export = file.with_suffix(".export")
    export.write_text("".join(blocks))
    subprocess.run([str(tool), f"--output={file}", str(export)], check=True, capture_output=True)
    export.unlink()


def update(config: Path, now: datetime) -> tuple[list[str], str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "exactcron",
            "--config",
            str(config),
            "--now",
            now.isoformat(),
            "-v",
            "update",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return re.findall(r"^granted (\S+)$", result.stdout, re.MULTILINE), result.stderr


def test_journal_source_grants_trusted_units_only_and_resumes_at_its_cursor(
    tmp_path: Path, journal_remote: Path
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(
        journal_remote,
        journal / "remote-1.journal",
        [
            (50, "dovecot.service", "dovecot", login("192.0.2.1")),  # older than the timeout
            (20, "dovecot.service", "dovecot", login("192.0.2.2")),
            # Forged by a local user with `logger -t dovecot`: same text, wrong unit.
            (19, "session-3.scope", "dovecot", login("192.0.2.66")),
            (18, "dovecot.service", "dovecot", "imap-login: Disconnected: rip=192.0.2.3"),
            (17, "imap.service", "dovecot", login("192.0.2.4")),
        ],
        first=1,
    )
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\ntimeout = "30m"\nignore = []\n'
        f'[[source]]\njournal = ["dovecot.service", "imap.service"]\njournal_directory = "{journal}"\n'
        f'server = "dovecot"\nhosts = ["mx"]\n[[map]]\nmta = "exim"\npath = "{tmp_path / "relay"}"\n'
    )
    granted, _ = update(config, HOUR_BEFORE_NOW)
    assert sorted(granted) == ["192.0.2.2", "192.0.2.4"]

    write_journal(
        journal_remote,
        journal / "remote-2.journal",
        [
            (2, "dovecot.service", "dovecot", login("192.0.2.5")),
            (1, "user@0.service", "dovecot", login("192.0.2.67")),
        ],
        first=100,
    )
    granted, _ = update(config, HOUR_BEFORE_NOW + timedelta(minutes=1))
    assert granted == ["192.0.2.5"]  # only what came after the cursor, and never the forged one
    granted, _ = update(config, HOUR_BEFORE_NOW + timedelta(minutes=2))
    assert granted == []
    assert "192.0.2.66" not in (tmp_path / "relay").read_text()
    status = subprocess.run(
        [sys.executable, "-m", "exactcron", "--config", str(config), "status"], capture_output=True, text=True
    ).stdout
    assert status.startswith("source journal:dovecot.service,imap.service\n  checkpoint: journal cursor s=")


def test_a_cursor_the_journal_no_longer_has_falls_back_to_the_window(
    tmp_path: Path, journal_remote: Path, warnings_logged: list[str]
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(
        journal_remote,
        journal / "remote.journal",
        [
            (40, "dovecot.service", "dovecot", login("192.0.2.1")),
            (5, "dovecot.service", "dovecot", login("192.0.2.2")),
        ],
        first=1,
    )
    reader = JournalReader(
        ("dovecot.service",),
        JournalCheckpoint("s=gone;i=1"),
        HOUR_BEFORE_NOW - timedelta(minutes=30),
        journal,
    )
    lines = list(reader.lines())
    assert len(lines) == 1 and b"rip=192.0.2.2," in lines[0]
    assert "no longer valid" in " ".join(warnings_logged)
    assert reader.checkpoint is not None and reader.checkpoint.cursor.startswith("s=")


def test_entry_line_is_an_rfc3339_syslog_line() -> None:
    entry = {
        "__REALTIME_TIMESTAMP": "1795633438607524",
        "_SYSTEMD_UNIT": "dovecot.service",
        "SYSLOG_IDENTIFIER": "dovecot",
        "_HOSTNAME": "mx",
        "MESSAGE": [105, 109, 97, 112, 255],  # not UTF-8: journalctl gives the bytes
    }
    assert entry_line(entry, frozenset({"dovecot.service"})) == (
        "2026-11-25T19:03:58.607524+00:00 mx dovecot: imap\ufffd".encode()
    )
    assert entry_line(entry, frozenset({"other.service"})) is None
    assert entry_line({**entry, "_SYSTEMD_UNIT": ["dovecot.service"]}, frozenset({"dovecot.service"})) is None


def test_entry_line_carries_the_trusted_pid_for_two_line_rules() -> None:
    entry = {
        "__REALTIME_TIMESTAMP": "1795633438607524",
        "_SYSTEMD_UNIT": "popa3d.service",
        "SYSLOG_IDENTIFIER": "popa3d",
        "_HOSTNAME": "mx",
        "_PID": "4711",
        "MESSAGE": "Session from 192.0.2.21",
    }
    units = frozenset({"popa3d.service"})
    assert (
        entry_line(entry, units)
        == b"2026-11-25T19:03:58.607524+00:00 mx popa3d[4711]: Session from 192.0.2.21"
    )
    # A PID that is no number (several values, text) is left out: no pairing.
    for pid in (["1", "2"], "12a", "\u0661", "12345678901"):
        assert entry_line({**entry, "_PID": pid}, units) == (
            b"2026-11-25T19:03:58.607524+00:00 mx popa3d: Session from 192.0.2.21"
        )


def test_checkpoint_json_is_tolerant() -> None:
    assert JournalCheckpoint.from_json(JournalCheckpoint("s=1").to_json()) == JournalCheckpoint("s=1")
    for broken in (None, {}, {"journal_cursor": 3}, {"journal_cursor": ""}, {"journal_cursor": "a\nb"}):
        assert JournalCheckpoint.from_json(broken) is None


def _exactcron(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exactcron", "--config", str(config), *arguments],
        capture_output=True,
        text=True,
    )


def test_check_reports_a_journal_source_with_no_journal_to_read(tmp_path: Path, journal_remote: Path) -> None:
    """journalctl reads nothing, says nothing and exits 0 without journal files
    (a root or container without journald): check says so, as for a missing log."""
    journal = tmp_path / "journal"
    journal.mkdir()
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[source]]\njournal = "dovecot.service"\n'
        f'journal_directory = "{journal}"\nserver = "dovecot"\n[[map]]\nmta = "exim"\npath = "{tmp_path / "relay"}"\n'
    )
    checked = _exactcron(config, "check")
    assert checked.returncode == 66 and checked.stdout == ""
    assert checked.stderr.startswith(
        f"exactcron: as user root: journal:dovecot.service: no journal files in {journal} "
    )
    assert len(checked.stderr.splitlines()) == 1
    # status says nothing false about it either: a journal has no byte count, missing or not.
    assert "log missing" not in _exactcron(config, "status").stdout

    write_journal(
        journal_remote, journal / "remote.journal", [(5, "dovecot.service", "dovecot", login("192.0.2.2"))], 1
    )
    checked = _exactcron(config, "check")
    assert (checked.returncode, checked.stderr) == (0, ""), checked
    assert checked.stdout == f"{config}: OK (1 sources)\n"
