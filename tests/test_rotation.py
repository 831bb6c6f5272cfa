"""Every login granted exactly once, across every way logrotate rotates a log.

Each case drives the real /usr/sbin/logrotate (Debian package logrotate) with
a real configuration and a state file of its own, writes logins with
distinct addresses around the rotations, and runs the real `exactcron
update` between writes, as cron would. A login lost is a user refused relay;
a login read twice is counted too, through the `N logins` that -v reports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from tests.support.tools import require_tool

START = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
# Lines between logins: other daemons' lines, so that files grow past the fingerprint length.
NOISE = "postfix/smtpd[4242]: connect from unknown[192.0.2.7] " + "x" * 60


@pytest.fixture
def logrotate() -> str:
    return require_tool("logrotate")


@dataclass
class RotatingLog:
    """A mail log, its logrotate configuration, and exactcron pointed at both."""

    directory: Path
    logrotate: str
    options: str
    minutes: int = 0
    written: list[str] = field(default_factory=list)
    granted: Counter[str] = field(default_factory=Counter)
    logins_read: int = 0
    warnings: list[str] = field(default_factory=list)
    # logrotate's state file; elsewhere than the log when the test needs the
    # log directory's freed inode numbers left for the log itself.
    state_file: Path | None = None
    # More keys of the [[source]] table.
    source_options: str = ""

    @property
    def log(self) -> Path:
        return self.directory / "mail.log"

    def __post_init__(self) -> None:
        self.log.touch()
        (self.directory / "logrotate.conf").write_text(
            f"{self.log} {{\n    rotate 8\n    missingok\n    notifempty\n{self.options}\n}}\n"
        )
        (self.directory / "exactcron.toml").write_text(
            f'state_dir = "{self.directory / "state"}"\ntimeout = "2h"\nignore = []\n'
            f'[[source]]\npath = "{self.log}"\nserver = "dovecot"\ntimezone = "UTC"\nhosts = ["*"]\n'
            + (f'olddir = "{self.directory / "old"}"\n' if "olddir" in self.options else "")
            + self.source_options
            + f'[[map]]\nmta = "exim"\npath = "{self.directory / "relay"}"\n'
        )

    def now(self) -> datetime:
        return START + timedelta(minutes=self.minutes)

    def write(self, count: int = 3, through: IO[str] | None = None) -> None:
        """Append `count` logins (and noise), each from an address never used before."""
        text = []
        for _ in range(count):
            self.minutes += 1
            number = len(self.written) + 1
            address = f"10.{number // 250}.{number % 250}.{7 + number % 3}"
            stamp = self.now().isoformat(timespec="microseconds")
            text.append(f"{stamp} mx {NOISE}\n")
            text.append(
                f"{stamp} mx dovecot: imap-login: Login: user=<u{number}>, method=PLAIN, "
                f"rip={address}, lip=10.0.0.1, mpid={number}, TLS, session=<s{number}>\n"
            )
            self.written.append(address)
        if through is not None:
            through.write("".join(text))
            through.flush()
        else:
            with open(self.log, "a") as stream:
                stream.write("".join(text))

    def rotate(self) -> None:
        result = subprocess.run(
            [
                self.logrotate,
                "-s",
                str(self.state_file or self.directory / "logrotate.state"),
                "-f",
                str(self.directory / "logrotate.conf"),
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr

    def update(self) -> None:
        """One cron run of `exactcron -v update`, a minute after the last line."""
        self.minutes += 1
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "exactcron",
                "--config",
                str(self.directory / "exactcron.toml"),
                "--now",
                self.now().isoformat(),
                "-v",
                "update",
            ],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        self.granted.update(re.findall(r"^granted (\S+)$", result.stdout, re.MULTILINE))
        self.logins_read += sum(int(n) for n in re.findall(r" (\d+) logins?$", result.stdout, re.MULTILINE))
        self.warnings += [line for line in result.stderr.splitlines() if line.strip()]

    def assert_each_granted_once(self) -> None:
        print(
            f"logins written {len(self.written)}, granted {sum(self.granted.values())}, read {self.logins_read}"
        )
        assert len(set(self.written)) == len(self.written)
        lost = sorted(set(self.written) - set(self.granted))
        twice = sorted(address for address, count in self.granted.items() if count > 1)
        assert not lost, f"logins never granted: {lost}"
        assert not twice, f"logins granted twice: {twice}"
        assert set(self.granted) == set(self.written)
        # Read exactly once, too: a re-read would hide behind the idempotent merge.
        assert self.logins_read == len(self.written)


@pytest.fixture
def site(tmp_path: Path, logrotate: str) -> Callable[[str], RotatingLog]:
    def make(options: str) -> RotatingLog:
        return RotatingLog(tmp_path, logrotate, options)

    return make


def test_append_only(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create")
    for _ in range(4):
        s.write()
        s.update()
    s.assert_each_granted_once()


def test_rename_and_create(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create")
    s.write()
    s.update()
    s.write()  # unread when rotated: must be found in mail.log.1
    s.rotate()
    s.write()
    s.update()
    s.write()
    s.update()
    assert (s.directory / "mail.log.1").exists()
    s.assert_each_granted_once()
    assert not s.warnings


def test_dateext(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create\n    dateext")
    s.write()
    s.update()
    s.write()
    s.rotate()
    s.write()
    s.update()
    assert list(s.directory.glob("mail.log-2*")), "logrotate wrote no dated file"
    s.assert_each_granted_once()


def test_compress_without_delaycompress(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create\n    compress")
    s.write()
    s.update()
    s.write()  # unread tail ends up in mail.log.1.gz
    s.rotate()
    assert (s.directory / "mail.log.1.gz").exists()
    s.write()
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_copytruncate(site: Callable[[str], RotatingLog]) -> None:
    s = site("    copytruncate")
    s.write()
    s.update()
    s.write()
    s.rotate()
    s.write(1)  # shorter than before: the old offset lies past its end
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_copytruncate_compress(site: Callable[[str], RotatingLog]) -> None:
    s = site("    copytruncate\n    compress")
    s.write()
    s.update()
    s.write()
    s.rotate()
    assert (s.directory / "mail.log.1.gz").exists()
    s.write(1)
    s.update()
    s.assert_each_granted_once()


def test_copytruncate_regrown_past_old_offset(site: Callable[[str], RotatingLog]) -> None:
    s = site("    copytruncate")
    s.write(2)
    s.update()
    offset = s.log.stat().st_size
    s.write(2)
    s.rotate()
    s.write(6)  # the same inode, now longer than where the last run stopped
    assert s.log.stat().st_size > offset
    s.update()
    s.assert_each_granted_once()


def test_two_rotations_with_delaycompress(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create\n    compress\n    delaycompress")
    s.write()
    s.update()
    s.write()  # unread, ends up in mail.log.2.gz
    s.rotate()
    s.write()  # never seen, ends up in mail.log.1
    s.rotate()
    s.write()
    assert (s.directory / "mail.log.2.gz").exists()
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_late_writes_to_the_renamed_file(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create")
    with open(s.log, "a") as writer:  # a daemon holding its log open, as rsyslog does
        s.write(through=writer)
        s.update()
        s.write(through=writer)
        s.rotate()
        s.write(through=writer)  # lands in mail.log.1: no HUP yet
        s.update()
        s.write(through=writer)  # still mail.log.1, after a run read it
    s.write()  # reopened after the HUP: the new mail.log
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_inode_reuse(tmp_path: Path, logrotate: str) -> None:
    # compress without delaycompress and nocreate: logrotate deletes mail.log.1
    # after compressing it, and the writer's new mail.log gets its inode back
    # (ext4 hands out a freed number at once, unless logrotate's own state file
    # takes it first: so that file lives on another filesystem here). Another
    # process on the machine may still take the number in between, so the
    # scenario is tried afresh (every attempt must lose nothing) until the
    # reuse really happened.
    shm = Path("/dev/shm")
    reused = False
    on_ext4 = False
    for attempt in range(5):
        directory = tmp_path / f"attempt-{attempt}"
        directory.mkdir()
        s = RotatingLog(directory, logrotate, "    nocreate\n    compress")
        state_dir = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else None
        if state_dir is not None:
            s.state_file = state_dir / "logrotate.state"
        try:
            reused = _inode_reuse(s)
        finally:
            if state_dir is not None:
                shutil.rmtree(state_dir)
        filesystem = subprocess.run(
            ["stat", "-f", "-c", "%T", str(directory)], capture_output=True, text=True
        )
        on_ext4 = filesystem.stdout.strip() == "ext2/ext3" and state_dir is not None
        print(f"attempt {attempt}: inode reused: {reused} ({filesystem.stdout.strip()})")
        if reused or not on_ext4:
            break
    if on_ext4:
        assert reused, "the case did not happen: no inode was reused in 5 attempts"


def _inode_reuse(s: RotatingLog) -> bool:
    """Run the scenario; whether the new log really got the old inode."""
    s.write(2)
    s.update()
    old_inode = s.log.stat().st_ino
    s.write(2)
    s.rotate()
    s.write(8)  # longer than the old offset, so an inode-trusting reader would skip lines
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()
    return s.log.stat().st_ino == old_inode


def test_four_rotations_between_runs(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create\n    compress\n    delaycompress")
    s.write()
    s.update()
    for _ in range(4):
        s.write()
        s.rotate()
    s.write()
    assert (s.directory / "mail.log.4.gz").exists()
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_truncated_in_place(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create")
    s.write(3)
    s.update()
    os.truncate(s.log, 0)  # an administrator's `: > mail.log`
    s.write(1)
    s.update()
    s.write(4)
    s.update()
    s.assert_each_granted_once()
    assert any("truncated in place" in warning for warning in s.warnings)


def test_log_missing_at_a_run(site: Callable[[str], RotatingLog]) -> None:
    s = site("    nocreate")
    with open(s.log, "a") as writer:
        s.write(through=writer)
        s.update()
        s.write(through=writer)
        s.rotate()
        assert not s.log.exists()
        s.update()  # rotated, not yet recreated: not an error
        s.write(through=writer)
    s.write()  # the daemon reopens and creates mail.log
    s.update()
    s.assert_each_granted_once()


def test_olddir(site: Callable[[str], RotatingLog]) -> None:
    s = site("    create\n    olddir old\n    createolddir 0700 root root")
    s.write()
    s.update()
    s.write()
    s.rotate()
    assert (s.directory / "old" / "mail.log.1").exists()
    s.write()
    s.update()
    s.assert_each_granted_once()


# -- every name logrotate can give a rotated copy ------------------------------


def _catch_up_across_one_rotation(s: RotatingLog) -> None:
    """Logins read before, logins unread when the log is rotated, logins after."""
    s.write()
    s.update()
    s.write()  # unread when rotated: must be found under the rotated name
    s.rotate()
    s.write()
    s.update()
    s.write()
    s.update()


def _names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


@pytest.mark.parametrize(
    ("options", "rotated_name"),
    [
        # dateext with a dateformat that is not the default `-%Y%m%d`.
        ("    dateext\n    dateformat .%Y%m%d", r"mail\.log\.\d{8}"),
        ("    dateext\n    dateformat -%Y-%m-%d-%s", r"mail\.log-\d{4}-\d\d-\d\d-\d{10}"),
        ("    dateext\n    dateformat _%Y%m%d%H%M%S", r"mail\.log_\d{14}"),
        ("    dateext\n    dateformat %Y%m%d", r"mail\.log\d{8}"),
        # `extension`: the rotation goes before the log's own suffix.
        ("    extension .log", r"mail\.1\.log"),
        ("    extension .log\n    compress", r"mail\.1\.log\.gz"),
        ("    extension .log\n    dateext", r"mail-\d{8}\.log"),
        ("    start 0", r"mail\.log\.0"),
    ],
)
def test_a_rotated_name(site: Callable[[str], RotatingLog], options: str, rotated_name: str) -> None:
    s = site("    create\n" + options)
    _catch_up_across_one_rotation(s)
    assert any(re.fullmatch(rotated_name, name) for name in _names(s.directory)), _names(s.directory)
    s.assert_each_granted_once()
    assert not s.warnings


@pytest.mark.parametrize(
    ("tool", "suffix"), [("gzip", ".gz"), ("bzip2", ".bz2"), ("xz", ".xz"), ("zstd", ".zst")]
)
def test_a_compressed_rotation(site: Callable[[str], RotatingLog], tool: str, suffix: str) -> None:
    command = require_tool(tool)
    s = site(f"    create\n    compress\n    compresscmd {command}\n    compressext {suffix}")
    _catch_up_across_one_rotation(s)
    assert (s.directory / f"mail.log.1{suffix}").exists(), _names(s.directory)
    s.assert_each_granted_once()
    assert not s.warnings


def test_zstd_with_delaycompress_over_two_rotations(site: Callable[[str], RotatingLog]) -> None:
    zstd = require_tool("zstd")
    s = site(f"    create\n    compress\n    delaycompress\n    compresscmd {zstd}\n    compressext .zst")
    s.write()
    s.update()
    s.write()  # unread, ends up in mail.log.2.zst
    s.rotate()
    s.write()  # never seen, ends up in mail.log.1
    s.rotate()
    s.write()
    assert (s.directory / "mail.log.2.zst").exists(), _names(s.directory)
    s.update()
    s.write()
    s.update()
    s.assert_each_granted_once()


def test_olddir_dateformat_extension_and_zstd_together(site: Callable[[str], RotatingLog]) -> None:
    zstd = require_tool("zstd")
    s = site(
        "    create\n    olddir old\n    createolddir 0700 root root\n    extension .log\n"
        f"    dateext\n    dateformat .%Y-%m-%d\n    compress\n    compresscmd {zstd}\n    compressext .zst"
    )
    _catch_up_across_one_rotation(s)
    assert any(re.fullmatch(r"mail\.\d{4}-\d\d-\d\d\.log\.zst", name) for name in _names(s.directory / "old"))
    s.assert_each_granted_once()
    assert not s.warnings


def _archiving(tmp_path: Path, logrotate: str, archived_as: str, source_options: str = "") -> RotatingLog:
    """A site whose own script moves each rotated copy to a name logrotate never gives."""
    return RotatingLog(
        tmp_path,
        logrotate,
        f"    create\n    postrotate\n        mkdir -p {tmp_path}/archive && "
        f"mv {tmp_path}/mail.log.1 {tmp_path}/archive/{archived_as}\n    endscript",
        source_options=source_options,
    )


def test_a_name_only_the_rotated_glob_knows(tmp_path: Path, logrotate: str) -> None:
    s = _archiving(tmp_path, logrotate, "maillog-$(date +%s%N)", 'rotated = ["archive/maillog-*"]\n')
    _catch_up_across_one_rotation(s)
    assert list((tmp_path / "archive").glob("maillog-*")), _names(tmp_path)
    s.assert_each_granted_once()
    assert not s.warnings


def test_without_the_rotated_glob_the_archived_logins_are_lost_with_a_warning(
    tmp_path: Path, logrotate: str
) -> None:
    s = _archiving(tmp_path, logrotate, "maillog-1")
    _catch_up_across_one_rotation(s)
    assert set(s.written) - set(s.granted), "the archived logins were found without the glob"
    assert any("rotated to a name not watched" in warning for warning in s.warnings)


# -- a replaced file whose first kilobyte is unchanged --------------------------


def test_a_file_rewritten_by_sed_is_read_as_new_never_from_mid_line(
    site: Callable[[str], RotatingLog],
) -> None:
    sed = require_tool("sed")
    s = site("    create")
    s.write(8)  # more than the fingerprint's kilobyte
    stamp = s.now().isoformat(timespec="microseconds")
    redacted = f"{stamp} mx postfix/smtpd[77]: warning: hostname REDACT-ME{'r' * 150} does not resolve\n"
    with open(s.log, "a") as stream:
        stream.write(redacted)
    s.write(1)
    s.update()
    offset = s.log.stat().st_size
    # An administrator redacts a line in place: same first kilobyte, a new
    # file, every later byte moved back by the length of the line removed.
    subprocess.run([sed, "-i", "/REDACT-ME/d", str(s.log)], check=True)
    # Then a client's HELO lands in a line of another program; reading from
    # the old offset would start at the fake success inside it.
    fake = (
        f"{stamp} mx dovecot: imap-login: Login: user=<evil>, method=PLAIN, rip=198.51.100.66, "
        "lip=10.0.0.1, mpid=1, TLS, session=<e>"
    )
    prefix = f"{stamp} mx postfix/smtpd[78]: NOQUEUE: reject: RCPT from unknown[203.0.113.9]: helo=<"
    prefix += "h" * (len(redacted) - len(prefix))
    with open(s.log, "a") as stream:
        stream.write(prefix + fake + ">\n")
    assert s.log.read_bytes()[offset:].startswith(fake.encode())
    s.write(2)
    s.update()
    assert "198.51.100.66" not in s.granted
    lost = set(s.written) - set(s.granted)
    assert not lost, f"logins never granted: {sorted(lost)}"
    assert any("no longer at the start of a line" in warning for warning in s.warnings), s.warnings


def test_without_the_zstd_command_a_zst_copy_is_named_in_a_warning(
    site: Callable[[str], RotatingLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    zstd = require_tool("zstd")
    s = site(f"    create\n    compress\n    compresscmd {zstd}\n    compressext .zst")
    s.write()
    s.update()
    s.write()  # unread when rotated into mail.log.1.zst
    s.rotate()
    monkeypatch.setenv("PATH", str(s.directory / "no-tools-here"))
    s.update()
    assert any(
        "mail.log.1.zst" in warning and "zstd command is not installed" in warning for warning in s.warnings
    )
