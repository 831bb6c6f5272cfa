"""The lease table: which addresses may relay, until when. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from exactcron.addresses import Network, is_ignored, is_special, refusal_test, sort_key
from exactcron.config import GuardConfig
from exactcron.guard import GuardState, Verdict
from exactcron.model import MANUAL, Lease, Login
from exactcron.records import dataclass, field
from exactcron.rules.grant import Refusal

# Distinct times `LeaseTable.merge` keeps one object of.
_SHARED_INSTANTS = 4096
SPECIAL_CHECKED = "special"

# A stamp up to this far ahead of the clock is the writer's clock running a
# little ahead (or the second not yet over here): it counts as now. Further
# ahead, the stamp is not believed and the line grants nothing.
CLOCK_SLACK = timedelta(minutes=1)
# The `earliest` of a login whose stamp is ahead of the clock: written by a
# clock that runs ahead, it may have been logged before any flush there is.
_ANY_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def believed_login(login: Login, now: datetime) -> Login | None:
    """The login as the lease rules take it, or None when its stamp is not believed.

    The one place the rule for stamps ahead of the clock is kept: a reading
    more than CLOCK_SLACK ahead of `now` is dropped, the later of the rest is
    the login's time (a local time in the hour repeated when clocks go back
    has two readings, `time` and `earliest`), and a time ahead of `now` counts
    as `now`, logged perhaps before any flush (a flush wins over it). A login
    this returns is never ahead of `now`, and returned again unchanged.
    """
    time = login.time
    if time <= now:
        return login
    earliest = login.earliest
    if time > now + CLOCK_SLACK:
        if earliest is None or earliest > now + CLOCK_SLACK:
            return None
        if earliest <= now:
            # Only the earlier reading is left: it is the login's time, and the only one.
            return Login.at(earliest, login.server, login.user, login.address)
    return Login.at(now, login.server, login.user, login.address, _ANY_TIME)


def flush_time(login: Login) -> datetime:
    """What a flush is compared with: the earliest instant the login may have
    been logged (its earlier reading, or any time for one stamped ahead)."""
    return login.earliest or login.time


class LatestLogins:
    """Per address, the logins that decide its lease: merging them grants what
    merging every login read, one by one in log order, would.

    That is its latest login, and besides it any login a flush may spare where
    it beats the latest: one whose `flush_time` is later than that of a later
    login (the later one in the hour repeated when clocks go back, or stamped
    ahead of the clock, may have been logged before a flush). Where no login
    has an `earliest`, the latest alone.
    """

    __slots__ = ("latest", "spared")

    def __init__(self) -> None:
        self.latest: dict[str, Login] = {}
        self.spared: list[Login] = []

    def keep(self, logins: Iterable[Login], now: datetime) -> list[Login]:
        """Keep what decides the leases of `logins`, each as `believed_login`
        reads it; return those not believed (stamped too far ahead), in order."""
        latest = self.latest
        not_believed: list[Login] = []
        latest_possible = now.replace(microsecond=0)
        for login in logins:
            if login.second >= latest_possible:
                believed = believed_login(login, now)
                if believed is None:
                    not_believed.append(login)
                    continue
                login = believed
            address = login.address
            current = latest.get(address)
            if current is None:
                latest[address] = login
            # Ties keep the first: merged in order, a later login of the same time changes nothing.
            elif (login.second, login.microsecond) > (current.second, current.microsecond):
                latest[address] = login
                if login.earliest is not None and flush_time(login) < flush_time(current):
                    self.spared.append(current)
            elif current.earliest is not None and flush_time(login) > flush_time(current):
                self.spared.append(login)
        return not_believed

    def logins(self) -> list[Login]:
        """What to merge: every login kept, the spared first."""
        return [*self.spared, *self.latest.values()]

    def __len__(self) -> int:
        return len(self.latest) + len(self.spared)

    def clear(self) -> None:
        self.latest.clear()
        self.spared.clear()


class Grant:
    """Whether a login grants a lease at `now`, and if not, why: the lease
    table's verdict, which `check` reports too (rules/grant.py has the line's).

    Built once per merge: what does not depend on the login is worked out once.
    A flush is the table's own state, and it is the table that applies it.
    """

    __slots__ = ("_latest_possible", "_refused", "horizon", "networks", "now")

    def __init__(
        self, now: datetime, timeout: timedelta, ignore: Iterable[Network] = (), screened: bool = False
    ) -> None:
        self.now = now
        # A lease is kept to the second, as the lease file has always stored it:
        # a login whose second is not after now - timeout grants nothing, the
        # fraction of its stamp or of now notwithstanding.
        self.horizon = now - timeout
        self.networks = tuple(ignore)
        # Logins `LeaseTable.screen` let through were tested against `ignore` there.
        self._refused = _never if screened else refusal_test(self.networks)
        self._latest_possible = now.replace(microsecond=0)

    def verdict(self, login: Login) -> Login | Refusal:
        """The login as the lease table takes it (believed_login) when it grants, else why not."""
        if login.second >= self._latest_possible:
            believed = believed_login(login, self.now)
            if believed is None:
                return Refusal.AHEAD
            login = believed
        if login.second <= self.horizon:
            return Refusal.TOO_OLD
        address = login.address
        if self._refused(address):
            return Refusal.SPECIAL if is_special(address) else Refusal.IGNORED
        return login


@dataclass
class LeaseTable:
    """Leases by address, plus the flushes that logins logged earlier cannot undo."""

    leases: dict[str, Lease] = field(default_factory=dict)
    # address -> time of the last flush of that address
    flushed: dict[str, datetime] = field(default_factory=dict)
    # time of the last `flush --all`
    flushed_all: datetime | None = None
    # What `[guard]` remembers of who logged in from where (guard.py).
    guard: GuardState = field(default_factory=GuardState)
    # Set by every change, so that an unchanged table is not encoded again.
    changed: bool = field(default=False, compare=False, repr=False)
    # The `ignore` networks (as text) every lease has been checked against;
    # None when unknown. Only a change of `ignore` makes prune check again.
    ignore_checked: tuple[str, ...] | None = field(default=None, compare=False, repr=False)
    # Equal times of the leases `merge` grants, as one object: 100,000
    # leases granted over the timeout hold a few thousand datetimes.
    _instants: dict[datetime, datetime] = field(default_factory=dict, init=False, compare=False, repr=False)
    # The `ignore` marker every lease was vetted against by `merge_all`, and
    # the number of leases then: a first run's prune need not check them again.
    _vetted: tuple[str, ...] | None = field(default=None, init=False, compare=False, repr=False)
    _vetted_size: int = field(default=0, init=False, compare=False, repr=False)

    def merge(self, login: Login, now: datetime, timeout: timedelta, ignore: Sequence[Network] = ()) -> bool:
        """Grant or extend a lease for a login. True when the table changed.

        Merging the same login twice changes nothing, so a run that re-reads
        lines after a crash is harmless.
        """
        return bool(self.merge_all((login,), now, timeout, ignore))

    def merge_all(
        self,
        logins: Iterable[Login],
        now: datetime,
        timeout: timedelta,
        ignore: Sequence[Network] = (),
        screened: bool = False,
    ) -> list[str]:
        """`merge` each login in turn; the addresses whose lease changed.

        What does not depend on the login is worked out once: a first run
        merges one login per address of the log. `screened`: the logins are
        what `screen` let through (believed, outside `ignore`), not tested again.
        """
        networks = tuple(ignore)
        marker = _checked_marker(networks)
        if not self.leases and self.ignore_checked is None:
            # Every lease this table will hold is vetted here, against `ignore`.
            self._vetted, self._vetted_size = marker, 0
        elif self._vetted != marker or self._vetted_size != len(self.leases):
            self._vetted = None
        verdict = Grant(now, timeout, networks, screened).verdict
        any_flush = self.flushed_all is not None or bool(self.flushed)
        leases = self.leases
        # second -> (that second, its lease's end), each shared with equal times.
        ends: dict[datetime, tuple[datetime, datetime]] = {}
        changed: list[str] = []
        for each in logins:
            login = verdict(each)
            if not isinstance(login, Login):
                continue  # a Refusal
            address, second = login.address, login.second
            # A flush wins over every login logged before it, whatever its stamp
            # claims: the earlier reading of an ambiguous local time, and a stamp
            # ahead of the clock (believed_login), which may have been written
            # before the flush by a clock that runs ahead.
            if any_flush and self._flushed_after(address, flush_time(login)):
                continue
            # Equal times share one object, before a save and after.
            end = ends.get(second)
            if end is None:
                if len(ends) >= _SHARED_INSTANTS:
                    ends.clear()  # a hostile log may hold every second there is
                shared = self._shared(second)
                end = ends[second] = (shared, self._shared(shared + timeout))
            second, expires = end
            current = leases.get(address)
            if current is not None and current.last_login >= second and current.expires >= expires:
                continue
            server = login.server
            if current is not None and current.expires > expires:
                # A lease granted by hand for longer keeps its end (and stays one
                # granted by hand); the login still refreshes who logged in last.
                expires, server = current.expires, MANUAL
            leases[address] = Lease(address, login.user, second, expires, server)
            changed.append(address)
        if changed:
            self.changed = True
        if self._vetted is not None:
            self._vetted_size = len(leases)
        return changed

    def screen(
        self,
        logins: Iterable[Login],
        now: datetime,
        timeout: timedelta,
        ignore: Sequence[Network],
        rules: GuardConfig,
    ) -> tuple[list[Login], list[Verdict]]:
        """The logins `[guard]` lets through, in log order, and its verdicts;
        a revocation is applied here, as a flush at the time of the login
        that exceeded the limit. The guard sees what could grant: believed
        logins outside `ignore`."""
        refused = refusal_test(tuple(ignore))
        latest_possible = now.replace(microsecond=0)
        believed = [
            login
            for login in (
                believed_login(each, now) if each.second >= latest_possible else each for each in logins
            )
            if login is not None and not refused(login.address)
        ]
        admitted, verdicts = self.guard.screen(believed, rules, now - timeout)
        for verdict in verdicts:
            if verdict.revoked:
                self.flush(verdict.revoked, verdict.time)
        if self.guard.changed:
            self.changed = True
        return admitted, verdicts

    def _shared(self, time: datetime) -> datetime:
        shared = self._instants.get(time)
        if shared is None:
            if len(self._instants) >= _SHARED_INSTANTS:
                self._instants.clear()  # a hostile log may hold every second there is
            shared = self._instants[time] = time
        return shared

    def _flushed_after(self, address: str, time: datetime) -> bool:
        if self.flushed_all is not None and time <= self.flushed_all:
            return True
        flushed = self.flushed.get(address)
        return flushed is not None and time <= flushed

    def add(self, address: str, now: datetime, duration: timedelta) -> Lease:
        """A lease granted by hand until now + `duration`, or longer: it never shortens one."""
        self._vetted = None  # an address granted by hand was checked against nothing
        current = self.leases.get(address)
        if current is not None and current.expires > now + duration:
            lease = Lease(address, current.user, current.last_login, current.expires, MANUAL)
        else:
            lease = Lease(address, None, now, now + duration, MANUAL)
        self.leases[address] = lease
        self.changed = True
        return lease

    def flush(self, addresses: Iterable[str], now: datetime) -> list[str]:
        """Revoke leases now; return the addresses that held one."""
        revoked = []
        self.changed = True
        for address in addresses:
            self.flushed[address] = max(now, self.flushed.get(address, now))
            if self.leases.pop(address, None) is not None:
                revoked.append(address)
        return revoked

    def flush_all(self, now: datetime) -> list[str]:
        revoked = sorted(self.leases, key=sort_key)
        self.leases.clear()
        self.changed = True
        self.flushed_all = now if self.flushed_all is None else max(now, self.flushed_all)
        return revoked

    def prune(self, now: datetime, timeout: timedelta, ignore: Sequence[Network] = ()) -> list[str]:
        """Drop expired and ignored leases, and flush records no login can outlive.

        A flush only has to outlast the logins logged before it; those grant
        nothing once they are older than the timeout.
        """
        networks = tuple(ignore)
        checked = _checked_marker(networks)
        # A lease passed `ignore` when it was granted; only a changed
        # `ignore` needs every lease checked again, unless each was just
        # vetted against it.
        marker_changed = checked != self.ignore_checked
        recheck = marker_changed and (self._vetted != checked or self._vetted_size != len(self.leases))
        horizon = now - timeout
        removed = [
            address
            for address, lease in self.leases.items()
            if lease.expires <= now
            or (lease.server != MANUAL and lease.last_login <= horizon)
            or (recheck and (is_ignored(address, networks) or is_special(address)))
        ]
        for address in removed:
            del self.leases[address]
        # A login's lease ends at its time + the timeout in force: a lowered
        # timeout shortens the leases granted under the old one.
        shortened = [
            lease
            for lease in self.leases.values()
            if lease.server != MANUAL and lease.expires > lease.last_login + timeout
        ]
        for lease in shortened:
            self.leases[lease.address] = Lease(
                lease.address, lease.user, lease.last_login, lease.last_login + timeout, lease.server
            )
        if marker_changed:
            self.ignore_checked = checked
        flushed = {a: t for a, t in self.flushed.items() if t > horizon}
        flushed_all = (
            self.flushed_all if self.flushed_all is not None and self.flushed_all > horizon else None
        )
        if (
            removed
            or shortened
            or marker_changed
            or len(flushed) != len(self.flushed)
            or flushed_all != self.flushed_all
        ):
            self.changed = True
        self.flushed, self.flushed_all = flushed, flushed_all
        return sorted(removed, key=sort_key)

    def active(self, now: datetime) -> list[Lease]:
        """Leases in force at `now`, in address order."""
        live = (lease for lease in self.leases.values() if lease.expires > now)
        return sorted(live, key=_address_order)


def _never(address: str) -> bool:
    return False


def _checked_marker(networks: tuple[Network, ...]) -> tuple[str, ...]:
    """What `ignore_checked` records: the networks, and that special addresses
    were checked too (0.1 did not)."""
    return (*sorted(str(network) for network in networks), SPECIAL_CHECKED)


def _address_order(lease: Lease) -> int:
    return sort_key(lease.address)
