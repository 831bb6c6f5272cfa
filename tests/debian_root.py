"""A Debian 12 root of the test's own, to install the package into.

`debootstrap --variant=minbase bookworm` takes minutes, so the finished root is
kept as a tarball under ~/.cache/exactcron/roots/; a fresh machine builds it on
first use. The tarball is written under a temporary name and renamed into
place only once complete, so a build killed half-way is never used.

Commands run in the root through `unshare --mount --pid --fork --mount-proc`:
the /proc they see is mounted in a namespace of their own and vanishes with
them, so no mount is ever left behind on the host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from tests.conftest import require_tool

SUITE = "bookworm"
CACHE = Path(os.environ.get("EXACTCRON_ROOTS_CACHE", Path.home() / ".cache" / "exactcron" / "roots"))
# Debian's tools, not pyenv's python3 that may come first on the caller's PATH.
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# What the package depends on, plus Postfix for the default map's postmap,
# logrotate to check the shipped logrotate file and systemd for
# `systemd-analyze verify --root`: all present before the package comes, so
# `dpkg -i` needs no network.
INCLUDE = (
    "adduser",
    "systemd",
    "init-system-helpers",
    "python3-click",
    "python3-dateutil",
    "python3-filelock",
    "postfix",
    "logrotate",
)


def debian_environment(**extra: str) -> dict[str, str]:
    """A clean environment for Debian's tools: no pyenv, no PYTHONPATH, no locale surprises."""
    environment = {"PATH": DEBIAN_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    environment.update(extra)
    return environment


def cached_root_tarball() -> Path:
    """The tarball of a finished minbase root, built on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # A change to what the root holds names a new tarball; the old one is unused.
    contents = hashlib.sha256(",".join(INCLUDE).encode()).hexdigest()[:12]
    tarball = CACHE / f"{SUITE}-{contents}.tar.zst"
    with FileLock(str(CACHE / f"{SUITE}.lock")):
        if not tarball.exists():
            _build_root_tarball(tarball)
    return tarball


def _build_root_tarball(tarball: Path) -> None:
    debootstrap = require_tool("debootstrap")
    require_tool("zstd")
    with tempfile.TemporaryDirectory(prefix="exactcron-debootstrap-", dir=CACHE) as work:
        root = Path(work) / "root"
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(INCLUDE)}",
                SUITE,
                str(root),
                "http://deb.debian.org/debian",
            ],
            check=True,
            env=debian_environment(DEBIAN_FRONTEND="noninteractive"),
            stdout=subprocess.DEVNULL,
        )
        # Nothing in the root is left to download again; keep the tarball small.
        for leftover in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            leftover.unlink()
        partial = tarball.with_name(tarball.name + ".partial")
        subprocess.run(
            ["tar", "--zstd", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            env=debian_environment(),
        )
        os.replace(partial, tarball)


def unpack_root(destination: Path) -> Path:
    """A fresh copy of the cached root at `destination`."""
    tarball = cached_root_tarball()
    destination.mkdir()
    subprocess.run(
        ["tar", "--zstd", "--numeric-owner", "--xattrs", "-C", str(destination), "-xf", str(tarball)],
        check=True,
        env=debian_environment(),
    )
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
