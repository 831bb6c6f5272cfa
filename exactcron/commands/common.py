"""What the commands that open the state share: the state and the lease store
opened together, errors collected so that a run goes on, and the one error
reported."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from exactcron.config import Config
from exactcron.errors import ExactcronError, MapNoRoomError
from exactcron.logs import log
from exactcron.model import Lease
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState
from exactcron.stores.open import open_lease_store


@contextlib.contextmanager
def opened(config: Config, repair: bool = True) -> Iterator[tuple[LocalState, LeaseStore]]:
    """This host's state and the lease store; the store is closed on leaving."""
    state = LocalState(config.state_dir)
    store = open_lease_store(config, state, repair)
    try:
        yield state, store
    finally:
        store.close()


# Every lease ever read, expired or not, as `LeaseStore.last_known` gives them.
ALL_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def known_leases(store: LeaseStore) -> dict[str, Lease]:
    """The leases as loaded, for the audit trail's user and expiry; empty when no one audits."""
    from exactcron.outputs import audit  # here: a quiet run audits nothing

    return {lease.address: lease for lease in store.last_known(ALL_TIME)} if audit.enabled() else {}


def reported(errors: list[ExactcronError]) -> ExactcronError:
    """The error for the one line on stderr; the others go only to -v and log_file.

    The first, unless a map ran out of room: what that map holds now (rewritten
    in place, or removed) is what the admin must know first.
    """
    first = next((error for error in errors if isinstance(error, MapNoRoomError)), errors[0])
    for other in errors:
        if other is not first:
            log.info("also failed: %s", other)
    return first


def collect(errors: list[ExactcronError], action: Callable[[], object]) -> bool:
    """Run `action`; on an exactcron error, keep it in `errors`. True when it succeeded."""
    try:
        action()
    except ExactcronError as error:
        errors.append(error)
        return False
    return True
