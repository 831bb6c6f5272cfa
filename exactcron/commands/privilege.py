"""Who runs a command that writes state: the owner of `state_dir`, always.

Started as root, exactcron becomes that owner (its group and supplementary
groups) before it reads or writes anything, so no run leaves a file the
cron job cannot write; started as anyone else, it refuses (exit 77).
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from exactcron.errors import NotOwnerError, StateWriteError
from exactcron.users import user_name


def state_owner(state_dir: Path) -> tuple[int, int]:
    """(uid, gid) of `state_dir`, or of its nearest existing parent while it is missing."""
    for candidate in (state_dir, *state_dir.parents):
        try:
            status = os.stat(candidate)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise StateWriteError(f"cannot examine {candidate}: {error.strerror}") from None
        return status.st_uid, status.st_gid
    return 0, 0


def become_state_owner(state_dir: Path) -> None:
    """Switch to the owner of `state_dir` when root; refuse any other user but the owner."""
    uid, gid = state_owner(state_dir)
    current = os.geteuid()
    if current == uid:
        return
    name = user_name(uid)
    if current != 0:
        raise NotOwnerError(
            f"{state_dir} belongs to {name}; run this as {name} (runuser -u {name} -- exactcron ...) or as root"
        )
    _hand_over_root_files(state_dir, uid, gid)
    _load_code()
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        os.setgroups([])
    else:
        gid = entry.pw_gid
        os.initgroups(entry.pw_name, gid)
        os.environ["HOME"] = entry.pw_dir
    os.setgid(gid)
    os.setuid(uid)


# Imported where first needed by some run; loaded here before the switch too.
_LOADED_LATE = (
    "subprocess",
    "shutil",
    "hashlib",
    "zoneinfo",
    "traceback",
    "tempfile",
    "signal",
    "json",
    "glob",
    "ctypes",
    "dateutil.tz",
    "psycopg",
    "click",
)


def _load_code() -> None:
    """Import all of exactcron, and what it imports late, while still root.

    The code may live where only root can read (a checkout or a virtual
    environment under /root): after the switch, a module imported for the
    first time would fail to load half-way through a run.
    """
    import importlib
    import pkgutil

    import exactcron

    names = [
        info.name
        for info in pkgutil.walk_packages(exactcron.__path__, "exactcron.")
        if not info.name.endswith("__main__")  # it runs the command line
    ]
    for name in (*names, *_LOADED_LATE):
        try:
            importlib.import_module(name)
        except Exception:  # an optional library missing or broken: the run says so if it needs it
            continue


def _hand_over_root_files(state_dir: Path, uid: int, gid: int) -> None:
    """Give the owner the state files an earlier run as root left behind.

    The owner may replace them anyway (it owns the directory); it could not read them.
    Only files with one link: the owner could have hard-linked any root file here.
    """
    try:
        entries = list(os.scandir(state_dir))
    except OSError:
        return
    for entry in entries:
        try:
            status = entry.stat(follow_symlinks=False)
            if status.st_uid == 0 and stat.S_ISREG(status.st_mode) and status.st_nlink == 1:
                os.chown(entry.path, uid, gid, follow_symlinks=False)
        except OSError:
            continue
