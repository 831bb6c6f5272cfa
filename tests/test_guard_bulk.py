"""`[guard]` judges a first run's many logins per address and per user in
bulk (guard.py `GuardState.screen`): its verdicts, the logins it lets
through and what it remembers must be those of judging every login in log
order, one by one, as the guard always has (the reference below), whatever
the logs hold: limits, windows, refuse or revoke, shared addresses and
ranges, names differing in case, logins without a user, stamps out of order,
split over runs. The lease file's encoding of that state is checked against
`json.dumps` too."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.addresses import ignore_test, parse_network
from exactcron.config import GuardConfig
from exactcron.guard import MAX_ADDRESSES, SHARED, GuardState, Verdict, user_key
from exactcron.model import Login
from exactcron.timestamps import parse_instant

START = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


class OneByOne(GuardState):
    """The guard as it judged before the bulk passes: each login in log order."""

    def screen(self, logins: Any, rules: GuardConfig, horizon: datetime) -> tuple[list[Login], list[Verdict]]:
        admitted: list[Login] = []
        verdicts: list[Verdict] = []
        in_shared_range = ignore_test(rules.shared_ranges)
        for login in logins:
            reason, revoked = self._judge(login, rules, in_shared_range)
            if reason is None:
                admitted.append(login)
                continue
            time = login.time
            key = (user_key(login.user) or "", login.address)
            known = self.refused.get(key)
            if known is not None and known[0] >= time:
                continue
            self.refused[key] = (time, reason)
            self.changed = True
            if time > horizon:
                verdicts.append(Verdict("refuse", reason, time, login.user, login.address))
                if revoked:
                    verdicts.append(Verdict("revoke", reason, time, login.user, login.address, revoked))
        return admitted, verdicts

    def _judge(
        self, login: Login, rules: GuardConfig, in_shared_range: Any
    ) -> tuple[str | None, tuple[str, ...]]:
        address, time = login.address, login.time
        if in_shared_range(address):
            return SHARED, ()
        user = user_key(login.user)
        since = time - rules.window
        if user is not None:
            users = self.seen.setdefault(address, {})
            if users.get(user, since) <= time:
                users[user] = time
                self.changed = True
                limit = rules.max_users_per_address * 2
                if len(users) > limit:
                    del users[min(users, key=users.__getitem__)]
        if rules.refuse_shared and (
            sum(1 for each in self.seen.get(address, {}).values() if each > since)
            > rules.max_users_per_address
        ):
            return SHARED, ()
        if user is None:
            return None, ()
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


RULES = st.builds(
    GuardConfig,
    max_addresses_per_user=st.integers(min_value=1, max_value=4),
    window=st.sampled_from([timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=1)]),
    on_exceed=st.sampled_from(["refuse", "revoke"]),
    max_users_per_address=st.integers(min_value=1, max_value=3),
    refuse_shared=st.booleans(),
    shared_ranges=st.sampled_from(
        [
            (),
            (parse_network("100.64.0.0/10"),),
            (parse_network("192.0.2.4/31"), parse_network("2001:db8::/64")),
        ]
    ),
)
LOGIN = st.builds(
    lambda address, user, seconds, microsecond: Login(
        address, START + timedelta(seconds=seconds), microsecond, user, "dovecot"
    ),
    address=st.sampled_from(
        [
            *(f"192.0.2.{n}" for n in range(1, 8)),
            "100.64.0.1",
            "100.127.255.254",
            "2001:db8::1",
            "2001:db8:1::1",
        ]
    ),
    user=st.sampled_from([None, "", "alice", "Alice", "bob", "carol", "dave@example.org", "ÉVE", 'x"y']),
    # Mostly in order, as a log is; a writer's clock may step back.
    seconds=st.integers(min_value=0, max_value=4 * 3600),
    microsecond=st.sampled_from([0, 1, 500_000, 999_999]),
)


def state_of(state: GuardState) -> dict[str, Any]:
    return {
        "granted": state.granted,
        "seen": state.seen,
        "blocked": state.blocked,
        "refused": state.refused,
        "changed": state.changed,
    }


@settings(max_examples=400, deadline=None)
@given(
    rules=RULES,
    runs=st.lists(st.lists(LOGIN, max_size=40), min_size=1, max_size=4),
    ordered=st.booleans(),
    horizon_seconds=st.integers(min_value=-600, max_value=4 * 3600),
)
def test_bulk_judgement_is_the_one_by_one_judgement(
    rules: GuardConfig, runs: list[list[Login]], ordered: bool, horizon_seconds: int
) -> None:
    bulk, reference = GuardState(), OneByOne()
    for logins in runs:
        if ordered:
            logins = sorted(logins, key=lambda login: login.time)
        horizon = START + timedelta(seconds=horizon_seconds)
        assert bulk.screen(logins, rules, horizon) == reference.screen(logins, rules, horizon)
        assert state_of(bulk) == state_of(reference)
        assert bulk.to_json() == reference.to_json()
        bulk.changed = reference.changed = False


@settings(max_examples=200, deadline=None)
@given(rules=RULES, logins=st.lists(LOGIN, max_size=60))
def test_the_lease_files_guard_text_is_json_dumps_of_the_state(
    rules: GuardConfig, logins: list[Login]
) -> None:
    state = GuardState()
    state.screen(logins, rules, START)
    state.blocked['\u2028"quoted"\\'] = (START, START + timedelta(hours=1))
    assert state.json_text() == json.dumps(state.to_json(), separators=(",", ":"), sort_keys=True)
    assert GuardState.from_json(json.loads(state.json_text())) == state


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))])).map(str),
        st.text(alphabet="0123456789-:T+Zz. ", max_size=32),
    )
)
def test_the_state_reads_its_times_as_parse_instant_does(text: str) -> None:
    """Times read back from the lease file's guard state: the fast reading is parse_instant's."""
    try:
        expected: datetime | str = parse_instant(text)
    except ValueError:
        expected = "refused"
    try:
        found: datetime | str = GuardState.from_json({"blocked": {"u": [text, text]}}).blocked["u"][0]
    except ValueError:
        found = "refused"
    assert found == expected
    if isinstance(found, datetime) and isinstance(expected, datetime):
        assert found.tzinfo is expected.tzinfo is UTC
