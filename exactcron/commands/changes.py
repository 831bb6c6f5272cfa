"""flush, add and render: the changes an admin makes by hand, under the run's lock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from exactcron.commands.common import collect, known_leases, opened, reported
from exactcron.commands.failclosed import begin_leases, install_maps
from exactcron.config import Config
from exactcron.errors import ExactcronError, MapNoRoomError
from exactcron.logs import log
from exactcron.model import Lease
from exactcron.outputs import audit
from exactcron.stores.base import LeaseStore


def _change_leases(config: Config, now: datetime, change: Callable[[LeaseStore], Any], what: str) -> Any:
    """Apply `change(store)` under the lock, then save leases and rewrite maps."""
    with opened(config) as (state, store), state.locked(config.lock_wait.total_seconds()):
        begin_leases(config, state, store, now)
        before = known_leases(store)
        stored = {lease.address for lease in store.last_known(now)}
        outcome = change(store)
        for address in store.prune(now, config.timeout, config.ignore):
            audit.lease_expired(now, before.get(address), address)
        errors: list[ExactcronError] = []
        saved = collect(errors, store.save)
        if saved:
            active = store.snapshot(now).leases
        else:
            # Not saved: a revoked address leaves the maps all the same, an added one does not enter.
            active = [lease for lease in store.last_known(now) if lease.address in stored]
        install_maps(config.maps, state, [lease.address for lease in active], errors)
        if not saved:
            # The maps hold what the store last knew, the change included when
            # it revokes (fail closed); but the next run reads the store as saved.
            # One line: that the change is lost, and what a map out of room holds now.
            maps = "; ".join(str(error) for error in errors[1:] if isinstance(error, MapNoRoomError))
            message = f"{what} not recorded: {errors[0]}; run it again once it can be" + (
                f"; {maps}" if maps else ""
            )
            for other in errors[1:]:
                log.info("also failed: %s", other)
            # The store's own error type: its exit code (73 for the lease file, 75 for the shared store).
            raise type(errors[0])(message)
        if errors:
            raise reported(errors)
        return outcome


def flush(config: Config, now: datetime, addresses: list[str] | None, by: str | None = None) -> list[str]:
    """Revoke the leases of `addresses` (all when None); return those that held one."""

    def change(store: LeaseStore) -> list[str]:
        held = known_leases(store)
        revoked = store.flush(addresses, now)
        if addresses is None:
            audit.record(now, "flush", "all", by=by, revoked=str(len(revoked)))
        for address in revoked if addresses is None else addresses:
            lease = held.get(address)
            user = lease.user if lease is not None and lease.expires > now else None
            audit.record(now, "flush", address, user=user, by=by)
        return revoked

    return _change_leases(config, now, change, "flush")  # type: ignore[no-any-return]


def add(config: Config, now: datetime, address: str, duration: timedelta, by: str | None = None) -> Lease:
    def change(store: LeaseStore) -> Lease:
        lease = store.add(address, now, duration)
        audit.record(now, "add", address, until=audit.utc_stamp(lease.expires), by=by)
        return lease

    return _change_leases(config, now, change, "add")  # type: ignore[no-any-return]


def render(config: Config, now: datetime) -> list[Path]:
    """Rewrite every map from the current leases, whether or not it changed."""
    with opened(config) as (state, store), state.locked(config.lock_wait.total_seconds()):
        errors: list[ExactcronError] = []
        if begin_leases(config, state, store, now):
            # The broken file is set aside: store the (empty) leases, so that `show` agrees.
            collect(errors, store.save)
        addresses = [lease.address for lease in store.snapshot(now).leases]
        install_maps(config.maps, state, addresses, errors, force=True)
        if errors:
            raise reported(errors)
        return [spec.path for spec in config.maps]
