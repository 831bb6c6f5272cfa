"""A Debian 12 root of the test's own, to install the package into.

The root is `debootstrap --variant=minbase bookworm` plus what the package
needs, built once and cached by tests/e2e/debian_root.py (under
~/.cache/exactcron/roots/bookworm, renamed into place only when complete, so
a build killed half-way is never used). Each test works on a copy of it of
its own: dpkg installs, upgrades and purges there.

Commands run in the copy through `unshare --mount --pid --fork --mount-proc`:
the /proc they see is mounted in a namespace of their own and vanishes with
them, so no mount is ever left behind on the host.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import require_tool
from tests.e2e.debian_root import RootSpec, cached_root

# Debian's tools, not pyenv's python3 that may come first on the caller's PATH.
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What the package depends on, plus Postfix for the default map's postmap,
# logrotate to check the shipped logrotate file and systemd to boot the root
# (`systemd-nspawn --boot`, `systemd-analyze verify --root`): all present
# before the package comes, so `dpkg -i` needs no network.
BOOKWORM = RootSpec(
    "bookworm",
    (
        "adduser",
        "systemd",
        "systemd-sysv",
        "cron",
        "init-system-helpers",
        "python3-click",
        "python3-dateutil",
        "python3-filelock",
        "postfix",
        "logrotate",
    ),
)


def debian_environment(**extra: str) -> dict[str, str]:
    """A clean environment for Debian's tools: no pyenv, no PYTHONPATH, no locale surprises."""
    environment = {"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    environment.update(extra)
    return environment


def unpack_root(destination: Path) -> Path:
    """A fresh, writable copy of the cached root at `destination`."""
    for tool in ("debootstrap", "chroot"):
        require_tool(tool)
    source = cached_root(BOOKWORM)
    destination.mkdir()
    subprocess.run(["cp", "-a", f"{source}/.", str(destination)], check=True, env=debian_environment())
    return destination


def run_in_root(
    root: Path, command: Sequence[str], *, check: bool = True, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `command` chrooted into `root`, with a private /proc that disappears with it."""
    unshare = require_tool("unshare")
    return subprocess.run(
        [
            unshare,
            "--mount",
            "--pid",
            "--fork",
            f"--mount-proc={root / 'proc'}",
            "chroot",
            str(root),
            *command,
        ],
        check=check,
        capture_output=True,
        text=True,
        env=environment or debian_environment(DEBIAN_FRONTEND="noninteractive"),
    )


def remove_root(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
