"""The values every layer passes: a Login (rules → leases), a Lease (leases →
stores → outputs) and a Snapshot (a store → the maps and the quiet run).

Values only, no behaviour beyond reading them: the rules that make and
change them live with their step (rules/parser.py makes Logins, leases.py
grants Leases, a store in stores/ keeps them). Below every step, so that a
store or an output needs nothing of the parser to name a login.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from exactcron.records import dataclass

# The server name of a lease whose end was set by hand (`add`): the timeout
# in force does not bound it.
MANUAL = "manual"


class Login(NamedTuple):
    """A successful login, as one line states it.

    A tuple, built once per login line of a log: its stamp is kept as the
    second (in UTC, shared by every login of that second, as leases are kept
    to the second) and the microseconds apart.
    """

    address: str
    second: datetime
    microsecond: int
    user: str | None
    server: str
    # The earliest instant the stamp may mean, when earlier than `time` (a
    # local time in the hour repeated when clocks go back): what a flush is
    # compared with.
    earliest: datetime | None = None

    @classmethod
    def at(
        cls, time: datetime, server: str, user: str | None, address: str, earliest: datetime | None = None
    ) -> Login:
        microsecond = time.microsecond
        second = time.replace(microsecond=0) if microsecond else time
        return cls(address, second, microsecond, user, server, earliest)

    @property
    def time(self) -> datetime:
        """When the line says the login happened."""
        second, microsecond = self.second, self.microsecond
        # Added rather than `replace`d (the second is whole): a third of the
        # time, and `[guard]` asks once per login of a first run.
        return second + timedelta(0, 0, microsecond) if microsecond else second


class Lease(NamedTuple):
    """An address's leave to relay. A tuple: a first run builds one per client."""

    address: str
    user: str | None
    last_login: datetime
    expires: datetime
    server: str | None = None


@dataclass
class Snapshot:
    """The leases in force at a time, and the store's `version` they belong to."""

    leases: list[Lease]  # in address order
    version: Any  # a JSON value; see LeaseStore.version
