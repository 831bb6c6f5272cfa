"""Least privilege: exactcron runs as an unprivileged user, as cron.d/exactcron has it.

The user (here `nobody`) owns the state directory and reads the mail log
through group adm. Without that group the log is unreadable: exit 66,
naming the file. Needs root to switch users (CI runs as root).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import filelock
import pytest

from tests.conftest import dovecot_login, require_tool

ROOT = Path(__file__).resolve().parent.parent
# The Debian interpreter: the test's own may live where `nobody` cannot read.
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def site() -> Iterator[Path]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; this test switches users")
        pytest.skip("needs root to switch users")
    require_tool("setpriv")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is missing")
    root = Path(tempfile.mkdtemp(prefix="exactcron-privilege-"))
    try:
        root.chmod(0o755)
        library = root / "lib"
        for package in (ROOT / "exactcron", Path(click.__file__).parent, Path(filelock.__file__).parent):
            shutil.copytree(package, library / package.name, ignore=shutil.ignore_patterns("__pycache__"))
        log = root / "mail.log"
        log.write_text(dovecot_login("192.0.2.10", time="2026-11-25T17:50:00+00:00") + "\n")
        os.chown(log, 0, grp.getgrnam("adm").gr_gid)
        log.chmod(0o640)
        state = root / "state"
        state.mkdir(mode=0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        (root / "exactcron.toml").write_text(
            f'state_dir = "{state}"\n'
            f'[[source]]\npath = "{log}"\nserver = "dovecot"\n'
            f'[[map]]\nmta = "postfix"\npath = "{state / "relay"}"\ntype = "hash"\n'
        )
        yield root
    finally:
        shutil.rmtree(root)


def update_as_nobody(site: Path, *groups: str) -> subprocess.CompletedProcess[str]:
    return run_as_nobody(site, "update", groups=groups)


def run_as_nobody(
    site: Path, *args: str, groups: tuple[str, ...] = (), path: str = "/usr/sbin:/usr/bin:/sbin:/bin"
) -> subprocess.CompletedProcess[str]:
    switch = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    switch += [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(site / "exactcron.toml")]
    command += ["--now", "2026-11-25T18:00:00+00:00", *args]
    environment = {"PATH": path, "PYTHONPATH": str(site / "lib")}
    return subprocess.run([*switch, *command], capture_output=True, text=True, env=environment, cwd="/")


def test_without_the_adm_group_the_log_is_unreadable_and_named(site: Path) -> None:
    require_tool("postmap")
    result = update_as_nobody(site)
    assert result.returncode == 66
    assert result.stderr == f"exactcron: cannot read log {site / 'mail.log'}: permission denied\n"


def test_as_a_member_of_adm_it_grants_and_writes_a_map_only_it_can_change(site: Path) -> None:
    require_tool("postmap")
    result = update_as_nobody(site, "adm")
    assert (result.returncode, result.stderr) == (0, "")
    relay = site / "state" / "relay"
    assert relay.read_text() == "192.0.2.10 OK\n"
    nobody = pwd.getpwnam("nobody").pw_uid
    for path in (relay, Path(f"{relay}.db")):
        status = path.stat()
        assert status.st_uid == nobody
        assert status.st_mode & 0o777 == 0o644  # the MTA reads it; no one else writes it
    leases = (site / "state" / "leases.json").stat()
    assert leases.st_mode & 0o777 == 0o640


def test_check_says_the_cron_user_cannot_read_the_log_without_adm(site: Path) -> None:
    require_tool("postmap")
    result = run_as_nobody(site, "check")
    assert (result.returncode, result.stdout, result.stderr) == (
        66,
        "",
        f"exactcron: as user nobody: cannot read log {site / 'mail.log'}\n",
    )
    granted = run_as_nobody(site, "check", groups=("adm",))
    assert (granted.returncode, granted.stdout, granted.stderr) == (
        0,
        f"{site / 'exactcron.toml'}: OK (1 sources)\n",
        "",
    )


def test_check_names_every_right_and_tool_the_cron_user_lacks(site: Path) -> None:
    require_tool("postmap")
    maps = site / "maps"
    maps.mkdir(mode=0o755)  # root's: the cron user cannot write there
    (site / "state").chmod(0o555)
    os.chown(site / "state", 0, 0)
    config = site / "exactcron.toml"
    config.write_text(
        config.read_text()
        + f'[[map]]\nmta = "sendmail"\npath = "{maps / "access"}"\n'
        + f'[[source]]\npath = "{site / "missing.log"}"\nserver = "dovecot"\n'
    )
    result = run_as_nobody(site, "check", groups=("adm",), path="/usr/bin:/bin")
    assert result.returncode == 66
    assert result.stdout == ""
    assert result.stderr == (
        f"exactcron: as user nobody: log {site / 'missing.log'} does not exist\n"
        f"exactcron: as user nobody: state_dir: cannot write in {site / 'state'}\n"
        "exactcron: as user nobody: postmap not found on PATH (/usr/bin:/bin), "
        f"needed for map {site / 'state' / 'relay'}\n"
        f"exactcron: as user nobody: the directory of map {maps / 'access'}: cannot write in {maps}\n"
        "exactcron: as user nobody: makemap not found on PATH (/usr/bin:/bin), "
        f"needed for map {maps / 'access'}\n"
    )


def test_check_run_as_root_tests_the_rights_of_the_owner_of_state_dir(site: Path) -> None:
    require_tool("postmap")
    command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(site / "exactcron.toml"), "check"]
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site / "lib")}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/")
    # nobody is in no group that may read the log (it is root:adm 0640).
    assert (result.returncode, result.stdout, result.stderr) == (
        66,
        "",
        f"exactcron: as user nobody: cannot read log {site / 'mail.log'}\n",
    )
    (site / "mail.log").chmod(0o644)
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/")
    assert (result.returncode, result.stderr) == (0, "")
