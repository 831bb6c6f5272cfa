"""`check`'s test of the running user's rights: every file and tool an update will need.

Asks the kernel (access(2) with the effective ids), so the answer is the
one the cron job gets when `check` runs as the cron user.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from exactcron.config import Config
from exactcron.errors import LogUnreadableError, MapBuildError, StateWriteError
from exactcron.outputs.maps import missing_tool_message
from exactcron.sources.open import open_source


@dataclass(frozen=True)
class Missing:
    """One right or tool an update needs and does not have."""

    message: str
    exit_code: int


def missing(config: Config) -> list[Missing]:
    """What the current user lacks to run `update` with `config`, in the order an update needs it."""
    problems: list[Missing] = []
    unreadable = LogUnreadableError.exit_code
    for source in config.sources:
        problems += [Missing(message, unreadable) for message in open_source(source).missing()]
    problems += _writable_directory(config.state_dir, "state_dir", create=True)
    for number, spec in enumerate(config.maps, start=1):
        if spec.path.parent != config.state_dir:  # else made with state_dir, and checked above
            problems += _writable_directory(spec.path.parent, f"the directory of map {spec.path}")
        absent = [tool for tool in _tools(spec.mta, spec.type) if shutil.which(tool) is None]
        if absent:
            message = missing_tool_message(" and ".join(absent), spec, number, config.path)
            problems.append(Missing(message, MapBuildError.exit_code))
    if config.log_file is not None:
        problems += _writable_file(config.log_file, "log_file")
    if config.metrics_file is not None:
        problems += _writable_directory(
            config.metrics_file.parent, f"the directory of metrics_file {config.metrics_file}"
        )
    # Several maps in one directory need saying once.
    return list(dict.fromkeys(problems))


def cron_user(config: Config) -> tuple[str, int, int] | None:
    """The user the cron job runs as (the owner of state_dir) when that is not
    the one running `check` as root: (name, uid, gid); else None."""
    if os.geteuid() != 0:
        return None
    try:
        owner = config.state_dir.stat().st_uid
    except OSError:
        return None
    if owner == 0:
        return None
    import pwd

    try:
        entry = pwd.getpwuid(owner)
    except KeyError:
        return None
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def missing_as(config: Config, user: tuple[str, int, int]) -> list[Missing]:
    """`missing(config)` as `user` (with its groups): root passes every test,
    the cron job's user may not. Needs root."""
    import json

    name, uid, gid = user
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover -- the child reports through the pipe
        status = 1
        try:
            os.close(reading)
            os.initgroups(name, gid)
            os.setgid(gid)
            os.setuid(uid)
            found = [[problem.message, problem.exit_code] for problem in missing(config)]
            os.write(writing, json.dumps(found).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writing)
    with os.fdopen(reading, "rb") as stream:
        answer = stream.read()
    _, status = os.waitpid(child, 0)
    if status != 0:
        raise StateWriteError(f"cannot test the rights of user {name} (exit status {status})")
    return [Missing(message, code) for message, code in json.loads(answer)]


def _tools(mta: str, map_type: str | None) -> list[str]:
    if mta == "sendmail":
        return ["makemap"]
    if mta == "postfix":
        if map_type == "texthash":
            return []
        return ["postmap"] if map_type else ["postconf", "postmap"]
    return []


def _writable_directory(directory: Path, what: str, create: bool = False) -> list[Missing]:
    code = StateWriteError.exit_code
    if not directory.exists():
        if not create:
            return [Missing(f"{what}: {directory} does not exist", code)]
        # Created on the first update: its nearest existing parent must be writable.
        parent = next((each for each in directory.parents if each.exists()), Path("/"))
        if not _can(parent, os.W_OK | os.X_OK):
            return [Missing(f"{what}: cannot create {directory} (no write permission in {parent})", code)]
        return []
    if not directory.is_dir():
        return [Missing(f"{what}: {directory} is not a directory", code)]
    if not _can(directory, os.W_OK | os.X_OK):
        return [Missing(f"{what}: cannot write in {directory}", code)]
    return []


def _writable_file(path: Path, what: str) -> list[Missing]:
    if path.exists():
        if _can(path, os.W_OK):
            return []
        return [Missing(f"{what}: cannot write {path}", StateWriteError.exit_code)]
    return _writable_directory(path.parent, f"{what} {path}")


def _can(path: Path, mode: int) -> bool:
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
