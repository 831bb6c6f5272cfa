"""status and show: what the state says, read without the lock (state files are
only ever replaced whole)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from exactcron.commands.common import opened
from exactcron.config import Config, SourceConfig
from exactcron.model import Lease
from exactcron.outputs.health import FollowerRecord, RunRecord
from exactcron.sources.base import SourceCheckpoint
from exactcron.sources.open import open_source
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState


def current_leases(config: Config, now: datetime) -> list[Lease]:
    """Leases in force now. Reads without the lock: the file is only ever replaced whole."""
    with opened(config, repair=False) as (_, store):
        return store.snapshot(now).leases


@dataclass
class SourceStatus:
    path: Path
    checkpoint: SourceCheckpoint | None
    unread_bytes: int | None
    # False for a source whose unread bytes cannot be known (a journal).
    counts_bytes: bool = True


@dataclass
class Status:
    sources: list[SourceStatus]
    last_run: dict[str, Any] | None
    leases: int
    warnings: list[str] = field(default_factory=list)
    # `[guard]`: users refused for too many addresses within the window, and shared addresses.
    over_limit: list[dict[str, Any]] = field(default_factory=list)
    shared: list[dict[str, Any]] = field(default_factory=list)
    # The newest `update --follow` (None: none has run), and whether it runs now.
    follower: FollowerRecord | None = None
    follower_running: bool = False


def status(config: Config, now: datetime) -> Status:
    with opened(config, repair=False) as (state, store):
        return _status(config, state, store, now)


def _status(config: Config, state: LocalState, store: LeaseStore, now: datetime) -> Status:
    saved = state.load_checkpoints(repair=False)
    leases = len(store.snapshot(now).leases)
    found = Status(source_statuses(config.sources, saved), state.load_last_run(), leases, store.warnings(now))
    claim = FollowerRecord.from_json(state.load_follower())
    found.follower = newest_follower(claim, RunRecord.from_json(found.last_run).follower)
    found.follower_running = claim is not None and claim.until > now and _alive(claim.pid)
    rules = config.guard
    if rules.enabled:
        guard = store.guard_state(now)
        found.over_limit = guard.over_limit(now, rules)
        found.shared = guard.shared(now, rules)
        found.warnings += [
            f"{entry['address']} is shared: {entry['users']} users logged in from it within the guard's"
            f" window (more than max_users_per_address = {rules.max_users_per_address})"
            + ("; refused" if rules.refuse_shared else "; set refuse_shared = true to refuse it")
            for entry in found.shared
        ]
    return found


def newest_follower(claim: FollowerRecord | None, recorded: FollowerRecord | None) -> FollowerRecord | None:
    """The newest follower (its claim), with the figures its steps recorded:
    none yet when the record's are another follower's."""
    if claim is None:
        return recorded
    return recorded if recorded is not None and claim.same(recorded) else claim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    except OSError:
        return False
    return True


def source_statuses(sources: Sequence[SourceConfig], saved: dict[str, dict[str, Any]]) -> list[SourceStatus]:
    statuses = []
    for source in sources:
        read = open_source(source, saved.get(str(source.path)))
        statuses.append(SourceStatus(source.path, read.checkpoint, read.unread_bytes(), read.counts_bytes))
    return statuses
