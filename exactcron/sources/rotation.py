"""Rotation naming: which files are rotated copies of a log, where they are
looked for, and the cheap signature of them all that the quiet run compares.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exactcron.sources.compressed import SUFFIXES

# The part logrotate puts between a log's name and a compression suffix: a
# number (`rotate`, `start`), or the date of `dateext` as any `dateformat`
# writes it (`-%Y%m%d`, `.%Y-%m-%d`, `_%Y%m%d%H%M%S`, `-%s`). Without a
# separator, only a whole date (`%Y%m%d`, 8 digits or more): `mail2.log` is
# another log, not a rotated `mail.log`.
_ROTATION = r"(?:\.\d{1,6}|[-._@+]\d(?:[\d\-_.:+@T]{0,40}\d)?|\d{8}(?:[\d\-_.:+@T]{0,40}\d)?)"
_COMPRESSION = "(?:" + "|".join(re.escape(suffix) for suffix in SUFFIXES) + ")?"
# A numbered copy's number, once the suffixes are off: the smaller, the newer.
_NUMBERED = re.compile(r"\.(\d{1,6})")


class RotatedNames:
    """Which names in a directory are rotated copies of one log.

    `mail.log` rotates to `mail.log.1`, `mail.log-20261125` (any `dateformat`)
    and, with logrotate's `extension .log` (or `addextension`), to
    `mail.1.log` and `mail-20261125.log`; each perhaps compressed.
    """

    def __init__(self, name: str) -> None:
        stem, dot, extension = name.rpartition(".")
        forms = [re.escape(name) + _ROTATION]
        if dot and stem:
            forms.append(re.escape(stem) + _ROTATION + re.escape("." + extension))
        self._source = "(?:" + "|".join(forms) + ")" + _COMPRESSION
        self._pattern: re.Pattern[str] | None = None
        # What every rotated name starts with (either form): the name, or its stem.
        self._prefix = stem if dot and stem else name
        self._extension = "." + extension if dot and stem else ""
        self._name = name

    def match(self, candidate: str) -> bool:
        if candidate == self._name or not candidate.startswith(self._prefix):
            return False
        if self._pattern is None:
            # Compiled for the first name that may be a rotated copy: a listing
            # with none (no copy rotated yet, or all in olddir) compiles nothing.
            self._pattern = re.compile(self._source)
        return self._pattern.fullmatch(candidate) is not None

    def number(self, candidate: str) -> int | None:
        """The rotation number of `path.N` (or `path.N.ext`), None for a dated copy."""
        for suffix in SUFFIXES:
            candidate = candidate.removesuffix(suffix)
        if candidate.startswith(self._name):
            rest = candidate[len(self._name) :]
        else:
            rest = candidate.removesuffix(self._extension)[len(self._name) - len(self._extension) :]
        found = _NUMBERED.fullmatch(rest)
        return int(found.group(1)) if found else None


def rotated_directories(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Path]:
    """Every directory whose entries may be read as rotated copies of the log at `path`:
    its own (beside the name configured, not the file a symlink leads to: logrotate
    renames the name it is given), `olddir`, and the fixed part of each `rotated` glob."""
    directories = [path.parent] + ([olddir] if olddir is not None else [])
    for pattern in rotated:
        directory = Path(pattern).parent
        while any(character in str(directory) for character in "*?["):
            directory = directory.parent
        directories.append(directory)
    return directories


def rotated_candidates(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Path]:
    """The names read as rotated copies of the log at `path`, if they are files: its
    siblings named as logrotate names them, beside it and in `olddir`, and what the
    `rotated` globs name."""
    names = RotatedNames(path.name)
    found: list[Path] = []
    for directory in [path.parent] + ([olddir] if olddir is not None else []):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        found += [Path(entry.path) for entry in entries if names.match(entry.name)]
    seen = set(found)
    found += [globbed for globbed in _globbed(rotated, path) if globbed not in seen]
    return found


def files_signature(path: Path, olddir: Path | None = None, rotated: Sequence[str] = ()) -> list[Any] | None:
    """The identity, size and times of a log and of its rotated siblings, as JSON values.

    Equal signatures mean nothing was written, renamed, truncated or
    created since: reading from the checkpoint would find nothing new. None
    when a directory cannot be listed: then what changed is unknown.
    """
    signature: list[Any] = []
    names = RotatedNames(path.name)
    for directory in [path.parent] + ([olddir] if olddir else []):
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            return None
        for entry in entries:
            if entry.name != path.name and not names.match(entry.name):
                continue
            signature.append(_file_state(entry.path))
    signature += [_file_state(str(found)) for found in _globbed(rotated, path)]
    return signature


def _file_state(path: str) -> list[Any]:
    try:
        status = os.stat(path)
    except OSError as error:
        return [path, error.errno]
    return [
        path,
        status.st_dev,
        status.st_ino,
        status.st_mode,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    ]


def _globbed(patterns: Sequence[str], live: Path) -> list[Path]:
    """The files the `rotated` globs name, sorted, without the live log itself."""
    if not patterns:
        return []
    import glob  # only for a source with `rotated`

    found = {Path(name) for pattern in patterns for name in glob.glob(pattern)}
    found.discard(live)
    return sorted(found)
