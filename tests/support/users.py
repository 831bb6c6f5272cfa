"""exactcron run as another user: a folder every user can read, the package copied into it."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
import filelock
import pytest

from tests.support.lines import dovecot_login
from tests.support.tools import require_root, require_tool

REPOSITORY = Path(__file__).resolve().parent.parent.parent
# The Debian interpreter: the test's own may live where `nobody` cannot read.
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = (REPOSITORY / "exactcron", Path(click.__file__).parent, Path(filelock.__file__).parent)


@contextmanager
def shared_root(prefix: str, packages: Sequence[Path] = PACKAGES) -> Iterator[Path]:
    """A temporary folder any user may read, with `packages` under lib/ for PYTHONPATH; removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o755)
        for package in packages:
            shutil.copytree(
                package, root / "lib" / package.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        yield root
    finally:
        shutil.rmtree(root)


def state_dir_of_nobody(root: Path) -> Path:
    """`root/state`, mode 0755, owned by nobody: the state directory of a run as nobody."""
    state = root / "state"
    state.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    return state


@contextmanager
def nobody_site(prefix: str) -> Iterator[Path]:
    """A site of the documented set-up: `nobody` owns the state, the log is root:adm 0640."""
    require_root("to switch users")
    require_tool("setpriv")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.fail(f"{SYSTEM_PYTHON} is missing")
    with shared_root(prefix) as root:
        log = root / "mail.log"
        log.write_text(dovecot_login("192.0.2.10", time="2026-11-25T17:50:00+00:00") + "\n")
        os.chown(log, 0, grp.getgrnam("adm").gr_gid)
        log.chmod(0o640)
        state = state_dir_of_nobody(root)
        (root / "exactcron.toml").write_text(
            f'state_dir = "{state}"\n'
            f'[[source]]\npath = "{log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
            f'[[map]]\nmta = "postfix"\npath = "{state / "relay"}"\ntype = "hash"\n'
        )
        yield root


def run_as_nobody(
    site: Path, *args: str, groups: tuple[str, ...] = (), path: str = "/usr/sbin:/usr/bin:/sbin:/bin"
) -> subprocess.CompletedProcess[str]:
    switch = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    switch += [f"--groups={','.join(groups)}"] if groups else ["--clear-groups"]
    command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(site / "exactcron.toml")]
    command += ["--now", "2026-11-25T18:00:00+00:00", *args]
    environment = {"PATH": path, "PYTHONPATH": str(site / "lib")}
    return subprocess.run([*switch, *command], capture_output=True, text=True, env=environment, cwd="/")


def run_as(
    site: Path,
    user: str | None,
    *arguments: str,
    now: str = "2026-11-25T18:00:00+00:00",
    groups: tuple[str, ...] = ("adm",),
) -> subprocess.CompletedProcess[str]:
    """exactcron as `user` (None: root, as an administrator types it)."""
    switch: list[str] = []
    if user is not None:
        group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
        switch = ["setpriv", f"--reuid={user}", f"--regid={group}", f"--groups={','.join(groups)}"]
    command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(site / "exactcron.toml"), "--now", now]
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site / "lib")}
    return subprocess.run(
        [*switch, *command, *arguments], capture_output=True, text=True, env=environment, cwd="/"
    )
