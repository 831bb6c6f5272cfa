"""For `update --follow`: wait, without spending CPU, until a source or a file may have changed.

Linux inotify through libc (ctypes: no dependency, nothing compiled), so an
idle follower sleeps in poll(2) until the kernel says a watched name was
written, created, renamed or removed, or until its own next due moment. Where
inotify cannot be had (another kernel, no libc symbol, the instance or watch
limits reached, a directory it may not read), `open_inotify` gives None and
the follower falls back to looking with os.stat (follow.py).

What is watched: a log file's directory for names only (its own and its
rotated copies', which begin with its name: made, renamed, removed) and the
log file itself for writes (its inode: lines written to it after it was
renamed out of the directory still wake the follower); the state directory's
follower file. A journal source is watched by a `journalctl --follow` of its
units, whose output only wakes. An event only wakes the follower: what
changed is read again from the files by a full step, never taken from the
event. Only a write to the live log file itself (the inode the last arming
found at its name) may wake its own `grown` key instead of the source's: the
follower then looks at the new bytes first (sources/peek.py); every other
event of the file (its renaming, removal, a change of its owner or mode) and
a write to a rotated copy wake the source's key.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from exactcron.sources.base import SourceSettings

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

# A name made, renamed or removed in a directory; with CONTENT_EVENTS, any write too.
NAME_EVENTS = IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
CONTENT_EVENTS = IN_MODIFY | IN_ATTRIB
FILE_EVENTS = IN_MODIFY | IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF

_EVENT = struct.Struct("iIII")
PR_SET_PDEATHSIG = 1

# Between the end of a step and the start of the next one a change wakes:
# the lines written meanwhile are read together. journald itself tells of
# its writes at most every 250 ms, and each step of a journal runs journalctl.
STEP_GAP_SECONDS = 0.2
JOURNAL_GAP_SECONDS = 0.4

# Which names of a watched directory matter: a predicate on the name's bytes.
NameFilter = Callable[[bytes], bool]


class Inotify:
    """One inotify instance; the watches on it, each with the key it wakes."""

    def __init__(self, fd: int, add_watch: Callable[[int, bytes, int], int]) -> None:
        self.fd = fd
        self._add_watch = add_watch
        # Per watch descriptor: (key, which names count; None: the watched file
        # itself, and then the key its writes wake, if other).
        self._watches: dict[int, list[tuple[str, NameFilter | None, str | None]]] = {}
        # Per `grown` key, the watch of the file its writes are peeked at (the live log).
        self._grown: dict[str, int] = {}
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        # Pipes whose output wakes a key (a `journalctl --follow`), and those that ended.
        self._streams: dict[int, str] = {}
        self.ended: set[int] = set()

    def watch_stream(self, fd: int, key: str) -> None:
        """Wake `key` whenever `fd` (a pipe) has something to read; its end wakes it too."""
        os.set_blocking(fd, False)
        self._streams[fd] = key
        self._poll.register(fd, select.POLLIN)

    def watch_directory(self, path: Path, key: str, names: NameFilter, writes: bool = True) -> bool:
        """Wake `key` for events on the names of directory `path` that `names`
        accepts: their making, renaming and removal, and with `writes` their writes."""
        events = NAME_EVENTS | (CONTENT_EVENTS if writes else 0)
        return self._add(path, IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK | events, key, names) is not None

    def watch_file(self, path: Path, key: str, grown: str | None = None) -> bool:
        """Wake `key` for writes to the file `path` names now, wherever it is renamed to;
        with `grown`, its writes (nothing else) wake `grown` instead, until
        another file is watched for that key."""
        if grown is not None:
            self._grown.pop(grown, None)
        descriptor = self._add(path, IN_DONT_FOLLOW | FILE_EVENTS, key, None, grown)
        if descriptor is not None and grown is not None:
            self._grown[grown] = descriptor
        return descriptor is not None

    def _add(
        self, path: Path, mask: int, key: str, names: NameFilter | None, grown: str | None = None
    ) -> int | None:
        descriptor = self._add_watch(self.fd, os.fsencode(path), mask)
        if descriptor < 0:
            return None
        # The same inode watched again gives the same descriptor: one entry per key.
        entries = self._watches.setdefault(descriptor, [])
        kept = [entry for entry in entries if entry[0] != key or (entry[1] is None) != (names is None)]
        entries[:] = [*kept, (key, names, grown)]
        return descriptor

    def wait(self, timeout: float) -> set[str] | None:
        """The keys woken within `timeout` seconds (empty: none); None when events
        were lost (the queue overflowed), so anything may have changed."""
        ready = self._poll.poll(max(0, round(timeout * 1000)))
        if not ready:
            return set()
        woken: set[str] = set()
        for fd, _ in ready:
            if fd in self._streams:
                self._drain(fd, woken)
        if not any(fd == self.fd for fd, _ in ready):
            return woken
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return woken
            except InterruptedError:
                continue
            if self._parse(data, woken):
                return None
            if len(data) < 4096:
                return woken

    def _drain(self, fd: int, woken: set[str]) -> None:
        """Read what the pipe holds (only that it spoke counts); at its end, stop watching it."""
        key = self._streams[fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError:
                data = b""
            woken.add(key)
            if not data:
                self._poll.unregister(fd)
                del self._streams[fd]
                self.ended.add(fd)
                return

    def _parse(self, data: bytes, woken: set[str]) -> bool:
        """Add the keys `data`'s events wake; True when the queue overflowed."""
        offset = 0
        while offset + _EVENT.size <= len(data):
            descriptor, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & IN_Q_OVERFLOW:
                return True
            if mask & IN_IGNORED:
                # The watched file or directory is gone: watched again after the next step.
                self._watches.pop(descriptor, None)
                continue
            for key, names, grown in self._watches.get(descriptor, ()):
                if names is not None:
                    if names(name):
                        woken.add(key)
                elif (
                    grown is not None
                    and mask & FILE_EVENTS == IN_MODIFY
                    and self._grown.get(grown) == descriptor
                ):
                    woken.add(grown)  # a write to the live log, nothing else
                else:
                    woken.add(key)
        return False

    def close(self) -> None:
        os.close(self.fd)


def open_inotify() -> Inotify | None:
    """An inotify instance, or None where there is none (then the follower polls)."""
    try:
        # The interpreter's own symbols hold libc's; ctypes.util.find_library would run ldconfig.
        libc = ctypes.CDLL(None, use_errno=True)
        init = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    init.argtypes = [ctypes.c_int]
    init.restype = ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    fd = init(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        return None
    return Inotify(fd, add_watch)


def log_names(path: Path) -> NameFilter:
    """The log's own name and its rotated copies' (mail.log.1, mail.log-20261206.gz)."""
    own = os.fsencode(path.name)
    return lambda name: name.startswith(own)


def exactly(wanted: str) -> NameFilter:
    own = os.fsencode(wanted)
    return lambda name: name == own


def step_gap(settings: SourceSettings) -> float:
    """The least time between two steps that a change of this source wakes."""
    return JOURNAL_GAP_SECONDS if settings.journal else STEP_GAP_SECONDS


def watch_source(
    inotify: Inotify,
    settings: SourceSettings,
    key: str,
    followers: dict[str, subprocess.Popen[bytes]],
    grown: str | None = None,
) -> bool:
    """Watch what `settings` reads; False when it cannot be watched (then it is polled).

    A journal: a `journalctl --follow` of its units, started once (kept in
    `followers`, by source), whose every line wakes `key`: only the entries
    of those units wake the follower, not the rest of a busy journal.
    A log file's writes wake `grown` instead, when given (a journal has none)."""
    if settings.journal:
        name = str(settings.path)
        process = followers.get(name)
        if process is None:
            process = follow_journal(settings)
            if process is None or process.stdout is None:
                return False
            followers[name] = process
            inotify.watch_stream(process.stdout.fileno(), key)
        assert process.stdout is not None
        return process.stdout.fileno() not in inotify.ended
    path = settings.path
    # The folder for the names only: the other logs beside it (syslog) are
    # written as often as this one, and their writes would wake the follower.
    if not inotify.watch_directory(path.parent, key, log_names(path), writes=False):
        return False
    # A symlinked `path` (the source reads through it): the writes and the
    # rotation happen at its target, in the target's folder.
    target = Path(os.path.realpath(path))
    if target != path and not inotify.watch_directory(target.parent, key, log_names(target), writes=False):
        return False
    # The writes: to the file itself (its inode), wherever it is renamed to
    # (rsyslog writes to mail.log.1 until it reopens; logrotate's `olddir`).
    # Watched before each step reads it: a file made since wakes by its name.
    inotify.watch_file(target, key, grown)
    return True


def follow_journal(settings: SourceSettings) -> subprocess.Popen[bytes] | None:
    """`journalctl --follow` of the source's units, from now on, one line per entry
    (the entries themselves are read by the step, never from here); None when it
    cannot start. It dies with the follower (PR_SET_PDEATHSIG): a follower
    killed leaves no process behind."""
    # Imported only here: a follower of log files never pays for the journal's module.
    from exactcron.sources.journal import journalctl

    binary = journalctl()
    if binary is None:
        return None
    command = [binary, "--follow", "--lines=0", "--output=cat", "--no-pager", "--quiet"]
    if settings.journal_directory is not None:
        command.append(f"--directory={settings.journal_directory}")
    command += [f"_SYSTEMD_UNIT={unit}" for unit in sorted(settings.journal)]
    try:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # Safe here: the follower runs no thread of its own.
            preexec_fn=_dies_with(os.getpid()),
        )
    except OSError:
        return None


def stop_followers(followers: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in followers.values():
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
    followers.clear()


def _dies_with(parent: int) -> Callable[[], None]:
    def set_death_signal() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # the follower is already gone

    return set_death_signal
