"""`update --follow-for`: logins granted while the follower runs, through the real CLI and postmap.

Each follower is `python -m exactcron update --follow-for DURATION` in a
process of its own, on the real clock (lines are stamped now). The tests wait
for what a user would see (postmap answering) with a generous limit, and
assert only that it happened while the follower still ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.lines import dovecot_login
from tests.support.maps import map_keys, postmap_value
from tests.support.site import write_site_config
from tests.support.tools import require_tool

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


class Follow:
    def __init__(self, root: Path) -> None:
        require_tool("postmap")
        self.root = root
        self.log = root / "mail.log"
        self.log.touch()
        self.state = root / "state"
        self.map = self.state / "relay"
        self.config = write_site_config(root, self.state, settings='timeout = "30m"\nlock_wait = "5s"')

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "exactcron", "--config", str(self.config), *args]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}

    def start(self, duration: str = "5s") -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command("update", "--follow-for", duration),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.environment(),
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=60,
            check=False,
        )

    def login(self, address: str, user: str = "alice", path: Path | None = None) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="microseconds")
        with (path or self.log).open("a") as stream:
            stream.write(dovecot_login(address, user, stamp) + "\n")

    def granted(self, address: str) -> bool:
        return self.map.with_suffix(".db").exists() and postmap_value(self.map, address) == "OK"

    def follower_status(self) -> dict[str, Any]:
        result = self.run("status", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        follower: dict[str, Any] = json.loads(result.stdout)["follower"]
        return follower

    def shown(self) -> set[str]:
        result = self.run("show", "--json")
        assert result.returncode == 0, result.stderr
        return {lease["ip"] for lease in json.loads(result.stdout)["leases"]}


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], limit: float = 15.0) -> None:
    """Until `condition` holds; it must hold while `process` (the follower) still runs."""
    ends = time.monotonic() + limit
    while time.monotonic() < ends:
        if condition():
            assert process.poll() is None, "granted only after the follower ended"
            return
        time.sleep(0.05)
    raise AssertionError("not seen in time")


def wait_started(follow: Follow, process: subprocess.Popen[str]) -> None:
    """Until the follower's own run is done (its follower file is written)."""
    wait_for(lambda: (follow.state / "follower").exists(), process)


def finished(process: subprocess.Popen[str]) -> tuple[int, str]:
    _, error = process.communicate(timeout=30)
    return process.returncode, error


@pytest.fixture
def follow(tmp_path: Path) -> Follow:
    return Follow(tmp_path)


def test_a_login_written_during_the_follow_is_granted_while_it_runs(follow: Follow) -> None:
    follower = follow.start("8s")
    wait_started(follow, follower)
    follow.login("192.0.2.10")
    wait_for(lambda: follow.granted("192.0.2.10"), follower)
    running = follow.follower_status()
    assert (running["running"], running["pid"]) == (True, follower.pid)
    assert finished(follower) == (0, "")
    assert follow.shown() == map_keys(follow.map) == {"192.0.2.10"}
    ended = follow.follower_status()
    # Its first run (which may have read the login already) and its steps; one lease granted.
    assert (ended["running"], ended["pid"], ended["granted"]) == (False, follower.pid, 1)
    assert ended["steps"] >= 1


def test_a_flush_during_the_follow_stays_flushed(follow: Follow) -> None:
    follow.login("192.0.2.20")
    follower = follow.start("8s")
    wait_for(lambda: follow.granted("192.0.2.20"), follower)
    flushed = follow.run("flush", "192.0.2.20")
    assert flushed.returncode == 0, flushed.stderr
    assert not follow.granted("192.0.2.20")
    # The follower goes on writing for another login: the flushed address stays out.
    follow.login("192.0.2.21")
    wait_for(lambda: follow.granted("192.0.2.21"), follower)
    assert not follow.granted("192.0.2.20")
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == {"192.0.2.21"}


def test_an_add_during_the_follow_stays(follow: Follow) -> None:
    follower = follow.start("8s")
    wait_started(follow, follower)
    added = follow.run("add", "203.0.113.5")
    assert added.returncode == 0, added.stderr
    follow.login("192.0.2.30")
    wait_for(lambda: follow.granted("192.0.2.30"), follower)
    assert follow.granted("203.0.113.5")
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == {"192.0.2.30", "203.0.113.5"}


@pytest.mark.parametrize("style", ["create", "copytruncate"])
def test_a_rotation_during_the_follow_loses_nothing(follow: Follow, style: str) -> None:
    # Not empty when the follower starts: its checkpoint knows the file it rotates from.
    follow.login("192.0.2.39")
    follower = follow.start("10s")
    wait_started(follow, follower)
    follow.login("192.0.2.40")
    # Written in the same breath as the rotation: the follower may not have read it yet.
    follow.login("192.0.2.41")
    rotated = follow.log.with_name("mail.log.1")
    if style == "create":
        follow.log.rename(rotated)
        follow.log.touch()
    else:
        rotated.write_bytes(follow.log.read_bytes())
        with follow.log.open("r+") as stream:
            stream.truncate(0)
    follow.login("192.0.2.42")
    expected = {"192.0.2.39", "192.0.2.40", "192.0.2.41", "192.0.2.42"}
    for address in sorted(expected):
        wait_for(lambda address=address: follow.granted(address), follower)  # type: ignore[misc]
    assert finished(follower) == (0, "")
    assert map_keys(follow.map) == follow.shown() == expected


def test_a_newer_follower_makes_the_older_one_exit(follow: Follow) -> None:
    older = follow.start("60s")
    wait_started(follow, older)
    started = time.monotonic()
    newer = follow.start("8s")
    assert finished(older) == (0, "")
    # The older one left long before its own minute: the newer one took over.
    assert time.monotonic() - started < 30
    assert newer.poll() is None
    follow.login("192.0.2.50")
    wait_for(lambda: follow.granted("192.0.2.50"), newer)
    assert finished(newer) == (0, "")


def test_the_follower_ends_at_its_deadline_while_lines_keep_coming(follow: Follow) -> None:
    started = time.monotonic()
    follower = follow.start("3s")
    index = 0
    while follower.poll() is None and time.monotonic() - started < 30:
        follow.login(f"198.51.100.{index % 250 + 1}", f"user{index}")
        index += 1
        time.sleep(0.01)
    assert finished(follower) == (0, "")
    assert time.monotonic() - started < 30
    # What it did not read, the next run does.
    follow.login("198.51.100.251")
    assert follow.run("update").returncode == 0
    assert map_keys(follow.map) == follow.shown()
    assert len(follow.shown()) == min(index, 250) + 1


def test_a_follower_killed_mid_follow_leaves_nothing_the_next_run_cannot_mend(follow: Follow) -> None:
    follower = follow.start("20s")
    wait_started(follow, follower)
    for index in range(40):
        follow.login(f"192.0.2.{index + 100}", f"user{index}")
        time.sleep(0.02)
    os.kill(follower.pid, signal.SIGKILL)
    follower.wait(timeout=10)
    # Whatever the kill interrupted, the maps hold no lease that `show` does not list.
    assert map_keys(follow.map) <= follow.shown() if follow.map.with_suffix(".db").exists() else True
    assert follow.run("update").returncode == 0
    assert map_keys(follow.map) == follow.shown() == {f"192.0.2.{index + 100}" for index in range(40)}


def test_a_step_cut_short_by_the_follows_own_end_leaves_status_healthy(follow: Follow) -> None:
    # The deadline counts as passed from its 3rd check on: the follower's own
    # run makes two (before its source, after its one block), so its first
    # step with something to read is cut, as the end of the minute cuts it.
    process = subprocess.Popen(
        follow.command("update", "--follow-for", "20s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**follow.environment(), "EXACTCRON_DEADLINE_AFTER": "3"},
    )
    wait_started(follow, process)
    follow.login("192.0.2.77")
    assert finished(process) == (0, "")
    status = follow.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    # What the cut step did not grant, the next run does.
    assert follow.run("update").returncode == 0
    assert follow.granted("192.0.2.77")


def journal_entry(address: str, number: int) -> str:
    """One Dovecot login in journal export format, stamped now, from the trusted unit."""
    microseconds = time.time_ns() // 1000
    return (
        f"__REALTIME_TIMESTAMP={microseconds}\n__MONOTONIC_TIMESTAMP={number}\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=mx\n_TRANSPORT=syslog\n"
        "_SYSTEMD_UNIT=dovecot.service\nSYSLOG_IDENTIFIER=dovecot\n"
        f"MESSAGE=imap-login: Login: user=<bob>, method=PLAIN, rip={address}, lip=10.0.0.1, mpid=7, TLS\n\n"
    )


def journal_follow(tmp_path: Path) -> tuple[Follow, Callable[[str, str, int], None]]:
    """A follow over a journal folder, and how to append a login to one of its files."""
    # systemd-journal-remote appends to a journal file as journald does; a
    # second file in the folder is what a journal rotation makes.
    tool = Path("/lib/systemd/systemd-journal-remote")
    if not tool.exists():
        pytest.skip("systemd-journal-remote is not installed (Debian package systemd-journal-remote)")
    require_tool("journalctl")
    follow = Follow(tmp_path)
    journal = tmp_path / "journal"
    journal.mkdir()
    follow.config.write_text(
        f'state_dir = "{follow.state}"\ntimeout = "30m"\nlock_wait = "5s"\n'
        f'[[source]]\njournal = ["dovecot.service"]\njournal_directory = "{journal}"\n'
        f'server = "dovecot"\nhosts = ["mx"]\n'
        f'[[map]]\nmta = "postfix"\npath = "{follow.map}"\ntype = "hash"\n'
    )

    def write(file: str, address: str, number: int) -> None:
        export = tmp_path / "entry.export"
        export.write_text(journal_entry(address, number))
        subprocess.run(
            [str(tool), f"--output={journal / file}", str(export)], check=True, capture_output=True
        )

    return follow, write


def test_a_login_written_to_the_journal_during_the_follow_is_granted_while_it_runs(tmp_path: Path) -> None:
    follow, write = journal_follow(tmp_path)
    write("system.journal", "192.0.2.60", 1)
    follower = follow.start("12s")
    wait_for(lambda: follow.granted("192.0.2.60"), follower)
    write("system.journal", "192.0.2.61", 2)
    wait_for(lambda: follow.granted("192.0.2.61"), follower)
    write("system@0001.journal", "192.0.2.62", 3)
    wait_for(lambda: follow.granted("192.0.2.62"), follower)
    assert finished(follower) == (0, "")
    assert follow.shown() == map_keys(follow.map) == {"192.0.2.60", "192.0.2.61", "192.0.2.62"}


def journal_watchers(journal: Path) -> list[int]:
    """The pids of the `journalctl --follow` processes reading `journal`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--follow" in arguments and f"--directory={journal}".encode() in arguments:
            found.append(int(entry.name))
    return found


def test_a_journal_follower_killed_leaves_no_journalctl_behind(tmp_path: Path) -> None:
    follow, write = journal_follow(tmp_path)
    write("system.journal", "192.0.2.70", 1)
    follower = follow.start("30s")
    wait_for(lambda: follow.granted("192.0.2.70"), follower)
    wait_for(lambda: bool(journal_watchers(tmp_path / "journal")), follower)
    os.kill(follower.pid, signal.SIGKILL)
    follower.wait(timeout=10)
    ends = time.monotonic() + 10
    while journal_watchers(tmp_path / "journal") and time.monotonic() < ends:
        time.sleep(0.05)
    assert journal_watchers(tmp_path / "journal") == []


def _points(trace: Path) -> list[str]:
    return trace.read_text().split() if trace.exists() else []


def test_a_follow_step_killed_at_any_point_leaves_nothing_the_next_run_cannot_mend(tmp_path: Path) -> None:
    """The kill-point suite for a follower's own step: its first run is quiet, so
    every write point after it belongs to the step a login written during the
    follow wakes (which reuses the lease table the follower keeps)."""

    def settled_follow(root: Path) -> Follow:
        root.mkdir()
        site = Follow(root)
        site.login("192.0.2.10", "alice")
        assert site.run("update").returncode == 0
        return site

    def follow_step(site: Follow, **environment: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            site.command("update", "--follow-for", "8s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**site.environment(), **environment},
        )
        wait_started(site, process)
        time.sleep(0.3)  # past the quiet first run
        site.login("192.0.2.11", "bob")
        return process

    reference = settled_follow(tmp_path / "trace")
    quiet_trace = tmp_path / "quiet-points"
    quiet = subprocess.run(
        reference.command("update"),
        capture_output=True,
        text=True,
        env={**reference.environment(), "EXACTCRON_TRACE_POINTS": str(quiet_trace)},
        check=False,
    )
    assert quiet.returncode == 0, quiet.stderr
    quiet_points = _points(quiet_trace)
    trace = tmp_path / "follow-points"
    traced = follow_step(reference, EXACTCRON_TRACE_POINTS=str(trace))
    wait_for(lambda: reference.granted("192.0.2.11"), traced)
    assert finished(traced)[0] == 0
    points = _points(trace)
    # The first run: the follower file's claim, then what a quiet run writes.
    first_run = len(quiet_points) + sum(point.startswith("follower:") for point in points)
    assert [point for point in points[:first_run] if not point.startswith("follower:")] == quiet_points
    step = points[first_run:]
    assert {"leases.json:renamed", "update:maps-written"} <= set(step)
    for number, point in enumerate(step):
        passage = points[: first_run + number + 1].count(point)
        site = settled_follow(tmp_path / f"kill-{number}")
        process = follow_step(site, EXACTCRON_KILL_AT=f"{point}#{passage}")
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, f"{point}#{passage}: not reached"
        # Whatever the kill interrupted, the maps hold no lease `show` does not list.
        assert map_keys(site.map) <= site.shown(), point
        assert site.run("update").returncode == 0
        assert map_keys(site.map) == site.shown() == {"192.0.2.10", "192.0.2.11"}, point
        assert [path.name for path in site.state.iterdir() if path.name.startswith(".")] == [], point
