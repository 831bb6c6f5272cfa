"""Configuration faults: a configuration that cannot be loaded still prunes the
maps, and every wrong value exits 78 naming its key (never 70, never a traceback)."""

from __future__ import annotations

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
# exactcron with the default state directory moved to argv[1] (the real one,
# /var/lib/exactcron, is the installed package's).
WITH_DEFAULT_STATE_DIR = (
    "import sys, exactcron.config as config; config.DEFAULT_STATE_DIR = sys.argv.pop(1); "
    "from exactcron.cli import main; main(prog_name='exactcron')"
)
LOGIN_AT = "2026-11-25T17:50:00+00:00"  # with timeout 30m, the lease ends at 18:20
IN_FORCE = "2026-11-25T18:00:00+00:00"
ENDED = "2026-11-25T18:30:00+00:00"


@pytest.fixture
def site() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch users and make a root-owned configuration")
    require_tool("setpriv")
    require_tool("postmap")
    root = Path(tempfile.mkdtemp(prefix="exactcron-config-faults-"))
    try:
        root.chmod(0o755)
        library = root / "lib"
        for package in (ROOT / "exactcron", Path(click.__file__).parent, Path(filelock.__file__).parent):
            shutil.copytree(package, library / package.name, ignore=shutil.ignore_patterns("__pycache__"))
        log = root / "mail.log"
        log.write_text(dovecot_login("192.0.2.10", time=LOGIN_AT) + "\n")
        log.chmod(0o644)
        state = root / "state"
        state.mkdir(mode=0o755)
        nobody = pwd.getpwnam("nobody")
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        config = root / "exactcron.toml"
        config.write_text(
            f'state_dir = "{state}"\ntimeout = "30m"\n'
            f'[[source]]\npath = "{log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
            f'[[map]]\nmta = "postfix"\npath = "{state / "relay"}"\ntype = "hash"\n'
        )
        config.chmod(0o644)
        yield root
    finally:
        shutil.rmtree(root)


def update_as_nobody(site: Path, now: str, default_state_dir: Path) -> subprocess.CompletedProcess[str]:
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", SYSTEM_PYTHON]
    command += ["-c", WITH_DEFAULT_STATE_DIR, str(default_state_dir)]
    command += ["--config", str(site / "exactcron.toml"), "--now", now, "update"]
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site / "lib")}
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/", check=False)


def relays(site: Path, address: str) -> bool:
    """Whether Postfix's lookup in the installed map answers OK for `address`."""
    found = subprocess.run(
        ["postmap", "-q", address, f"hash:{site / 'state' / 'relay'}"], capture_output=True, text=True
    )
    return found.returncode == 0 and found.stdout.strip() == "OK"


def _unreadable(config: Path) -> None:
    os.chown(config, 0, 0)
    config.chmod(0o600)


def _missing(config: Path) -> None:
    config.rename(config.with_name("moved-away.toml"))


def _not_toml(config: Path) -> None:
    with config.open("a") as stream:
        stream.write("[[source]\nthis is not = = TOML\n")


def _a_directory(config: Path) -> None:
    config.unlink()
    config.mkdir()


def _a_nul_byte(config: Path) -> None:
    with config.open("a") as stream:
        stream.write('log_file = "/tmp/x\0y"\n')


@pytest.mark.parametrize(
    ("fault", "names_its_state_dir"),
    [
        (_unreadable, False),
        (_missing, False),
        (_a_directory, False),
        (_not_toml, True),
        (_a_nul_byte, True),
    ],
)
def test_a_configuration_that_cannot_be_loaded_still_ends_the_leases_in_the_maps(
    site: Path, fault: object, names_its_state_dir: bool
) -> None:
    state = site / "state"
    granted = update_as_nobody(site, IN_FORCE, state)
    assert (granted.returncode, granted.stderr) == (0, "")
    assert relays(site, "192.0.2.10")
    assert callable(fault)
    fault(site / "exactcron.toml")
    # Unreadable, missing or a directory: the default state directory is where the
    # state lives. Otherwise the one the configuration still names.
    default = site / "no-such-state" if names_its_state_dir else state
    for _ in range(2):  # every run, not only the first
        failed = update_as_nobody(site, ENDED, default)
        assert failed.returncode == 78, failed.stderr
        assert failed.stderr.count("\n") == 1 and failed.stderr.startswith("exactcron: "), failed.stderr
        assert "Traceback" not in failed.stderr
        assert not relays(site, "192.0.2.10")
    assert (state / "relay").read_text() == ""
