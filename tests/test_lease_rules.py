"""The lease rules at their edges, through the command line, as an administrator sees them.

`add` never shortens a lease; a lowered timeout shortens existing leases; a
flush wins over logins logged before it whatever their stamp claims; a
broken lease file is rebuilt from the logs whichever command finds it first;
addresses no client logs in from are never granted; and no output hands a
log's control characters to the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.support.lines import dovecot_login
from tests.support.maps import postmap_value
from tests.support.site import Site


def expiry(site: Site, address: str, now: str) -> str | None:
    leases = json.loads(site.run("show", "--json", now=now).output)["leases"]
    return next((lease["expires"] for lease in leases if lease["ip"] == address), None)


def test_add_for_a_shorter_time_never_shortens_a_lease(site: Site) -> None:
    assert site.run("add", "198.51.100.1", "--for", "25m").exit_code == 0
    result = site.run("add", "198.51.100.1", "--for", "1m", now="2026-11-25T18:01:00+00:00")
    assert result.output == "added 198.51.100.1 until 2026-11-25T18:25:00+00:00\n"
    assert expiry(site, "198.51.100.1", "2026-11-25T18:10:00+00:00") == "2026-11-25T18:25:00+00:00"
    assert postmap_value(site.map, "198.51.100.1") == "OK"


def test_a_lowered_timeout_shortens_existing_leases_at_the_next_run(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T17:50:00+00:00"))
    assert site.run("update").exit_code == 0
    assert expiry(site, "192.0.2.10", "2026-11-25T18:00:00+00:00") == "2026-11-25T18:20:00+00:00"
    site.config.write_text(site.config.read_text().replace('timeout = "30m"', 'timeout = "15m"'))
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    # 17:50 + 15 minutes: over at 18:05, and gone from the map then.
    assert expiry(site, "192.0.2.10", "2026-11-25T18:02:00+00:00") == "2026-11-25T18:05:00+00:00"
    assert site.run("update", now="2026-11-25T18:06:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") is None


def test_a_manual_lease_keeps_its_end_when_the_timeout_is_lowered(site: Site) -> None:
    assert site.run("add", "198.51.100.1", "--for", "2h").exit_code == 0
    site.config.write_text(site.config.read_text().replace('timeout = "30m"', 'timeout = "5m"'))
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    assert expiry(site, "198.51.100.1", "2026-11-25T18:02:00+00:00") == "2026-11-25T20:00:00+00:00"


def test_flush_beats_a_login_in_the_repeated_hour_when_clocks_go_back(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(timezone="Europe/Berlin")
    # Berlin, 2026-10-25: 02:00-03:00 local happens twice, at 00:00-01:00 UTC (CEST) and
    # 01:00-02:00 UTC (CET). A login written at 00:30 UTC reads "Oct 25 02:30:00".
    site.write_log(dovecot_login("192.0.2.10", time="Oct 25 02:30:00"))
    assert site.run("flush", "192.0.2.10", now="2026-10-25T00:45:00+00:00").exit_code == 0
    # Read at 01:40 UTC, after the later reading (01:30) of the same wall time.
    assert site.run("update", now="2026-10-25T01:40:00+00:00").exit_code == 0
    assert site.map.read_text() == ""
    assert postmap_value(site.map, "192.0.2.10") is None


def test_flush_beats_a_login_stamped_ahead_by_a_fast_clock(site: Site) -> None:
    # Written before the flush by a clock two minutes ahead; read a minute after the flush.
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:02:00+00:00"))
    assert site.run("flush", "192.0.2.10", now="2026-11-25T18:00:00+00:00").exit_code == 0
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") is None
    # A login read once the clock has passed its stamp, after the flush, grants as usual.
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:03:00+00:00"))
    assert site.run("update", now="2026-11-25T18:04:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") == "OK"


@pytest.mark.parametrize("first", [["add", "198.51.100.9"], ["flush", "192.0.2.11"], ["render"]])
def test_a_broken_lease_file_is_rebuilt_from_the_log_whichever_command_finds_it(
    site: Site, first: list[str]
) -> None:
    site.write_log(dovecot_login("192.0.2.10"), dovecot_login("192.0.2.11", "bob"))
    assert site.run("update").exit_code == 0
    (site.state / "leases.json").write_bytes(b"\x00 garbage")
    assert site.run(*first, now="2026-11-25T18:01:00+00:00").exit_code == 0
    assert site.run("update", now="2026-11-25T18:02:00+00:00").exit_code == 0
    shown = json.loads(site.run("show", "--json", now="2026-11-25T18:02:00+00:00").output)["leases"]
    expected = {"192.0.2.10", "192.0.2.11"}
    if first[0] == "add":
        expected.add("198.51.100.9")
    if first[0] == "flush":
        expected.discard("192.0.2.11")  # the flush made after the damage survives the rebuild
    assert {lease["ip"] for lease in shown} == expected
    assert postmap_value(site.map, "192.0.2.10") == "OK"
    assert (postmap_value(site.map, "192.0.2.11") == "OK") == ("192.0.2.11" in expected)
    # Rebuilt once: the next run is quiet again.
    assert site.run("update", now="2026-11-25T18:03:00+00:00").output == ""


SPECIAL = ["0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "169.254.7.7", "::", "fe80::1", "ff02::1"]


def test_addresses_no_client_logs_in_from_are_never_granted(site: Site) -> None:
    site.write_log(*(dovecot_login(address) for address in SPECIAL), dovecot_login("192.0.2.10"))
    assert site.run("update").exit_code == 0
    assert site.map.read_text() == "192.0.2.10 OK\n"
    for address in SPECIAL:
        result = site.run("add", address)
        assert result.exit_code == 2, address
        assert "never granted" in result.output
    assert site.map.read_text() == "192.0.2.10 OK\n"


HOSTILE_USER = "evil\x1b]2;pwned\x07\x1b[31m\u202e"


def test_control_characters_in_user_names_never_reach_the_terminal(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10", HOSTILE_USER))
    assert site.run("update").exit_code == 0
    for output in (site.run("show").output, site.run("check", str(site.log)).output):
        assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
        assert "evil\\x1b]2;pwned\\x07\\x1b[31m\\u202e" in output
    # JSON stays exact: the user name as logged, escaped by JSON itself.
    (lease,) = json.loads(site.run("show", "--json").output)["leases"]
    assert lease["user"] == HOSTILE_USER


def test_status_escapes_control_characters_in_paths(make_site: Callable[..., Site]) -> None:
    site = make_site()
    hostile = site.root / "mail\x1b[2J.log"
    site.log.rename(hostile)
    site.config.write_text(site.config.read_text().replace(f'"{site.log}"', json.dumps(str(hostile))))
    result = site.run("status")
    assert "\x1b" not in result.output
    assert "mail\\x1b[2J.log" in result.output


def test_flush_records_survive_a_broken_lease_file(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"), dovecot_login("192.0.2.11", "bob"))
    assert site.run("update").exit_code == 0
    assert site.run("flush", "192.0.2.11").exit_code == 0
    leases = site.state / "leases.json"
    # Cut after its first line (a failing disk), which holds the flush records.
    leases.write_bytes(leases.read_bytes().split(b"\n", 1)[0] + b"\n")
    result = site.run("update", now="2026-11-25T18:01:00+00:00")
    assert result.exit_code == 0
    assert "kept 1 flush record of the broken lease file" in result.output
    # The rebuild reads bob's login again, logged before the flush: it grants nothing.
    assert site.map.read_text() == "192.0.2.10 OK\n"
    assert postmap_value(site.map, "192.0.2.11") is None


@pytest.mark.parametrize(
    ("stamp", "granted"),
    [
        ("2026-11-25T16:47:29.610000+00:00", False),  # before the flush, in its second
        ("2026-11-25T16:47:29+00:00", False),  # no fraction, the flush's own second: before it
        ("2026-11-25T16:47:29.900000+00:00", True),  # after the flush
    ],
    ids=["fraction-before", "no-fraction-same-second", "fraction-after"],
)
def test_a_flush_is_remembered_to_the_microsecond(site: Site, stamp: str, granted: bool) -> None:
    # The login is written before the flush and read after it, by a later run.
    assert site.run("update", now="2026-11-25T16:47:29.700000+00:00").exit_code == 0
    assert site.run("flush", "192.0.2.10", now="2026-11-25T16:47:29.800000+00:00").exit_code == 0
    site.write_log(dovecot_login("192.0.2.10", time=stamp))
    assert site.run("update", now="2026-11-25T16:48:00+00:00").exit_code == 0
    assert (postmap_value(site.map, "192.0.2.10") == "OK") is granted
    assert (expiry(site, "192.0.2.10", "2026-11-25T16:48:00+00:00") is not None) is granted


def test_a_lease_file_with_flushes_kept_to_the_second_still_loads(site: Site) -> None:
    (site.state / "leases.json").parent.mkdir(parents=True, exist_ok=True)
    (site.state / "leases.json").write_text(
        '{"flushed":{"192.0.2.10":"2026-11-25T16:47:29+00:00"},"flushed_all":null,"ignore":null,'
        '"leases":[\n],"schema":1}\n'
    )
    site.write_log(
        dovecot_login("192.0.2.10", time="2026-11-25T16:47:28.5+00:00"),
        dovecot_login("192.0.2.11", time="2026-11-25T16:47:28.5+00:00"),
    )
    assert site.run("update", now="2026-11-25T16:48:00+00:00").exit_code == 0
    assert postmap_value(site.map, "192.0.2.10") is None
    assert postmap_value(site.map, "192.0.2.11") == "OK"
