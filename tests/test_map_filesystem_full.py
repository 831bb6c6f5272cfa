"""A full filesystem under the maps never keeps relay open beyond a lease.

When a map cannot be rebuilt for lack of room, and the installed map still
lets through an address whose lease ended (or was flushed), the old map is
removed to make room and the new one built in its place; if even that does
not fit, no map is left (the MTA defers, nobody relays). Exit 73 with one
line naming the map and what it holds now. With room again, the next run
rebuilds as usual. Each test mounts a small tmpfs of its own (root only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exactcron.errors import MapBuildError, StateWriteError
from tests.support.binaries import FETCH_MTA, MTA_CACHE
from tests.support.lines import dovecot_login
from tests.support.maps import postmap_query
from tests.support.mounts import small_tmpfs
from tests.support.site import write_config
from tests.support.tools import require_tool

GRANTED_AT = "2026-11-25T18:00:00+00:00"  # the login at 17:50 holds until 18:20
STILL_LEASED = "2026-11-25T18:05:00+00:00"
ENDED = "2026-11-25T19:00:00+00:00"
LATER = "2026-11-25T19:01:00+00:00"
ADDRESS = "192.0.2.10"


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "mnt", "2m", "exactcron-full") as mount:
        yield mount


def fill(mount: Path) -> Path:
    """Take every last byte of the filesystem: a filler written until ENOSPC."""
    filler = mount / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while os.write(descriptor, b"\0" * size):
                    pass
            except OSError as error:
                assert error.errno == 28, error
    finally:
        os.close(descriptor)
    assert os.statvfs(mount).f_bfree == 0
    return filler


class FullDiskSite:
    """A Dovecot log read into one map of `kind` on the small filesystem."""

    def __init__(self, root: Path, mount: Path, kind: str, bin_dir: Path | None = None) -> None:
        self.root = root
        self.state = mount / "state"
        self.kind = kind
        self.bin_dir = bin_dir
        self.map = self.state / f"relay-{kind}"
        self.log = root / "mail.log"
        # A busy hour: the map holds more than one address's worth of room.
        others = [
            dovecot_login(f"198.51.{index // 200}.{index % 200 + 1}", f"user{index}") for index in range(400)
        ]
        self.log.write_text("\n".join([dovecot_login(ADDRESS), *others]) + "\n")
        kind_line = 'type = "hash"' if kind == "postfix" else ""
        self.config = write_config(
            root,
            f"""\
state_dir = "{self.state}"
[[source]]
path = "{self.log}"
server = "dovecot"
hosts = ["mail"]
[[map]]
mta = "{kind}"
path = "{self.map}"
{kind_line}
""",
        )

    def run(self, now: str, *command: str, **environment: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **environment}
        if self.bin_dir is not None:
            env["PATH"] = f"{self.bin_dir}:{env['PATH']}"
        full = [sys.executable, "-m", "exactcron", "--config", str(self.config), "--now", now, *command]
        return subprocess.run(full, capture_output=True, text=True, env=env, timeout=120)

    def database(self) -> Path | None:
        return None if self.kind == "exim" else self.map.with_name(self.map.name + ".db")

    def relays(self, address: str) -> bool:
        """Whether the map, as the MTA reads it, lets `address` relay."""
        if self.kind == "exim":
            return self.map.exists() and address in self.map.read_text().split()
        database = self.database()
        assert database is not None
        if not database.exists():
            return False
        if self.kind == "postfix":
            found = postmap_query(self.map, address)
            return found.stdout.strip() == "OK"
        assert self.bin_dir is not None
        dump = subprocess.run(
            [self.bin_dir / "makemap", "-u", "hash", str(self.map)],
            capture_output=True,
            text=True,
            check=True,
        )
        return f"connect:{address}\tRELAY" in dump.stdout.splitlines()

    def leftovers(self) -> list[str]:
        return sorted(name for name in os.listdir(self.state) if name.endswith(".tmp"))


@pytest.fixture(params=["postfix", "exim", "sendmail"])
def site(request: pytest.FixtureRequest, tmp_path: Path, small_filesystem: Path) -> FullDiskSite:
    kind = request.param
    bin_dir = None
    if kind == "postfix":
        require_tool("postmap")
    if kind == "sendmail":
        fetched = subprocess.run(
            [FETCH_MTA, str(MTA_CACHE)], capture_output=True, text=True, timeout=300, check=False
        )
        if fetched.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"makemap is required in CI: {fetched.stderr.strip()}")
            pytest.skip(f"makemap not available: {fetched.stderr.strip()}")
        bin_dir = Path(fetched.stdout.strip())
    made = FullDiskSite(tmp_path, small_filesystem, kind, bin_dir)
    first = made.run(GRANTED_AT, "update")
    assert first.returncode == 0, first.stderr
    assert made.relays(ADDRESS)
    return made


def assert_one_line(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 73, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr


def test_an_ended_lease_leaves_a_map_on_a_full_filesystem(site: FullDiskSite, small_filesystem: Path) -> None:
    # Another client logs in: the new map is not empty, so it needs room of its own.
    with site.log.open("a") as log:
        log.write(dovecot_login("192.0.2.20", time="2026-11-25T18:58:00+00:00") + "\n")
    filler = fill(small_filesystem)
    result = site.run(ENDED, "update")
    assert_one_line(result, f"map {site.map}: no room on its filesystem: rewrote it")
    assert not site.relays(ADDRESS)
    assert site.relays("192.0.2.20")
    assert site.leftovers() == []
    # Room again: a normal run, nothing to say.
    filler.unlink()
    again = site.run(LATER, "update")
    assert (again.returncode, again.stderr) == (0, "")
    assert not site.relays(ADDRESS) and site.relays("192.0.2.20")


def test_a_map_that_cannot_be_rebuilt_even_in_its_own_room_is_removed(
    site: FullDiskSite, small_filesystem: Path
) -> None:
    # Many new leases: the new map needs more room than the old one freed.
    with site.log.open("a") as log:
        for index in range(4000):
            address = f"10.{index // 250}.{index % 250}.1"
            log.write(dovecot_login(address, f"user{index}", time="2026-11-25T18:59:00+00:00") + "\n")
    filler = fill(small_filesystem)
    result = site.run(ENDED, "update")
    assert_one_line(result, f"map {site.map}: no room on its filesystem: removed it", "defer")
    assert not site.relays(ADDRESS)
    database = site.database()
    assert not (database or site.map).exists()
    assert site.leftovers() == []
    filler.unlink()
    again = site.run(LATER, "update")
    assert again.returncode == 0, again.stderr
    assert site.relays("10.0.0.1") and not site.relays(ADDRESS)


def test_a_map_that_holds_no_ended_lease_is_kept_when_there_is_no_room(
    site: FullDiskSite, small_filesystem: Path
) -> None:
    with site.log.open("a") as log:
        log.write(dovecot_login("192.0.2.11", time="2026-11-25T18:04:00+00:00") + "\n")
    filler = fill(small_filesystem)
    result = site.run(STILL_LEASED, "update")
    assert_one_line(result, f"map {site.map}: no room on its filesystem: kept it as it was")
    assert site.relays(ADDRESS) and not site.relays("192.0.2.11")
    filler.unlink()
    again = site.run(STILL_LEASED, "update")
    assert again.returncode == 0, again.stderr
    assert site.relays(ADDRESS) and site.relays("192.0.2.11")


@pytest.mark.parametrize("site", ["postfix"], indirect=True)
def test_a_flush_that_cannot_be_saved_fails_and_still_ends_relay(
    site: FullDiskSite, small_filesystem: Path
) -> None:
    filler = fill(small_filesystem)
    result = site.run(STILL_LEASED, "flush", ADDRESS)
    assert_one_line(result, "flush not recorded", "leases.json", f"map {site.map}: no room")
    assert not site.relays(ADDRESS)
    filler.unlink()
    # Told so, the admin flushes again; it holds from then on.
    assert site.run(STILL_LEASED, "flush", ADDRESS).returncode == 0
    assert site.run(STILL_LEASED, "update").returncode == 0
    assert not site.relays(ADDRESS)


@pytest.mark.parametrize("site", ["postfix"], indirect=True)
def test_an_add_that_cannot_be_saved_grants_nothing(site: FullDiskSite, small_filesystem: Path) -> None:
    fill(small_filesystem)
    result = site.run(STILL_LEASED, "add", "192.0.2.99")
    assert result.returncode == 73, result.stderr
    assert "add not recorded" in result.stderr and result.stderr.count("\n") == 1
    assert not site.relays("192.0.2.99") and site.relays(ADDRESS)


@pytest.mark.parametrize("site", ["postfix"], indirect=True)
def test_a_run_killed_once_the_old_map_is_removed_leaves_no_relay(
    site: FullDiskSite, small_filesystem: Path
) -> None:
    filler = fill(small_filesystem)
    killed = site.run(ENDED, "update", EXACTCRON_KILL_AT=f"{site.map.name}:removed-for-room")
    assert killed.returncode == -9, killed.stderr
    assert not site.relays(ADDRESS)
    filler.unlink()
    again = site.run(LATER, "update")
    assert again.returncode == 0, again.stderr
    assert site.map.exists() and not site.relays(ADDRESS)
    assert site.leftovers() == []


def test_no_room_is_told_by_errno_room_left_or_a_quota_message(
    tmp_path: Path, small_filesystem: Path
) -> None:
    from exactcron.outputs.maps import _lacks_room

    assert _lacks_room(StateWriteError("cannot write", 28), tmp_path, b"")
    assert _lacks_room(StateWriteError("cannot write", 122), tmp_path, b"")
    assert not _lacks_room(StateWriteError("cannot write", 13), tmp_path, b"")
    # tmp_path has room: a tool's failure counts only when it names a lack of room.
    assert _lacks_room(MapBuildError("postmap failed: write: Disk quota exceeded"), tmp_path, b"")
    assert not _lacks_room(MapBuildError("postmap failed: bad key"), tmp_path, b"")
    # Less room than the build needs: whatever the tool said.
    assert _lacks_room(MapBuildError("postmap failed: exit status 1"), small_filesystem, b"x" * (1 << 20))
    assert not _lacks_room(MapBuildError("postmap failed: exit status 1"), small_filesystem, b"x")
