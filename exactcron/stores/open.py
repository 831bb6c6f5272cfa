"""The one place that knows every lease store: `open_lease_store` picks the back end.

Apart from stores/base.py (the protocol), so that the protocol imports no
back end and the back ends import only the protocol's values (model.py):
no import cycle between the protocol and what implements it.
"""

from __future__ import annotations

from exactcron.config import Config
from exactcron.stores.base import LeaseStore
from exactcron.stores.local import LocalState


def open_lease_store(config: Config, state: LocalState, repair: bool = True) -> LeaseStore:
    """The store `config` names. `repair`: set broken local files aside (only under the lock)."""
    if config.store is not None:
        from exactcron.stores.postgres import PostgresLeaseStore

        return PostgresLeaseStore(config.store, config.ignore, state, repair, config.guard)
    from exactcron.stores.file import FileLeaseStore

    return FileLeaseStore(state, repair, guard=config.guard)
