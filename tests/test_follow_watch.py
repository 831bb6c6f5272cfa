"""What wakes a follower between its steps (follow.Watch): the kernel's inotify,
or os.stat where inotify cannot be had. Both must see every way a log
changes (a write, a rotation by rename or by copytruncate, lines written to
the renamed file, even moved to another folder) and a newer follower's claim;
neither may wake for the neighbours in the log's folder.

The follower's behaviour end to end is tests/test_follow.py's; here each
change is made by hand and the watch asked, with no time limit asserted.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exactcron.commands.follow import FOLLOWER, SOURCES, Watch
from exactcron.config import load_config
from exactcron.sources.watch import open_inotify
from exactcron.stores.local import LocalState
from tests.support.lines import dovecot_login
from tests.support.site import write_site_config

# Longer than any wake-up takes; the watch returns as soon as it has one.
PATIENCE = 5.0


def watch_of(root: Path, kind: str) -> Watch:
    (root / "mail.log").touch()
    (root / "state").mkdir()
    config = load_config(write_site_config(root, root / "state"))
    inotify = open_inotify() if kind == "inotify" else None
    if kind == "inotify":
        assert inotify is not None, "this kernel has inotify"
    watch = Watch(config, inotify)
    watch.arm()
    return watch


def woken(watch: Watch) -> set[str]:
    """What wakes the watch within PATIENCE (polling: several looks)."""
    seen: set[str] = set()
    for _ in range(int(PATIENCE / 0.2)):
        seen |= watch.wait(PATIENCE)
        if seen - ({FOLLOWER} if not watch.follower_watched else set()):
            return seen
    return seen


def append(path: Path, line: str) -> None:
    with path.open("a") as stream:
        stream.write(line + "\n")


@pytest.fixture(params=["inotify", "stat"])
def watch(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watch]:
    built = watch_of(tmp_path, request.param)
    yield built
    built.close()


def test_idle_nothing_wakes_a_step(watch: Watch) -> None:
    # Writes beside the log (another log, our own state) wake no step.
    folder = watch.config.sources[0].path.parent
    append(folder / "syslog", "unrelated")
    (watch.config.state_dir / "checkpoints.json").write_text("{}")
    assert SOURCES not in watch.wait(0.5)


def test_a_line_written_wakes_a_step(watch: Watch) -> None:
    append(watch.config.sources[0].path, dovecot_login("192.0.2.1"))
    assert SOURCES in woken(watch)


@pytest.mark.parametrize("style", ["create", "copytruncate", "olddir"])
def test_a_rotation_and_lines_after_it_wake_a_step(watch: Watch, style: str, tmp_path: Path) -> None:
    log = watch.config.sources[0].path
    append(log, dovecot_login("192.0.2.1"))
    assert SOURCES in woken(watch)
    if style == "copytruncate":
        (tmp_path / "mail.log.1").write_bytes(log.read_bytes())
        with log.open("r+") as stream:
            stream.truncate(0)
        assert SOURCES in woken(watch)
        return
    rotated = tmp_path / ("old" if style == "olddir" else ".") / "mail.log.1"
    rotated.parent.mkdir(exist_ok=True)
    log.rename(rotated)
    assert SOURCES in woken(watch)
    watch.arm()  # as after the step that woke
    # The syslog daemon still writes to the renamed file until it reopens:
    # inotify follows the file; a stat of the name sees it once the new log is
    # there (and the step reads what the renamed one got meanwhile).
    append(rotated, dovecot_login("192.0.2.2"))
    if watch.inotify is not None:
        assert SOURCES in woken(watch)
    log.touch()
    assert SOURCES in woken(watch)
    watch.arm()
    append(log, dovecot_login("192.0.2.3"))
    assert SOURCES in woken(watch)


def test_a_newer_followers_claim_wakes_the_check(watch: Watch) -> None:
    LocalState(watch.config.state_dir).claim_follower('{"pid": 1}')
    assert FOLLOWER in woken(watch)


def test_a_log_whose_folder_cannot_be_watched_is_polled(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "state").mkdir()
    config = load_config(write_site_config(site, tmp_path / "state"))
    shutil.rmtree(site)
    watch = Watch(config, open_inotify())
    try:
        watch.arm()
        assert watch.polled and watch.follower_watched
        site.mkdir()
        append(site / "mail.log", dovecot_login("192.0.2.1"))
        assert SOURCES in woken(watch)
    finally:
        watch.close()


def test_a_journal_source_wakes_for_its_units_entries_only(tmp_path: Path) -> None:
    tool = Path("/lib/systemd/systemd-journal-remote")
    if not tool.exists():
        pytest.skip("systemd-journal-remote is not installed (Debian package systemd-journal-remote)")
    journal = tmp_path / "journal"
    journal.mkdir()
    number = iter(range(1, 100))

    def write(unit: str) -> None:
        export = tmp_path / "entry.export"
        export.write_text(
            f"__REALTIME_TIMESTAMP={time.time_ns() // 1000}\n__MONOTONIC_TIMESTAMP={next(number)}\n"
            f"_BOOT_ID={'0123456789abcdef' * 2}\n_HOSTNAME=mx\n_SYSTEMD_UNIT={unit}\n"
            "SYSLOG_IDENTIFIER=dovecot\nMESSAGE=imap-login: Login: user=<bob>, rip=192.0.2.1\n\n"
        )
        subprocess.run([str(tool), f"--output={journal / 'system.journal'}", str(export)], check=True)

    write("cron.service")
    (tmp_path / "state").mkdir()
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[source]]\njournal = ["dovecot.service"]\n'
        f'journal_directory = "{journal}"\nserver = "dovecot"\nhosts = ["mx"]\n'
        f'[[map]]\nmta = "postfix"\npath = "{tmp_path / "state" / "relay"}"\n'
    )
    watch = Watch(load_config(config), open_inotify())
    try:
        watch.arm()
        assert not watch.polled_journal  # watched by its journalctl --follow
        (process,) = watch.followers.values()
        time.sleep(1.0)  # journalctl is at the journal's end
        write("cron.service")  # another unit's entry: no step
        assert SOURCES not in watch.wait(1.5)
        write("dovecot.service")
        assert SOURCES in woken(watch)
    finally:
        watch.close()
    # Nothing is left running.
    assert process.poll() is not None


@pytest.mark.parametrize("kind", ["inotify", "stat"])
def test_a_write_through_a_symlinked_log_path_wakes_a_step(tmp_path: Path, kind: str) -> None:
    # /var/log/mail.log -> /srv/logs/mail.log: the writes land in the target's inode and folder.
    target = tmp_path / "elsewhere" / "mail.log"
    target.parent.mkdir()
    target.touch()
    (tmp_path / "mail.log").symlink_to(target)
    built = watch_of(tmp_path, kind)
    try:
        append(target, dovecot_login("192.0.2.1"))
        assert SOURCES in woken(built)
    finally:
        built.close()
