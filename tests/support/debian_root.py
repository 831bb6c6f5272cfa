"""Debian roots for the tests: cached debootstrap roots, viewed or copied.

Two users: the end-to-end tests run servers of another release in a
``RootView`` of a cached root (below); the package tests install the .deb
into a copy of their own of a Debian 12 root (``unpack_root``, at the end).

Servers from another Debian release: a cached debootstrap root, run through chroot.

``cached_root`` builds ``debootstrap --variant=minbase SUITE`` plus the
servers' packages once and keeps it under ~/.cache/exactcron/roots/SUITE.  It
is built in a temporary directory beside it and renamed into place only when
complete, under a lock, so a build that was killed is never used: the next run
removes it and starts over.

``RootView`` runs programs of such a root without ever changing it: a process
of its own holds a private mount namespace in which an overlay (the cached
root below, a per-test directory on top) gets /proc and the test's work
directory bind-mounted at the same path as outside, so that file names mean
the same on both sides.  Programs enter that namespace and the root with
``nsenter``; the network namespace stays the machine's, so a server in the
root listens on the test bridge like one outside it.  Every mount lives only
in that namespace, never in the machine's own mount table, and vanishes when
its last process exits.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

try:
    from tests.e2e.harness import HarnessError, binary, run, stop_popen, tail, wait_until, which
    from tests.support.tools import require_tool
except ImportError:  # tests/ itself on sys.path (see tests/test_e2e.py)
    from e2e.harness import (  # type: ignore[no-redef,import-not-found,unused-ignore]
        HarnessError,
        binary,
        run,
        stop_popen,
        tail,
        wait_until,
        which,
    )

    from support.tools import require_tool  # type: ignore[no-redef,import-not-found,unused-ignore]

ROOTS_CACHE = Path(os.environ.get("EXACTCRON_ROOTS_CACHE") or Path.home() / ".cache" / "exactcron" / "roots")
# Written last, holding the package list: a root without it, or built for
# other packages, is rebuilt.
COMPLETE = ".exactcron-complete"
# Debian's build and package tools expect Debian's own directories first.
_CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class RootSpec:
    suite: str
    packages: tuple[str, ...]
    # The cache directory's name: two roots of one suite need two names.
    name: str = ""
    # Packages only downloaded, into DEBS_INSIDE: ones that conflict with an
    # installed one, for a test to install in its own throwaway view.
    debs: tuple[str, ...] = ()

    @property
    def cache_name(self) -> str:
        return self.name or self.suite

    @property
    def stamp(self) -> str:
        words = ["debootstrap", "--variant=minbase", self.suite, *self.packages]
        if self.debs:
            words += ["download:", *self.debs]
        return " ".join(words) + "\n"


# Debian 13: Dovecot 2.4.1.
TRIXIE = RootSpec("trixie", ("dovecot-pop3d", "dovecot-imapd", "rsyslog"))

DEBS_INSIDE = "/var/cache/exactcron-debs"

# Debian 12's own small POP3 servers, run as Debian runs them: standalone and
# from an inetd behind tcp_wrappers (tests/test_e2e_pop3d.py).  Their own
# cache name: the package tests' bookworm root below is another list.  The
# three conflict (each provides and popa3d and solid-pop3d conflict with
# pop3-server): mailutils-pop3d is installed, popa3d and solid-pop3d are
# downloaded, with everything they depend on installed, so that a test's
# view swaps one in with dpkg alone, offline.
BOOKWORM_POP3D = RootSpec(
    "bookworm",
    (
        "mailutils-pop3d",
        "openbsd-inetd",
        "tcpd",
        "rsyslog",
        # popa3d's and solid-pop3d's dependencies
        "adduser",
        "update-inetd",
        "debconf",
        "libpam0g",
        "libpam-runtime",
        "liblockfile1",
        "lsb-base",
        "netbase",
        "init-system-helpers",
    ),
    name="bookworm-pop3d",
    debs=("popa3d", "solid-pop3d"),
)


def build_problems() -> list[str]:
    """Why this machine cannot build or enter a root; empty when it can."""
    needed = ("debootstrap", "chroot", "nsenter", "unshare", "mount", "umount")
    missing = [name for name in needed if which(name) is None]
    if missing:
        return ["missing binaries: " + ", ".join(missing) + " (apt-get install debootstrap util-linux mount)"]
    return []


def cached_root(spec: RootSpec, cache: Path = ROOTS_CACHE) -> Path:
    """The root for ``spec``, built first if the cache has no complete one."""
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / spec.cache_name
    with FileLock(str(cache / f"{spec.cache_name}.lock"), timeout=_BUILD_TIMEOUT + 60):
        if _is_complete(final, spec):
            return final
        for leftover in [final, *cache.glob(f"{spec.cache_name}.partial-*")]:
            remove_root(leftover)
        partial = Path(tempfile.mkdtemp(prefix=f"{spec.cache_name}.partial-", dir=cache))
        try:
            partial.chmod(0o755)  # it becomes "/": servers' users must traverse it
            _build(partial, spec)
            partial.rename(final)
        except BaseException:
            remove_root(partial)
            raise
    return final


def _is_complete(root: Path, spec: RootSpec) -> bool:
    try:
        return (root / COMPLETE).read_text() == spec.stamp
    except OSError:
        return False


def _build(target: Path, spec: RootSpec) -> None:
    # Mirror left to debootstrap's default: Debian's own archive.
    run([binary("debootstrap"), "--variant=minbase", spec.suite, target], timeout=_BUILD_TIMEOUT)
    # Package scripts must not start the servers (system configuration,
    # system ports) while the root is being built, nor ever after.
    policy = target / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    env = {"PATH": _CHROOT_PATH, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    chroot = [binary("chroot"), str(target)]
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *spec.packages]
    run([*chroot, *install], env=env, timeout=_BUILD_TIMEOUT)
    if spec.debs:
        (target / DEBS_INSIDE.lstrip("/")).mkdir(parents=True)
        # As root into a root-owned directory: apt says it cannot drop to _apt, and goes on.
        download = f"cd {DEBS_INSIDE} && apt-get download -q " + " ".join(spec.debs)
        run([*chroot, "/bin/sh", "-c", download], env=env, timeout=_BUILD_TIMEOUT)
    run([*chroot, "apt-get", "clean"], env=env)
    (target / COMPLETE).write_text(spec.stamp)


def _mount_points_under(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    prefix = str(path.resolve())
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        for row in handle:
            # Field 5 is the mount point, with space, tab, newline and
            # backslash written as octal escapes.
            point = row.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_root(path: Path) -> None:
    """Delete a root; first unmount what a killed debootstrap left mounted in it.

    Deleting through a still-mounted /proc or /sys would reach the machine's
    own, so nothing is deleted while a mount remains.
    """
    if not path.exists():
        return
    for point in _mount_points_under(path):
        run([binary("umount"), "--lazy", point], check=False)
    left = _mount_points_under(path)
    if left:
        raise HarnessError(f"cannot remove {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path)


# Ends as the root's own ``sleep``, chrooted: entering this process's mount
# namespace and root (nsenter -m -r) then lands inside the root, even for a
# caller that is itself in a chroot (setns would put it at the namespace's
# real root, the machine's).
_NAMESPACE_SCRIPT = r"""
set -e
chroot=$1; lower=$2; upper=$3; work=$4; merged=$5; shared=$6; ready=$7
mount -t overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" exc-e2e-root "$merged"
mount -t proc exc-e2e-proc "$merged/proc"
mkdir -p "$merged$shared"
mount --bind "$shared" "$merged$shared"
touch "$ready"
exec "$chroot" "$merged" /bin/sleep infinity
"""


class RootView:
    """A throwaway, writable view of a cached root; see the module's docstring.

    ``shared`` (an absolute directory) appears at the same path inside.
    """

    def __init__(self, root: Path, directory: Path, shared: Path) -> None:
        self.root = root
        self.directory = directory
        self.shared = shared.resolve()
        self.merged = directory / "merged"
        self.output = directory / "namespace.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        upper, work, ready = self.directory / "upper", self.directory / "work", self.directory / "ready"
        for path in (upper, work, self.merged):
            path.mkdir(parents=True, exist_ok=True)
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [binary("unshare"), "--mount", "--propagation", "private", "--",
                 "/bin/sh", "-c", _NAMESPACE_SCRIPT, "exc-e2e-root", binary("chroot"),
                 str(self.root), str(upper), str(work), str(self.merged), str(self.shared), str(ready)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = self.proc

        def mounted() -> bool:
            if proc.poll() is not None:
                raise HarnessError(
                    f"mount namespace for {self.root} exited {proc.returncode}:\n{tail(self.output)}"
                )
            return ready.exists()

        try:
            wait_until(f"the view of {self.root}", mounted, timeout=10.0)
        except BaseException:
            self.stop()
            raise

    def binary(self, name: str) -> str:
        """A program's path inside the root."""
        for directory in _CHROOT_PATH.split(":"):
            inside = f"{directory}/{name}"
            if os.access(self.root / inside.lstrip("/"), os.X_OK):
                return inside
        raise HarnessError(f"{name} not found in {self.root}")

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command line that runs it inside the root.

        nsenter takes the namespace, root and working directory of the
        process holding the view and execs (no fork for a mount namespace),
        so the pid of the command started is the program's own.
        """
        if self.proc is None or self.proc.poll() is not None:
            raise HarnessError(f"the view of {self.root} is not running")
        return [binary("nsenter"), "-t", str(self.proc.pid), "-m", "-r", "-w", "--", *argv]

    def stop(self) -> None:
        # The namespace, and with it every mount, goes when its last process
        # does: callers stop the servers they started inside first.
        stop_popen(self.proc, f"mount namespace for {self.root}")


# The package tests' root: `debootstrap --variant=minbase bookworm` plus what
# the package needs, cached by `cached_root`. Each test works on a copy of its
# own (`unpack_root`) where dpkg installs, upgrades and purges, and removes it
# with `remove_root`. Commands run in the copy through `unshare --mount --pid
# --fork --mount-proc`: the /proc they see lives in a namespace of their own
# and vanishes with them, so no mount is ever left behind on the host.

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
