"""Lease arithmetic: what a login grants, for how long, and what a flush undoes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from exactcron.addresses import normalize_address, parse_network
from exactcron.leases import CLOCK_SLACK, LeaseTable, believed_login
from exactcron.model import Login
from tests.support.clock import NOW_TIME

TIMEOUT = timedelta(minutes=30)


def login(address: str, minutes_ago: float, user: str = "alice") -> Login:
    return Login.at(NOW_TIME - timedelta(minutes=minutes_ago), "dovecot", user, address)


def test_a_login_grants_until_its_log_time_plus_the_timeout() -> None:
    table = LeaseTable()
    assert table.merge(login("192.0.2.10", 10), NOW_TIME, TIMEOUT)
    lease = table.leases["192.0.2.10"]
    assert lease.last_login == NOW_TIME - timedelta(minutes=10)
    assert lease.expires == NOW_TIME + timedelta(minutes=20)
    assert lease.user == "alice"


def test_a_login_older_than_the_timeout_grants_nothing() -> None:
    table = LeaseTable()
    assert not table.merge(login("192.0.2.10", 30), NOW_TIME, TIMEOUT)
    assert not table.merge(login("192.0.2.11", 45), NOW_TIME, TIMEOUT)
    assert table.leases == {}


def test_a_login_stamped_up_to_a_minute_ahead_counts_as_now_and_further_ahead_grants_nothing() -> None:
    table = LeaseTable()
    assert table.merge(login("192.0.2.10", -1), NOW_TIME, TIMEOUT)
    assert table.leases["192.0.2.10"].last_login == NOW_TIME
    assert table.leases["192.0.2.10"].expires == NOW_TIME + TIMEOUT
    assert not table.merge(login("192.0.2.11", -1.01), NOW_TIME, TIMEOUT)
    assert not table.merge(login("192.0.2.11", -90), NOW_TIME, TIMEOUT)
    assert "192.0.2.11" not in table.leases


instants = st.datetimes(
    min_value=datetime(2026, 11, 25, 17), max_value=datetime(2026, 11, 25, 19), timezones=st.just(UTC)
)


@given(instants, st.one_of(st.none(), st.timedeltas(timedelta(0), timedelta(hours=1))))
def test_no_login_believed_is_ahead_of_the_clock(time: datetime, ambiguity: timedelta | None) -> None:
    earliest = None if ambiguity is None else time - ambiguity
    stamped = Login.at(time, "dovecot", "alice", "192.0.2.10", earliest)
    believed = believed_login(stamped, NOW_TIME)
    readings = [
        reading for reading in (time, earliest) if reading is not None and reading <= NOW_TIME + CLOCK_SLACK
    ]
    if not readings:
        assert believed is None
        return
    assert believed is not None and believed.time == min(max(readings), NOW_TIME)
    assert believed_login(believed, NOW_TIME) == believed  # the rule applied twice changes nothing
    if believed.time == NOW_TIME and max(readings) > NOW_TIME:
        # Written perhaps before any flush, by a clock that runs ahead: every flush wins.
        table = LeaseTable()
        table.flush(["192.0.2.10"], NOW_TIME - TIMEOUT / 2)
        assert not table.merge(stamped, NOW_TIME, TIMEOUT)


def test_a_later_login_extends_and_an_earlier_one_does_not_shorten() -> None:
    table = LeaseTable()
    table.merge(login("192.0.2.10", 20, "alice"), NOW_TIME, TIMEOUT)
    table.merge(login("192.0.2.10", 5, "bob"), NOW_TIME, TIMEOUT)
    assert table.leases["192.0.2.10"].expires == NOW_TIME + timedelta(minutes=25)
    assert table.leases["192.0.2.10"].user == "bob"
    assert not table.merge(login("192.0.2.10", 15, "carol"), NOW_TIME, TIMEOUT)
    assert table.leases["192.0.2.10"].user == "bob"


def test_merging_the_same_login_twice_changes_nothing() -> None:
    table = LeaseTable()
    assert table.merge(login("192.0.2.10", 3), NOW_TIME, TIMEOUT)
    before = dict(table.leases)
    assert not table.merge(login("192.0.2.10", 3), NOW_TIME, TIMEOUT)
    assert table.leases == before


def test_flush_revokes_and_earlier_logins_never_grant_again() -> None:
    table = LeaseTable()
    table.merge(login("192.0.2.10", 10), NOW_TIME, TIMEOUT)
    assert table.flush(["192.0.2.10"], NOW_TIME) == ["192.0.2.10"]
    assert table.leases == {}
    # A line logged before the flush but read after it (the next cron run).
    assert not table.merge(login("192.0.2.10", 1), NOW_TIME + timedelta(minutes=1), TIMEOUT)
    # A login after the flush grants as usual.
    assert table.merge(login("192.0.2.10", -1), NOW_TIME + timedelta(minutes=2), TIMEOUT)


def test_flush_of_an_unleased_address_still_blocks_unread_earlier_logins() -> None:
    table = LeaseTable()
    assert table.flush(["192.0.2.20"], NOW_TIME) == []
    assert not table.merge(login("192.0.2.20", 2), NOW_TIME + timedelta(minutes=1), TIMEOUT)


def test_flush_all_revokes_every_lease_and_every_earlier_login() -> None:
    table = LeaseTable()
    table.merge(login("192.0.2.10", 10), NOW_TIME, TIMEOUT)
    table.merge(login("2001:db8::1", 10), NOW_TIME, TIMEOUT)
    assert table.flush_all(NOW_TIME) == ["192.0.2.10", "2001:db8::1"]
    assert not table.merge(login("198.51.100.7", 1), NOW_TIME, TIMEOUT)


def test_ignored_networks_are_never_granted() -> None:
    ignore = (parse_network("127.0.0.0/8"), parse_network("::1/128"), parse_network("10.0.0.0/8"))
    table = LeaseTable()
    for address in ("127.0.0.1", "::1", "10.1.2.3"):
        assert not table.merge(login(address, 1), NOW_TIME, TIMEOUT, ignore)
    assert table.merge(login("192.0.2.10", 1), NOW_TIME, TIMEOUT, ignore)


def test_prune_drops_expired_leases_and_outlived_flush_records() -> None:
    table = LeaseTable()
    table.merge(login("192.0.2.10", 29), NOW_TIME, TIMEOUT)
    table.merge(login("192.0.2.11", 1), NOW_TIME, TIMEOUT)
    table.flush(["192.0.2.99"], NOW_TIME)
    later = NOW_TIME + timedelta(minutes=2)
    assert table.prune(later, TIMEOUT) == ["192.0.2.10"]
    assert set(table.leases) == {"192.0.2.11"}
    assert "192.0.2.99" in table.flushed
    table.prune(NOW_TIME + TIMEOUT + timedelta(seconds=1), TIMEOUT)
    assert table.flushed == {}


def test_a_lease_added_by_hand_for_longer_is_not_shortened_by_a_login() -> None:
    table = LeaseTable()
    table.add("192.0.2.10", NOW_TIME, timedelta(days=7))
    table.merge(login("192.0.2.10", 0), NOW_TIME, TIMEOUT)
    assert table.leases["192.0.2.10"].expires == NOW_TIME + timedelta(days=7)


def test_active_lists_leases_in_address_order_ipv4_first() -> None:
    table = LeaseTable()
    for address in ("2001:db8::2", "192.0.2.10", "10.9.0.1", "192.0.2.9"):
        table.merge(login(address, 1), NOW_TIME, TIMEOUT)
    assert [lease.address for lease in table.active(NOW_TIME)] == [
        "10.9.0.1",
        "192.0.2.9",
        "192.0.2.10",
        "2001:db8::2",
    ]


def test_addresses_are_normalized_and_garbage_is_refused() -> None:
    assert normalize_address("::ffff:192.0.2.7") == "192.0.2.7"
    assert normalize_address("2001:DB8:0:0::0:1") == "2001:db8::1"
    assert normalize_address("fe80::1%eth0") is None
    assert normalize_address("12.345.67.35") is None
    assert normalize_address("1.2.3.4], port=[52326") is None
    assert normalize_address("") is None


def test_many_logins_merged_at_once_grant_what_one_by_one_would() -> None:
    ignore = [parse_network("10.0.0.0/8")]
    logins = [
        login("192.0.2.10", 10),
        login("192.0.2.10", 5, "bob"),
        login("10.1.2.3", 3),
        login("224.0.0.1", 3),
        login("198.51.100.7", 40),
        login("2001:db8::1", -5),
    ]
    one_by_one = LeaseTable()
    changed = [item.address for item in logins if one_by_one.merge(item, NOW_TIME, TIMEOUT, ignore)]
    at_once = LeaseTable()
    assert at_once.merge_all(logins, NOW_TIME, TIMEOUT, ignore) == changed
    assert at_once.leases == one_by_one.leases


def test_an_ignored_address_granted_by_hand_after_merging_is_pruned() -> None:
    ignore = [parse_network("10.0.0.0/8")]
    table = LeaseTable()
    table.merge_all([login("192.0.2.10", 1), login("192.0.2.11", 1)], NOW_TIME, TIMEOUT, ignore)
    table.add("10.1.2.3", NOW_TIME, TIMEOUT)
    table.flush(["192.0.2.11"], NOW_TIME)
    assert table.prune(NOW_TIME, TIMEOUT, ignore) == ["10.1.2.3"]
    assert list(table.leases) == ["192.0.2.10"]


@given(
    flush_micro=st.integers(0, 999_999),
    login_micro=st.integers(0, 999_999),
    login_second=st.integers(-2, 2),
)
def test_a_flush_read_back_from_the_lease_file_beats_every_login_logged_before_it(
    flush_micro: int, login_micro: int, login_second: int
) -> None:
    from exactcron.stores.file import leases_from_json, leases_to_json

    second = datetime(2026, 11, 25, 16, 47, 29, tzinfo=UTC)
    flushed = second.replace(microsecond=flush_micro)
    logged = second + timedelta(seconds=login_second, microseconds=login_micro)
    table = LeaseTable()
    table.flush(["192.0.2.10"], flushed)
    table.flush_all(flushed - timedelta(seconds=5))
    read_back = leases_from_json(json.loads(json.dumps(leases_to_json(table))))
    assert read_back.flushed == table.flushed
    granted = read_back.merge(
        Login.at(logged, "dovecot", "alice", "192.0.2.10"),
        second + timedelta(minutes=1),
        timedelta(minutes=30),
    )
    assert granted is (logged > flushed)
