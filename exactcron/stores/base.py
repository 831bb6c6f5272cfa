"""Where leases live: one interface, one module per back end.

`update`, `add`, `flush`, `render`, `show` and `status` talk to a
`LeaseStore` only. The embedded back end is the JSON file in `state_dir`
(stores/file.py). A back end keeps the lease rules of leases.py: a merge keeps
the later expiry, a flush beats every login logged before it, `add` never
shortens a lease. Checkpoints, the lock and the last-run record stay local
whatever the back end (stores/local.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from exactcron.addresses import Network
from exactcron.guard import GuardState, Verdict
from exactcron.model import Lease, Login, Snapshot


class LeaseStore(Protocol):
    def begin(self) -> bool:
        """Load what a run needs; True when the stored leases were lost (a
        broken file set aside) and must be rebuilt from the logs."""

    def version(self) -> Any:
        """A cheap JSON value that changes whenever the leases may have
        changed, whoever changed them; None when unknown."""

    def merge(
        self, logins: Iterable[Login], now: datetime, timeout: timedelta, ignore: Sequence[Network]
    ) -> list[str]:
        """Grant or extend a lease per login; the addresses whose lease changed."""

    def verdicts(self) -> list[Verdict]:
        """What `[guard]` decided against the logins merged since last asked (then forgotten)."""

    def guard_state(self, now: datetime) -> GuardState:
        """What `[guard]` remembers, for `status`."""

    def add(self, address: str, now: datetime, duration: timedelta) -> Lease:
        """A lease granted by hand, from `now` for `duration`."""

    def flush(self, addresses: Sequence[str] | None, now: datetime) -> list[str]:
        """Revoke the leases of `addresses` (all when None); the addresses that held one."""

    def prune(self, now: datetime, timeout: timedelta, ignore: Sequence[Network]) -> list[str]:
        """Drop expired and ignored leases; the addresses dropped."""

    def save(self) -> None:
        """Make every change so far durable."""

    def snapshot(self, now: datetime) -> Snapshot:
        """The leases in force at `now`, as stored."""

    def last_known(self, now: datetime) -> list[Lease]:
        """The leases in force at `now` among those last read, without asking
        the back end: what the maps may still hold when the store fails."""

    def warnings(self, clock: datetime) -> list[str]:
        """What `status` should warn about; `clock` is this host's time."""

    def close(self) -> None:
        """Let go of the back end (a connection, say)."""
