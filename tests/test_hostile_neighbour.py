"""A hostile neighbour: the owner of state_dir, or a member of a directory's group,
plants a name where exactcron writes. Whatever it plants (a symbolic link, a
hard link, a FIFO, a directory), no command, run as root or as the owner,
writes outside, blocks, grants, or loses a flush.

The owner of state_dir (here `nobody`) plants in state_dir; a member of the
group of the map, log and metrics directories (here `daemon`, of group
`daemon`) plants there. Needs root to switch users (CI runs as root).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.maps import postmap_query
from tests.support.site import Site
from tests.support.tools import require_root, require_tool
from tests.support.users import PACKAGES, SYSTEM_PYTHON, shared_root

ROOT = Path(__file__).resolve().parent.parent
FLUSHED = "192.0.2.10"
VICTIM_TEXT = b"root's file\n"
# Each command of the interface that opens a file, read-only ones included.
COMMANDS = (
    ("show",),
    ("status",),
    ("check",),
    ("check", "MAIL_LOG"),
    ("render",),
    ("update",),
    ("flush", "198.51.100.7"),
    ("add", "198.51.100.8", "--for", "5m"),
)
KINDS = ("symlink", "hardlink", "fifo", "directory")
# The names exactcron writes or appends to, by directory. The metrics file's
# temporary name was `.NAME.<pid>.tmp`: planted for the PIDs to come.
PLANTED = {
    "state": ("checkpoints.json", "last-run.json", "maps.json", "rebuild-from-logs", "trust.json"),
    "lock": ("lock",),
    "leases": ("leases.json",),
    "maps": ("relay", "relay.db"),
    "log": ("exactcron.log",),
    "metrics": ("exactcron.prom", "PIDS"),
}
PID_NAMES = 1500


@dataclass
class PlantableSite:
    root: Path
    state: Path
    maps: Path
    logs: Path
    metrics: Path
    outside: Path

    @property
    def victim(self) -> Path:
        return self.outside / "victim"

    def run(self, user: str | None, *arguments: str) -> subprocess.CompletedProcess[str]:
        """exactcron as `user` (None: root), with the group adm that reads the mail log."""
        switch: list[str] = []
        if user is not None:
            group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
            switch = ["setpriv", f"--reuid={user}", f"--regid={group}", "--groups=adm"]
        command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(self.root / "exactcron.toml")]
        command += ["--now", NOW]
        arguments = tuple(str(self.root / "mail.log") if each == "MAIL_LOG" else each for each in arguments)
        environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(self.root / "lib")}
        # A FIFO that blocked an open would hang here: the timeout fails the test.
        return subprocess.run(
            [*switch, *command, *arguments],
            capture_output=True,
            text=True,
            env=environment,
            cwd="/",
            timeout=60,
        )

    def granted(self, address: str) -> bool:
        lookup = postmap_query(self.maps / "relay", address)
        return lookup.stdout == "OK\n"

    def outside_untouched(self) -> None:
        assert sorted(path.name for path in self.outside.iterdir()) == ["victim"]
        assert self.victim.read_bytes() == VICTIM_TEXT
        assert self.victim.stat().st_uid == 0


@pytest.fixture
def site() -> Iterator[PlantableSite]:
    require_root("to switch users")
    require_tool("setpriv")
    require_tool("postmap")
    with shared_root("exactcron-hostile-", PACKAGES[:2]) as root:
        log = root / "mail.log"
        log.write_text(dovecot_login(FLUSHED, time="2026-11-25T17:50:00+00:00") + "\n")
        os.chown(log, 0, grp.getgrnam("adm").gr_gid)
        log.chmod(0o640)
        nobody = pwd.getpwnam("nobody")
        daemon_group = grp.getgrnam("daemon").gr_gid
        state, maps, logs, metrics, outside = (
            root / name for name in ("state", "maps", "logs", "metrics", "x")
        )
        state.mkdir(mode=0o755)
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        for directory in (maps, logs, metrics):
            directory.mkdir()
            os.chown(directory, nobody.pw_uid, daemon_group)
            directory.chmod(0o775)  # a group whose members may plant names
        outside.mkdir(mode=0o755)
        (outside / "victim").write_bytes(VICTIM_TEXT)
        (outside / "victim").chmod(0o644)
        (root / "exactcron.toml").write_text(
            f'state_dir = "{state}"\nlog_file = "{logs / "exactcron.log"}"\n'
            f'metrics_file = "{metrics / "exactcron.prom"}"\n'
            f'[[source]]\npath = "{log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
            f'[[map]]\nmta = "postfix"\npath = "{maps / "relay"}"\ntype = "hash"\n'
        )
        yield PlantableSite(root, state, maps, logs, metrics, outside)


def plant(site: PlantableSite, directory: Path, name: str, kind: str, planter: str) -> None:
    path = directory / name
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if kind == "symlink":
        # A link to a file of root's, or to a name root would create.
        target = site.victim if name.endswith((".json", ".log", "lock")) else site.outside / f"new-{name}"
        os.symlink(target, path)
    elif kind == "hardlink":
        os.link(site.victim, path)
    elif kind == "fifo":
        os.mkfifo(path, 0o666)
    else:
        path.mkdir()
    user = pwd.getpwnam(planter)
    if kind != "hardlink":  # the link is root's file; only its name was planted
        os.lchown(path, user.pw_uid, user.pw_gid)


def next_pids(count: int) -> range:
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    return range(last + 1, last + 1 + count)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", sorted(PLANTED))
def test_no_planted_name_makes_any_command_write_outside_grant_or_lose_a_flush(
    site: PlantableSite, where: str, kind: str
) -> None:
    granted = site.run("nobody", "update")
    assert (granted.returncode, granted.stderr) == (0, "")
    assert site.granted(FLUSHED)
    flushed = site.run("nobody", "flush", FLUSHED)
    assert flushed.returncode == 0, flushed.stderr
    assert not site.granted(FLUSHED)
    directory = {"state": site.state, "lock": site.state, "leases": site.state}.get(where)
    directory = directory or {"maps": site.maps, "log": site.logs, "metrics": site.metrics}[where]
    planter = "nobody" if directory == site.state else "daemon"
    for name in PLANTED[where]:
        if name == "PIDS":
            for pid in next_pids(PID_NAMES):
                plant(site, directory, f".exactcron.prom.{pid}.tmp", kind, planter)
        else:
            plant(site, directory, name, kind, planter)
    for command in COMMANDS:
        for user in (None, "nobody"):
            result = site.run(user, *command)
            assert result.returncode != 70, (user, command, result.stderr)
            assert "Traceback" not in result.stderr, (user, command, result.stderr)
            site.outside_untouched()
    site.run("nobody", "update")
    site.outside_untouched()
    if where != "leases":  # the owner who replaced the lease file threw its records away itself
        assert not site.granted(FLUSHED)


def test_show_as_root_never_creates_a_file_through_a_log_file_link(site: PlantableSite) -> None:
    """Reproduction: the service account points log_file at /etc/x; root runs `show`."""
    os.symlink(site.outside / "x", site.logs / "exactcron.log")
    os.lchown(site.logs / "exactcron.log", pwd.getpwnam("nobody").pw_uid, -1)
    for command in (("show",), ("status",), ("check",), ("check", "MAIL_LOG")):
        result = site.run(None, *command)
        assert "cannot open log_file" in result.stderr, (command, result.stderr)
        assert "symbolic link" in result.stderr
        site.outside_untouched()


def test_a_read_only_command_as_root_runs_as_the_owner(site: PlantableSite) -> None:
    """What `show` appends to log_file, it appends as the owner of state_dir."""
    assert site.run(None, "check").returncode in (0, 66)
    assert (site.logs / "exactcron.log").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_check_as_root_reads_a_log_the_owner_cannot(site: PlantableSite) -> None:
    (site.root / "mail.log").chmod(0o600)  # root's alone
    result = site.run(None, "check", "MAIL_LOG")
    assert result.returncode == 0, result.stderr
    assert f"would grant: {FLUSHED}" in result.stdout


def test_metrics_temporary_names_planted_for_the_next_pids_never_receive_the_metrics(
    site: PlantableSite,
) -> None:
    """Reproduction: a member of the metrics directory's group links the next PIDs'
    temporary names to the lease file; the flush record must survive."""
    assert site.run("nobody", "update").returncode == 0
    assert site.run("nobody", "flush", FLUSHED).returncode == 0
    leases = site.state / "leases.json"
    for pid in next_pids(PID_NAMES):
        name = site.metrics / f".exactcron.prom.{pid}.tmp"
        os.symlink(leases, name)
        os.lchown(name, pwd.getpwnam("daemon").pw_uid, -1)
    result = site.run("nobody", "update")
    assert (result.returncode, result.stderr) == (0, "")
    assert b"flushed" in leases.read_bytes() and FLUSHED.encode() in leases.read_bytes()
    assert site.run("nobody", "update").returncode == 0
    assert not site.granted(FLUSHED)


def test_a_fifo_at_a_log_sources_path_hangs_no_command_and_the_maps_are_still_pruned(
    make_site: Callable[..., Site],
) -> None:
    # A member of the syslog group replaces the mail log with a FIFO; nobody ever writes to it.
    site = make_site()
    site.write_log(dovecot_login("192.0.2.20", time="2026-11-25T17:50:00+00:00"))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(now: str, *arguments: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "exactcron", "--config", str(site.config), "--now", now, *arguments]
        return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=60)

    assert run("2026-11-25T18:00:00+00:00", "update").returncode == 0
    site.log.unlink()
    os.mkfifo(site.log)
    updated = run("2026-11-25T18:30:00+00:00", "update")
    assert updated.returncode == 66
    assert (
        updated.stderr
        == f"exactcron: cannot read log {site.log}: not a regular file (a FIFO); refusing it (a log is a regular file)\n"
    )
    # The lease ended at 18:20: gone from the map although the source could not be read.
    lookup = postmap_query(site.map, "192.0.2.20")
    assert lookup.stdout == ""
    for arguments in (("status",), ("check",), ("show",)):
        assert run("2026-11-25T18:30:00+00:00", *arguments).returncode in (0, 1)
