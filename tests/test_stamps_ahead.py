"""Stamps ahead of the clock, through the command line: up to a minute ahead a
login counts as now; further ahead it is not believed, grants nothing and is
warned about once per source and run; the logins around it still count."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.support.lines import dovecot_login
from tests.support.maps import postmap_value
from tests.support.site import Site


def shown(site: Site, now: str) -> dict[str, dict[str, str]]:
    leases = json.loads(site.run("show", "--json", now=now).output)["leases"]
    return {lease["ip"]: lease for lease in leases}


def test_a_stamp_half_a_minute_ahead_counts_as_now(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:00:30+00:00"))
    assert site.run("update", now="2026-11-25T18:00:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") == "OK"
    lease = shown(site, "2026-11-25T18:00:00+00:00")["192.0.2.10"]
    assert lease["last_login"] == "2026-11-25T18:00:00+00:00"
    assert lease["expires"] == "2026-11-25T18:30:00+00:00"


def test_a_stamp_two_minutes_ahead_grants_nothing_with_one_warning(site: Site) -> None:
    site.write_log(
        dovecot_login("192.0.2.10", time="2026-11-25T18:02:00+00:00"),
        dovecot_login("192.0.2.11", time="2030-01-01T00:00:00+00:00"),
    )
    result = site.run("update", now="2026-11-25T18:00:00+00:00")
    assert result.exit_code == 0
    assert site.map.read_text() == ""
    assert postmap_value(site.map, "192.0.2.10") is None
    assert postmap_value(site.map, "192.0.2.11") is None
    (warning,) = [line for line in result.stderr.splitlines() if "ahead of the clock" in line]
    assert "2 logins stamped more than a minute ahead of the clock granted nothing" in warning
    assert "(the first stamped 2026-11-25T18:02:00+00:00)" in warning
    assert "the writer's clock or the source's `timezone` is wrong" in warning
    # Read once, never believed later either: the clock passing the stamp changes nothing.
    assert site.run("update", now="2030-01-01T00:10:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.11") is None


def test_a_genuine_login_after_one_stamped_ahead_grants_from_its_own_time(site: Site) -> None:
    site.write_log(
        dovecot_login("192.0.2.10", time="2026-11-25T18:02:00+00:00"),
        dovecot_login("192.0.2.10", time="2026-11-25T17:59:50+00:00"),
    )
    assert site.run("update", now="2026-11-25T18:00:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") == "OK"
    lease = shown(site, "2026-11-25T18:00:00+00:00")["192.0.2.10"]
    assert lease["last_login"] == "2026-11-25T17:59:50+00:00"
    assert lease["expires"] == "2026-11-25T18:29:50+00:00"


def test_the_reading_of_a_repeated_hour_more_than_a_minute_ahead_is_dropped(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(timezone="Europe/Berlin")
    # Berlin, 2026-10-25: "02:30" is 00:30 UTC (CEST) or 01:30 UTC (CET). Read at
    # 00:45 UTC, the later reading is 45 minutes ahead: the login is at 00:30.
    site.write_log(dovecot_login("192.0.2.10", time="Oct 25 02:30:00"))
    assert site.run("update", now="2026-10-25T00:45:00+00:00").exit_code == 0
    lease = shown(site, "2026-10-25T00:45:00+00:00")["192.0.2.10"]
    assert lease["last_login"] == "2026-10-25T00:30:00+00:00"
    assert lease["expires"] == "2026-10-25T01:00:00+00:00"
    assert site.run("update", now="2026-10-25T01:01:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") is None


def test_check_says_a_stamp_ahead_of_the_clock_grants_nothing(site: Site) -> None:
    site.write_log(
        dovecot_login("192.0.2.10", time="2026-11-25T18:02:00+00:00"),
        dovecot_login("192.0.2.11", time="2026-11-25T18:00:30+00:00"),
    )
    result = site.run("check", str(site.log), now="2026-11-25T18:00:00+00:00")
    assert result.exit_code == 0, result.output
    assert "stamped more than a minute ahead of the clock (the writer's clock" in result.output
    assert "192.0.2.10" in result.output.split("stamped more than a minute ahead", 1)[1].splitlines()[0]
    assert "192.0.2.11" not in result.output.split("stamped more than a minute ahead", 1)[1].splitlines()[0]
