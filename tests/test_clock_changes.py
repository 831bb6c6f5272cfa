"""Local stamps across clock changes, as the lease rules read them.

A stamp without an offset in the hour repeated when clocks go back has two
readings: one more than a minute ahead of the clock is dropped, the later of
the rest is the login's time, and a flush wins when any remaining reading is
before it. A stamp in the hour skipped when clocks go forward was written by
a clock not yet moved on: 02:30 is read at the offset before the change
(dateutil's resolve_imaginary: 03:30 after it). Through the command line, then
as a property of the parser and the lease table against a plain reading of
those rules, around both changes of zones that shift by an hour and by half
of one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from exactcron.leases import CLOCK_SLACK, LatestLogins, LeaseTable
from exactcron.model import Login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.timestamps import TimestampParser
from tests.support.lines import dovecot_login
from tests.support.maps import postmap_value
from tests.support.site import Site

ADDRESS = "192.0.2.10"


def lease_of(site: Site, now: str) -> dict[str, str] | None:
    leases = json.loads(site.run("show", "--json", now=now).output)["leases"]
    return next((lease for lease in leases if lease["ip"] == ADDRESS), None)


def lease_after_update(site: Site, now: str) -> tuple[str, str]:
    """An update at `now`, which must put ADDRESS in the map: its lease's last login and expiry."""
    assert site.run("update", now=now).exit_code == 0
    assert postmap_value(site.map, ADDRESS) == "OK"
    lease = lease_of(site, now)
    assert lease is not None
    return lease["last_login"], lease["expires"]


# Berlin, 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET at 01:00 UTC,
# so "02:14" is 00:14 UTC (first pass) and 01:14 UTC (second pass).


def test_a_login_after_a_flush_in_the_repeated_hour_grants(make_site: Callable[..., Site]) -> None:
    site = make_site(timezone="Europe/Berlin")
    assert site.run("flush", ADDRESS, now="2026-10-25T00:10:00+00:00").exit_code == 0
    # Read at 00:16 UTC: the 01:14 reading is an hour ahead and dropped; 00:14 is after the flush.
    site.write_log(dovecot_login(ADDRESS, time="Oct 25 02:14:00"))
    assert lease_after_update(site, "2026-10-25T00:16:00+00:00") == (
        "2026-10-25T00:14:00+00:00",
        "2026-10-25T00:44:00+00:00",
    )


def test_a_login_whose_two_readings_are_past_grants_from_the_later(make_site: Callable[..., Site]) -> None:
    site = make_site(timezone="Europe/Berlin")
    assert site.run("flush", ADDRESS, now="2026-10-25T00:10:00+00:00").exit_code == 0
    site.write_log(dovecot_login(ADDRESS, time="2026-10-25T02:14:00"))
    assert lease_after_update(site, "2026-10-25T01:20:00+00:00") == (
        "2026-10-25T01:14:00+00:00",
        "2026-10-25T01:44:00+00:00",
    )


def test_a_flush_between_the_two_readings_wins(make_site: Callable[..., Site]) -> None:
    site = make_site(timezone="Europe/Berlin")
    # 00:30 UTC: after the first reading of "02:14" (00:14), before the second (01:14).
    assert site.run("flush", ADDRESS, now="2026-10-25T00:30:00+00:00").exit_code == 0
    site.write_log(dovecot_login(ADDRESS, time="2026-10-25T02:14:00"))
    assert site.run("update", now="2026-10-25T01:20:00+00:00").exit_code == 0
    assert postmap_value(site.map, ADDRESS) is None
    assert site.map.read_text() == ""


def test_an_earlier_login_after_the_flush_still_grants_when_a_later_one_may_be_before_it(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(timezone="Europe/Berlin", timeout="2h")
    assert site.run("flush", ADDRESS, now="2026-10-25T00:20:00+00:00").exit_code == 0
    # 00:30 UTC, after the flush; then "02:10", read at 01:15 UTC as 01:10 UTC but
    # perhaps logged at 00:10 UTC, before the flush: it grants nothing, the first does.
    site.write_log(
        dovecot_login(ADDRESS, time="2026-10-25T00:30:00+00:00"),
        dovecot_login(ADDRESS, time="Oct 25 02:10:00"),
    )
    assert lease_after_update(site, "2026-10-25T01:15:00+00:00") == (
        "2026-10-25T00:30:00+00:00",
        "2026-10-25T02:30:00+00:00",
    )


def test_a_login_after_the_flush_still_grants_when_a_later_one_is_stamped_ahead(site: Site) -> None:
    assert site.run("flush", ADDRESS, now="2026-11-25T18:00:00+00:00").exit_code == 0
    # The second is stamped 30 seconds ahead: it counts as now, perhaps logged before the flush.
    site.write_log(
        dovecot_login(ADDRESS, time="2026-11-25T18:01:00+00:00"),
        dovecot_login(ADDRESS, time="2026-11-25T18:02:30+00:00"),
    )
    last_login, _ = lease_after_update(site, "2026-11-25T18:02:00+00:00")
    assert last_login == "2026-11-25T18:01:00+00:00"


def test_a_stamp_in_the_skipped_hour_is_read_at_the_offset_before_the_change(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(timezone="Europe/Berlin")
    # Berlin, 2026-03-29: clocks go forward from 02:00 CET to 03:00 CEST at 01:00 UTC.
    # "02:30" never showed on a clock that had moved on: 02:30 CET is 01:30 UTC.
    site.write_log(dovecot_login(ADDRESS, time="Mar 29 02:30:00"))
    assert lease_after_update(site, "2026-03-29T01:31:00+00:00") == (
        "2026-03-29T01:30:00+00:00",
        "2026-03-29T02:00:00+00:00",
    )


def test_a_traditional_stamp_in_the_repeated_half_hour_of_lord_howe_has_two_readings() -> None:
    # Lord Howe, 2026-04-05: clocks go back half an hour, from 02:00 (+11:00) to
    # 01:30 (+10:30), at 15:00 UTC. "01:45" is 14:45 UTC and again 15:15 UTC.
    parser = TimestampParser(datetime(2026, 4, 5, 0, 0, tzinfo=UTC), ZoneInfo("Australia/Lord_Howe"))
    for text in ("Apr  5 01:45:00 ", "2026-04-05T01:45:00 "):
        parsed = parser.parse_prefix(text)
        assert parsed is not None
        assert (parsed[0], parser.ambiguity) == (
            datetime(2026, 4, 4, 15, 15, tzinfo=UTC),
            timedelta(minutes=30),
        )


# -- the property ---------------------------------------------------------------

ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")  # Lord Howe shifts by 30 minutes
TIMEOUT = timedelta(hours=1)


def changes_in(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC) at which `zone` changes its offset in `year`."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(minutes=15)
        now_offset = moment.astimezone(zone).utcoffset()
        if now_offset != offset:
            found.append(moment)
            offset = now_offset
    return found


CHANGES = [(name, change) for name in ZONES for change in changes_in(ZoneInfo(name), 2026)]


def readings(wall: datetime, zone: ZoneInfo, change: datetime) -> list[datetime]:
    """Every instant whose clock in `zone` shows `wall`, found by trying the
    offsets on either side of the change; in the skipped hour, `wall` at the
    offset before the change (the smaller one: clocks went forward)."""
    offsets = {
        (change + shift).astimezone(zone).utcoffset() for shift in (-timedelta(days=1), timedelta(days=1))
    }
    found = []
    for offset in offsets:
        assert offset is not None
        instant = (wall - offset).replace(tzinfo=UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            found.append(instant)
    if not found:
        found.append((wall - min(o for o in offsets if o is not None)).replace(tzinfo=UTC))
    return found


def expected_lease(
    wall: datetime, zone: ZoneInfo, change: datetime, now: datetime, flush: datetime | None
) -> tuple[datetime, datetime] | None:
    """(last_login, expires) by the interface's lease rules, or None."""
    remaining = [reading for reading in readings(wall, zone, change) if reading <= now + CLOCK_SLACK]
    if not remaining:
        return None
    time = max(remaining)
    if time > now:  # up to a minute ahead counts as now, perhaps logged before any flush
        time, beaten = now, flush is not None
    else:
        beaten = flush is not None and min(remaining) <= flush
    second = time.replace(microsecond=0)
    if beaten or second <= now - TIMEOUT:
        return None
    return second, second + TIMEOUT


@given(
    st.sampled_from(CHANGES),
    st.integers(-150 * 60, 150 * 60),
    st.integers(0, 999_999),
    st.booleans(),
    st.integers(-90 * 60, 180 * 60),
    st.one_of(st.none(), st.integers(0, 150 * 60)),
)
def test_the_readings_of_a_local_stamp_follow_the_lease_rules(
    named_change: tuple[str, datetime],
    seconds_from_change: int,
    microsecond: int,
    traditional: bool,
    read_after_change: int,
    flushed_before_reading: int | None,
) -> None:
    name, change = named_change
    zone = ZoneInfo(name)
    # A wall time near the change, as the clock there shows it just before or after.
    wall = (change.astimezone(zone) + timedelta(seconds=seconds_from_change)).replace(tzinfo=None)
    if traditional:
        stamp, microsecond = wall.strftime("%b %d %H:%M:%S"), 0
    else:
        stamp = wall.strftime("%Y-%m-%dT%H:%M:%S") + f".{microsecond:06d}"
    wall = wall.replace(microsecond=microsecond)
    now = change + timedelta(seconds=read_after_change)
    flush = None if flushed_before_reading is None else now - timedelta(seconds=flushed_before_reading)

    parser = LineParser((BUILTIN_RULES["dovecot"],), TimestampParser(now, zone))
    login = parser.parse(dovecot_login(ADDRESS, time=stamp).encode())
    assert login is not None
    table = LeaseTable()
    if flush is not None:
        table.flush([ADDRESS], flush)
    kept = LatestLogins()
    kept.keep([login], now)
    table.merge_all(kept.logins(), now, TIMEOUT)
    lease = table.leases.get(ADDRESS)
    got = None if lease is None else (lease.last_login, lease.expires)
    assert got == expected_lease(wall, zone, change, now, flush)


# -- the latest login per address -------------------------------------------------

BASE = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)
LOGINS = st.builds(
    lambda minutes, ambiguity: Login.at(
        BASE + timedelta(minutes=minutes),
        "dovecot",
        "alice",
        ADDRESS,
        None if ambiguity is None else BASE + timedelta(minutes=minutes - ambiguity),
    ),
    st.integers(-120, 3),  # up to 3 minutes ahead of the clock
    st.one_of(st.none(), st.sampled_from([30, 60])),
)


@given(st.lists(LOGINS, max_size=8), st.one_of(st.none(), st.integers(-150, 0)))
def test_the_logins_kept_grant_what_merging_every_login_would(
    logins: list[Login], flushed: int | None
) -> None:
    """What update and the shared store merge (LatestLogins) is what merging
    each login in log order would grant, whatever flush the store holds."""

    def table() -> LeaseTable:
        made = LeaseTable()
        if flushed is not None:
            made.flush([ADDRESS], BASE + timedelta(minutes=flushed))
        return made

    now = BASE
    one_by_one = table()
    for login in logins:
        one_by_one.merge(login, now, TIMEOUT)
    kept = LatestLogins()
    kept.keep(logins, now)
    merged = table()
    merged.merge_all(kept.logins(), now, TIMEOUT)
    assert merged.leases == one_by_one.leases
