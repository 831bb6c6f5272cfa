"""The fail-closed install: whatever breaks, the maps keep no address beyond its lease.

Every map install goes through `install_maps`; every way out of a failure
(a store that cannot be read or loaded, a run that broke, a configuration
that cannot be loaded or a `mynetworks` that cannot be read) through
`fail_closed`, each naming the leases it trusts, best first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

from exactcron.atomic import remove_leftovers
from exactcron.commands.common import collect
from exactcron.config import Config, MapConfig
from exactcron.errors import ExactcronError
from exactcron.logs import log
from exactcron.model import Lease
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState


def install_maps(
    maps: Sequence[MapConfig],
    state: LocalState,
    addresses: Sequence[str],
    errors: list[ExactcronError],
    force: bool = False,
) -> list[Path]:
    """Rewrite the maps whose content differs from `addresses` (normalized, sorted),
    or whose files are not those installed last (every map, with `force`).

    A map that fails leaves its error in `errors`; the others are still written.
    """
    from exactcron.outputs.maps import MapRecord, MapWriter

    writer = MapWriter()
    record = MapRecord(state.directory)
    written = []
    for spec in maps:
        # Under the lock, a temporary file beside the map is a killed run's.
        remove_leftovers(spec.path)
        try:
            if writer.install(spec, addresses, force, record):
                written.append(spec.path)
        except ExactcronError as error:
            errors.append(error)
    collect(errors, lambda: record.save(maps))
    return written


def fail_closed(maps: Sequence[MapConfig], state: LocalState, *leases: Callable[[], Iterable[Lease]]) -> None:
    """The one way out of a failure: install the maps with the first of `leases`
    that can be read (each a fallback for the one before; when none can, no
    address at all). Never raises: the failure that led here is the one reported,
    and the install's own errors go to the log."""
    addresses: list[str] = []
    for read in leases:
        try:
            addresses = [lease.address for lease in read()]
            break
        except Exception as error:
            log.info("also failed: %s", error)
    errors: list[ExactcronError] = []
    try:
        install_maps(maps, state, addresses, errors)
    except Exception as error:
        log.info("also failed: %s", error)
    for each in errors:
        log.info("also failed: %s", each)


def begin_leases(config: Config, state: LocalState, store: LeaseStore, now: datetime) -> bool:
    """Load the leases under the lock; True when they were lost (a broken file set aside).

    Leases that cannot be read justify no relay beyond what the store last
    gave (for the lease file: nothing): the maps keep only those still in
    force (fail closed) and the error is raised. Lost leases are rebuilt from
    the logs by the next update, whichever command found them lost: that is
    remembered.
    """
    try:
        lost = store.begin()
    except ExactcronError:
        fail_closed(config.maps, state, lambda: store.last_known(now))
        raise
    if lost:
        state.request_rebuild()
    return lost


def salvage_maps(state_dir: Path, now: datetime) -> None:
    """After a configuration that cannot be loaded: drop expired leases from the maps
    the last run installed, as recorded in the state directory. Best effort."""
    if not state_dir.is_dir():
        return
    from exactcron.outputs.maps import MapRecord
    from exactcron.stores.file import FileLeaseStore

    state = LocalState(state_dir)
    with contextlib.suppress(ExactcronError), state.locked(5):
        specs = MapRecord(state_dir).specs()
        if specs:
            # The local lease file: with a broken configuration, no other store is known.
            fail_closed(specs, state, lambda: FileLeaseStore(state, repair=False).snapshot(now).leases)
