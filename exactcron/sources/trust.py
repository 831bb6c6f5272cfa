"""Who wrote a log line: the checks that come before any rule reads it.

A rule can only say what a line claims. Whether it counts depends on who
could have written it: a log file the server writes itself counts only while
nobody but root and the server's user can write it or its directory; an
rsyslog-written line counts only when rsyslog's own record of the sender
(the uid imuxsock takes from the socket's credentials) names a trusted user.
The host field is checked by the line parser (rules.LineParser.hosts).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

from exactcron.errors import ConfigError
from exactcron.users import user_name

# What the template in docs/security.md appends to every line, from rsyslog's
# trusted properties ($!uid, $!pid with imuxsock's ParseTrusted): only
# digits, after whatever the sender wrote, so the last one is rsyslog's own.
# A line from the network carries no uid and never counts.
_SENDER = re.compile(rb" @\[uid=(\d{1,10}) pid=\d{1,10}\]$")


def user_id(name: str, key: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"{key}: no such user {name!r}") from None


class SenderFilter:
    """Keeps the lines rsyslog received from one of `uids`, without rsyslog's suffix."""

    def __init__(self, uids: Iterable[int]) -> None:
        self.uids = frozenset(uids)
        self.refused = 0

    def accept(self, line: bytes) -> bytes | None:
        found = _SENDER.search(line)
        if found is None or int(found.group(1)) not in self.uids:
            self.refused += 1
            return None
        return line[: found.start()]

    def block(self, block: bytes) -> bytes:
        """The accepted lines of a block of whole lines, each ending in LF."""
        kept = (self.accept(line) for line in block[:-1].split(b"\n"))
        return b"".join(line + b"\n" for line in kept if line is not None)


class ForgeableLogError(ConfigError):
    """A server-written log (or a place it is read from) others can write: its lines could be forged."""


def check_written_by(
    path: Path, writer: str, rotated_in: Iterable[Path] = (), rotated_files: Iterable[Path] = ()
) -> None:
    """Refuse a server's own log file that anyone but root and `writer` can write.

    Checked: the file (its real path, through any symlink), each rotated copy
    found (`rotated_files`), and every directory whose entries are read as
    the log or its rotated copies: the one holding the name configured, the
    one holding the real file, `rotated_in` (olddir, the fixed part of the
    `rotated` globs) and those holding each rotated copy, each as named and
    as a symlink leads. Whoever can write a directory can replace the files
    in it. Every directory above them must be owned by root or `writer` and
    not writable by every user (unless sticky), or it could be swapped whole.
    Raises ForgeableLogError naming what is wrong.
    """
    allowed = {0, user_id(writer, f"written_by of {path}")}
    copies = [Path(os.path.abspath(copy)) for copy in rotated_files]
    files = [Path(os.path.realpath(path)), *(Path(os.path.realpath(copy)) for copy in copies)]
    named = [
        Path(os.path.abspath(path)).parent,
        *(Path(os.path.abspath(directory)) for directory in rotated_in),
        *(copy.parent for copy in copies),
    ]
    # Ordered and each once: the same directory is often reached several ways.
    directories = list(
        dict.fromkeys(
            [
                *named,
                *(Path(os.path.realpath(directory)) for directory in named),
                *(file.parent for file in files),
            ]
        )
    )
    for target in (*directories, *files):
        _refuse_other_writers(target, _status(target), allowed, writer)
    for above in dict.fromkeys(parent for directory in directories for parent in directory.parents):
        status = _status(above)
        if status is not None and (
            status.st_uid not in allowed
            or (status.st_mode & stat.S_IWOTH and not status.st_mode & stat.S_ISVTX)
        ):
            _refuse(above, _other_writers(status, allowed) or "another user", writer)


def _status(target: Path) -> os.stat_result | None:
    try:
        return os.stat(target)
    except FileNotFoundError:
        return None  # being rotated: the directory's check stands
    except OSError as error:
        raise ConfigError(f"{target}: cannot check who may write it: {error.strerror}") from None


def _refuse_other_writers(
    target: Path, status: os.stat_result | None, allowed: set[int], writer: str
) -> None:
    others = _other_writers(status, allowed) if status is not None else None
    if others:
        _refuse(target, others, writer)


def _refuse(target: Path, others: str, writer: str) -> NoReturn:
    trusted = "root" if writer == "root" else f"root and {writer}"
    raise ForgeableLogError(
        f"{target} can be written by {others}, not only by {trusted}, "
        f"so its lines could be forged; refusing it (chown root or {writer}, chmod go-w)"
    )


def _other_writers(status: os.stat_result, allowed: set[int]) -> str | None:
    if status.st_mode & stat.S_IWOTH:
        return "every user"
    if status.st_uid not in allowed:
        return f"its owner {user_name(status.st_uid)}"
    if status.st_mode & stat.S_IWGRP:
        members = _group_members(status.st_gid) - allowed
        if members:
            return f"the members of group {_group_name(status.st_gid)}"
    return None


def _group_members(gid: int) -> set[int]:
    """The uids in a group: its listed members and the users whose primary group it is."""
    uids = {user.pw_uid for user in pwd.getpwall() if user.pw_gid == gid}
    try:
        names = grp.getgrgid(gid).gr_mem
    except KeyError:
        return uids | {-1}  # an unknown group: assume strangers
    for name in names:
        try:
            uids.add(pwd.getpwnam(name).pw_uid)
        except KeyError:
            uids.add(-1)
    return uids


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
