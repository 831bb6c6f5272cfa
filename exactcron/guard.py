"""The guard (`[guard]`): who may relay from how many addresses, and which
addresses are shared by too many users. Pure; no I/O.

Fed by the merge of logins into leases (leases.py `LeaseTable.screen`, and
the shared store's merge), in log order: a login's verdict depends only on
the logins before it and on their stamps, so a lease file rebuilt from the
logs reaches the same verdicts. The state is kept with the leases (the lease
file, or the shared store's tables), so that it survives runs, rotations and
hosts.

- Per user (the name as the server logged it, case-folded, with its domain):
  the addresses it was granted, each with its latest login. A login from a
  further address while `max_addresses_per_user` of them were logged in
  within `window` before it grants nothing (`max-addresses`); with
  `on_exceed = "revoke"` the user's addresses are revoked as of that login
  and the user is refused everywhere for `window`.
- Per address: the users who logged in from it. More than
  `max_users_per_address` within `window` make it a shared address (`status`
  warns; `refuse_shared` refuses it); an address in `shared_ranges` is
  always refused (`shared`).
- A login with no user name (a site rule that captures none) cannot be
  counted per user: only `shared_ranges` applies to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from exactcron.addresses import ignore_test, is_canonical
from exactcron.config import GuardConfig
from exactcron.model import Login
from exactcron.records import dataclass, field
from exactcron.timestamps import parse_instant

MAX_ADDRESSES = "max-addresses"
SHARED = "shared"
REASONS = (MAX_ADDRESSES, SHARED)
# Users remembered per address: enough to know it is shared, bounded
# whatever a hostile log holds (every user name there is attacker-chosen).
_USERS_KEPT_FACTOR = 2


class Verdict(NamedTuple):
    """What the guard decided against a login: `refuse`, or `revoke` (the
    user's addresses, revoked as of the login's time)."""

    kind: str  # "refuse" | "revoke"
    reason: str  # MAX_ADDRESSES | SHARED
    time: datetime
    user: str | None
    address: str
    revoked: tuple[str, ...] = ()


def user_key(user: str | None) -> str | None:
    """A user name as the guard compares it: as logged, case-folded, domain kept."""
    return user.casefold() if user else None


@dataclass
class GuardState:
    """What the guard remembers; every time is a login's own stamp."""

    # user -> address -> latest login that was granted from it
    granted: dict[str, dict[str, datetime]] = field(default_factory=dict)
    # address -> user -> latest login from it, granted or not
    seen: dict[str, dict[str, datetime]] = field(default_factory=dict)
    # user -> (from, until): refused everywhere, after a revocation
    blocked: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    # (user or "", address) -> (latest refused login, reason): a login read again is not audited again
    refused: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)
    changed: bool = field(default=False, compare=False)

    def screen(
        self, logins: Iterable[Login], rules: GuardConfig, horizon: datetime
    ) -> tuple[list[Login], list[Verdict]]:
        """The logins the guard lets through, in order, and its verdicts.

        `logins` are believed and not ignored. A login at or before `horizon`
        (too old to grant) still counts, so that the verdicts after it are
        those of the run that read it in time, but yields no verdict.

        Each login is judged in log order. A first run judges many, so the
        common case is inline: a user with no block whose known addresses,
        this one included, are within the limit is granted without working
        out which of them are live (fewer than the limit whatever the window).
        """
        admitted: list[Login] = []
        verdicts: list[Verdict] = []
        in_shared_range = ignore_test(rules.shared_ranges)
        ranged: dict[str, bool] = {}
        seen, granted, blocked = self.seen, self.granted, self.blocked
        kept = rules.max_users_per_address * _USERS_KEPT_FACTOR
        most_addresses, most_users = rules.max_addresses_per_user, rules.max_users_per_address
        refuse_shared, window = rules.refuse_shared, rules.window
        for login in logins:
            address = login.address
            in_range = ranged.get(address)
            if in_range is None:
                in_range = ranged[address] = in_shared_range(address)
            revoked: tuple[str, ...] = ()
            if in_range:
                reason: str | None = SHARED
            else:
                user = login.user
                user = user.casefold() if user else None  # user_key, inline
                time = login.time
                if user is not None:
                    users = seen.get(address)
                    if users is None:
                        users = seen[address] = {}
                    last = users.get(user)
                    # A later login moves the user's time on; an earlier one (out of order) does not.
                    if last is None or last <= time:
                        users[user] = time
                        self.changed = True
                        if len(users) > kept:
                            _bound(users, kept)
                if refuse_shared and _count_after(seen.get(address, {}), time - window) > most_users:
                    reason = SHARED
                elif user is None:
                    reason = None
                else:
                    mine = granted.get(user)
                    if user in blocked or (
                        mine is not None and len(mine) + (address not in mine) > most_addresses
                    ):
                        reason, revoked = self._judge_user(user, address, time, rules)
                    else:
                        reason = None
                        if mine is None:
                            granted[user] = {address: time}
                            self.changed = True
                        else:
                            last = mine.get(address)
                            if last is None or last <= time:
                                mine[address] = time
                                self.changed = True
            if reason is None:
                admitted.append(login)
                continue
            time = login.time
            key = (user_key(login.user) or "", address)
            known = self.refused.get(key)
            if known is not None and known[0] >= time:
                continue  # read again after a crash: decided and audited already
            self.refused[key] = (time, reason)
            self.changed = True
            if time > horizon:
                verdicts.append(Verdict("refuse", reason, time, login.user, address))
                if revoked:
                    verdicts.append(Verdict("revoke", reason, time, login.user, address, revoked))
        return admitted, verdicts

    def _judge_user(
        self, user: str, address: str, time: datetime, rules: GuardConfig
    ) -> tuple[str | None, tuple[str, ...]]:
        """The reason to refuse `user`'s login (None: granted) and what it revokes."""
        since = time - rules.window
        blocked = self.blocked.get(user)
        if blocked is not None and blocked[0] <= time < blocked[1]:
            return MAX_ADDRESSES, ()
        mine = self.granted.setdefault(user, {})
        live = [each for each, last in mine.items() if last > since]
        if address not in live and len(live) >= rules.max_addresses_per_user:
            if rules.on_exceed != "revoke":
                return MAX_ADDRESSES, ()
            self.blocked[user] = (time, time + rules.window)
            self.changed = True
            return MAX_ADDRESSES, tuple(sorted(live))
        if mine.get(address, since) <= time:
            mine[address] = time
            self.changed = True
        return None, ()

    def prune(self, now: datetime, keep: timedelta) -> None:
        """Forget what no login can be judged by any more: older than now - `keep`."""
        horizon = now - keep
        for table in (self.granted, self.seen):
            # min() in C: most entries of a first run's state are recent.
            for key in [key for key, inner in table.items() if not inner or min(inner.values()) <= horizon]:
                inner = table[key]
                for each in [each for each, last in inner.items() if last <= horizon]:
                    del inner[each]
                    self.changed = True
                if not inner:
                    del table[key]
        for user in [user for user, (_, until) in self.blocked.items() if until <= horizon]:
            del self.blocked[user]
            self.changed = True
        for pair in [pair for pair, (time, _) in self.refused.items() if time <= horizon]:
            del self.refused[pair]
            self.changed = True

    # -- what `status` shows -------------------------------------------------

    def over_limit(self, now: datetime, rules: GuardConfig) -> list[dict[str, Any]]:
        """Users refused for `max-addresses` within the window before `now`."""
        since = now - rules.window
        users: dict[str, dict[str, Any]] = {}
        for (user, _), (time, reason) in self.refused.items():
            if reason != MAX_ADDRESSES or time <= since or not user:
                continue
            entry = users.setdefault(user, {"user": user, "refused": 0, "last_refused": time})
            entry["refused"] += 1
            entry["last_refused"] = max(entry["last_refused"], time)
        for user, entry in users.items():
            entry["addresses"] = _count_after(self.granted.get(user, {}), since)
            blocked = self.blocked.get(user)
            entry["blocked_until"] = blocked[1] if blocked is not None and blocked[1] > now else None
        return [users[user] for user in sorted(users)]

    def shared(self, now: datetime, rules: GuardConfig) -> list[dict[str, Any]]:
        """Addresses more than `max_users_per_address` users logged in from within the window."""
        since = now - rules.window
        found = []
        for address in sorted(self.seen):
            count = _count_after(self.seen[address], since)
            if count > rules.max_users_per_address:
                found.append({"address": address, "users": count})
        return found

    # -- kept with the leases -------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "granted": _nested_to_json(self.granted),
            "seen": _nested_to_json(self.seen),
            "blocked": self.to_json_blocked(),
            "refused": self.to_json_refused(),
        }

    def to_json_blocked(self) -> dict[str, list[str]]:
        return {user: [_text(a), _text(b)] for user, (a, b) in sorted(self.blocked.items())}

    def to_json_refused(self) -> list[list[str]]:
        return [
            [user, address, _text(time), reason]
            for (user, address), (time, reason) in sorted(self.refused.items())
        ]

    def json_text(self, kept: dict[str, Any] | None = None) -> str:
        """`json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True)`,
        written without the dicts in between: a first run's state holds an
        entry per login, each judged per user and per address. `kept`: each
        member's text as written last time (a follower writes at each step)."""
        texts: dict[int, str] = {}
        seconds: dict[tuple[int, ...], str] = {}
        blocked = json.dumps(self.to_json_blocked(), separators=(",", ":"), sort_keys=True)
        refused = json.dumps(self.to_json_refused(), separators=(",", ":"))
        granted = _nested_text(self.granted, texts, seconds, False, kept, "granted")
        seen = _nested_text(self.seen, texts, seconds, True, kept, "seen")
        return f'{{"blocked":{blocked},"granted":{granted},"refused":{refused},"seen":{seen}}}'

    @classmethod
    def from_json(cls, document: object) -> GuardState:
        """The state as kept. Raises ValueError on anything off (the file is ours)."""
        state = cls()
        if document is None:
            return state
        if not isinstance(document, dict):
            raise ValueError("guard: not an object")
        state.granted = _nested_from_json(document.get("granted", {}), address_inside=True)
        state.seen = _nested_from_json(document.get("seen", {}), address_inside=False)
        blocked = document.get("blocked", {})
        if not isinstance(blocked, dict):
            raise ValueError("guard.blocked: not an object")
        for user, span in blocked.items():
            if not isinstance(span, list) or len(span) != 2:
                raise ValueError(f"guard.blocked: {user!r}")
            state.blocked[user] = (_instant(span[0]), _instant(span[1]))
        refused = document.get("refused", [])
        if not isinstance(refused, list):
            raise ValueError("guard.refused: not a list")
        for item in refused:
            if not isinstance(item, list) or len(item) != 4:
                raise ValueError(f"guard.refused: {item!r}")
            user, address, time, reason = item
            if not isinstance(user, str) or not _address(address) or reason not in REASONS:
                raise ValueError(f"guard.refused: {item!r}")
            state.refused[(user, address)] = (_instant(time), reason)
        return state

    def rows(self) -> Iterator[tuple[str, str, str, datetime]]:
        """Every (table, user, address, time) of `granted` and `seen`, for a store's tables."""
        for user, addresses in self.granted.items():
            for address, time in addresses.items():
                yield "granted", user, address, time
        for address, users in self.seen.items():
            for user, time in users.items():
                yield "seen", user, address, time


def _count_after(times: dict[str, datetime], since: datetime) -> int:
    return sum(1 for time in times.values() if time > since)


def _bound(times: dict[str, datetime], limit: int) -> None:
    """Keep the `limit` latest entries: beyond them, the address is shared anyway."""
    if len(times) > limit:
        oldest = min(times, key=times.__getitem__)
        del times[oldest]


def _text(time: datetime) -> str:
    return (time if time.tzinfo is UTC else time.astimezone(UTC)).isoformat()


def _instant(value: object) -> datetime:
    """`parse_instant`, read straight where `json_text` wrote it (in UTC): a
    busy server's state holds two times per login, read on every run that
    finds new lines."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a time")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return parse_instant(value)
    return stamp if stamp.tzinfo is UTC else parse_instant(value)


def _address(value: object) -> bool:
    return isinstance(value, str) and is_canonical(value)


def _nested_to_json(table: dict[str, dict[str, datetime]]) -> dict[str, dict[str, str]]:
    return {
        key: {each: _text(time) for each, time in sorted(inner.items())}
        for key, inner in sorted(table.items())
    }


def _nested_text(
    table: dict[str, dict[str, datetime]],
    texts: dict[int, str],
    seconds: dict[tuple[int, ...], str],
    addresses_outside: bool,
    memo: dict[str, Any] | None = None,
    name: str = "",
) -> str:
    """`_nested_to_json(table)` as compact JSON, keys sorted. `texts` caches
    each time's text by the object (a login's time is kept per user and per
    address; hashing an aware datetime costs more than formatting it); an
    address (normalized: digits, hex, dots and colons) needs no escaping, a
    user name does. `seconds`: `_iso_text`'s cache. `memo[name]`: per key, its
    entries and their text (which depends only on their values), last time's."""
    quote = encode_basestring_ascii
    members = []
    kept, now_kept = (memo.get(name, {}) if memo is not None else {}), dict[str, Any]()
    for key in sorted(table):
        inner = table[key]
        known = kept.get(key)
        if known is not None and known[0] == inner:
            members.append((now_kept.setdefault(key, known))[1])
            continue
        entries = []
        for each, time in sorted(inner.items()) if len(inner) > 1 else inner.items():
            text = texts.get(id(time))
            if text is None:
                text = texts[id(time)] = _iso_text(time, seconds)
            entries.append(f'{quote(each)}:"{text}"' if addresses_outside else f'"{each}":"{text}"')
        label = f'"{key}"' if addresses_outside else quote(key)
        now_kept[key] = (dict(inner) if memo is not None else None, f"{label}:{{{','.join(entries)}}}")
        members.append(now_kept[key][1])
    if memo is not None:
        memo[name] = now_kept
    return f"{{{','.join(members)}}}"


def _iso_text(time: datetime, seconds: dict[tuple[int, ...], str]) -> str:
    """`_text(time)`, with each second's text kept in `seconds` (a first run's
    logins share their seconds; isoformat with an offset costs twice the rest)."""
    if time.tzinfo is not UTC:
        time = time.astimezone(UTC)  # one text per instant, as `_text`: a text can be kept
    key = (time.year, time.month, time.day, time.hour, time.minute, time.second)
    second = seconds.get(key)
    if second is None:
        second = seconds[key] = time.replace(microsecond=0, tzinfo=None).isoformat()
    microsecond = time.microsecond
    return f"{second}.{microsecond:06d}+00:00" if microsecond else f"{second}+00:00"


def _nested_from_json(value: object, address_inside: bool) -> dict[str, dict[str, datetime]]:
    if not isinstance(value, dict):
        raise ValueError("guard: not an object")
    table: dict[str, dict[str, datetime]] = {}
    for key, inner in value.items():
        if not isinstance(inner, dict) or (not address_inside and not _address(key)):
            raise ValueError(f"guard: {key!r}")
        entries = table[key] = {}
        for each, time in inner.items():
            if address_inside and not _address(each):
                raise ValueError(f"guard: {each!r}")
            entries[each] = _instant(time)
    return table
