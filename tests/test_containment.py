"""Containment: no log line, whatever its bytes, stamp, length or encoding, ends a run.

A line that cannot be read is skipped, counted (`status`, the metric
`exactcron_unreadable_lines_total`) and read past: the checkpoint moves on,
later logins are granted, and ended leases leave the maps. A bug anywhere in
`update` still prunes the maps to the leases in force and is recorded.

The line generators (stamps of every form and range, hosts, tags, hostile
bytes) live in tests/support/log_generators.py, shared with other whole-run tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exactcron.sources.logfile import BISECT_MIN_BYTES
from exactcron.timestamps import TimestampParser, format_instant
from tests.support.clock import NOW
from tests.support.lines import dovecot_imap_login
from tests.support.log_generators import noise_lines
from tests.support.maps import map_keys
from tests.support.site import Site, write_site_config
from tests.support.tools import require_tool
from tests.support.whole_run import (
    append_bytes,
    at,
    postmap_says_ok,
    shown,
    status_json,
    unreadable_lines,
)

OVERFLOW_LOW = (
    "0001-01-01T00:00:00+12:00 vm dovecot[1]: imap-login: Login: user=<b>, method=PLAIN, "
    "rip=192.0.2.11, lip=192.0.2.1, mpid=1, session=<abcdEFGH1235>"
)
OVERFLOW_HIGH = (
    "9999-12-31T23:59:59-12:00 vm dovecot[1]: imap-login: Login: user=<c>, method=PLAIN, "
    "rip=192.0.2.12, lip=192.0.2.1, mpid=1, session=<abcdEFGH1236>"
)


# -- the reproductions ---------------------------------------------------------


def test_a_stamp_out_of_range_is_skipped_counted_and_read_past(site: Site) -> None:
    site.write_log(dovecot_imap_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
    assert site.run("update").exit_code == 0
    assert postmap_says_ok(site.map, "192.0.2.10")
    # The lines rsyslog writes for datagrams stamped at the ends of time, then a real login.
    site.write_log(
        OVERFLOW_LOW, OVERFLOW_HIGH, dovecot_imap_login("192.0.2.20", at("2026-11-25T18:25:00+00:00"), "bob")
    )
    later = "2026-11-25T18:30:00+00:00"  # 192.0.2.10's lease ended at 18:20
    result = site.run("update", now=later)
    assert result.exit_code == 0, result.output
    # One warning for the source, with the count, not one per line.
    warnings = [line for line in result.stderr.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and "skipped 2 unreadable lines" in warnings[0], result.stderr
    assert postmap_says_ok(site.map, "192.0.2.20")
    assert not postmap_says_ok(site.map, "192.0.2.10")
    assert map_keys(site.map) == shown(site, later) == {"192.0.2.20"}
    # The checkpoint moved past them: the next run finds nothing to skip, and the count stays.
    again = site.run("update", now=later)
    assert again.exit_code == 0 and "unreadable" not in again.stderr
    assert unreadable_lines(site, later) == 2
    record = status_json(site, later)
    assert record["healthy"] is True and record["last_error"] is None


def test_the_count_is_in_status_and_in_the_metrics(make_site: Callable[..., Site], tmp_path: Path) -> None:
    metrics = tmp_path / "exactcron.prom"
    site = make_site(extra=f'metrics_file = "{metrics}"')
    site.write_log(OVERFLOW_LOW, dovecot_imap_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
    assert site.run("update").exit_code == 0
    site.write_log(OVERFLOW_HIGH, "2026-02-30T10:00:00+00:00 mail dovecot: imap-login: Login: user=<x>")
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    text = site.run("status", now="2026-11-25T18:01:00+00:00").stdout
    assert "  unreadable lines: 3\n" in text
    assert unreadable_lines(site, "2026-11-25T18:01:00+00:00") == 3
    exposition = metrics.read_text()
    assert "# TYPE exactcron_unreadable_lines_total counter\n" in exposition
    assert f'exactcron_unreadable_lines_total{{source="{site.log}"}} 3\n' in exposition


def test_bisecting_a_large_first_log_reads_past_stamps_out_of_range(site: Site) -> None:
    # A first read of a log this large looks for the start of the timeout window by its stamps.
    filler = b"0001-01-01T00:00:00+12:00 mail postfix/smtpd[1]: connect from unknown[192.0.2.99]\n"
    with site.log.open("wb") as stream:
        stream.write(filler * (BISECT_MIN_BYTES // len(filler) + 1000))
    site.write_log(dovecot_imap_login("192.0.2.10", at("2026-11-25T17:55:00+00:00")))
    result = site.run("update")
    assert result.exit_code == 0, result.output
    assert map_keys(site.map) == shown(site, NOW) == {"192.0.2.10"}


def test_the_stamp_of_a_line_for_bisecting_is_none_out_of_range() -> None:
    parser = TimestampParser(at(NOW), UTC)
    assert parser.stamp(OVERFLOW_LOW.encode()) is None
    assert parser.stamp(OVERFLOW_HIGH.encode()) is None


@pytest.mark.parametrize("realtime", ["-1", "99999999999999999999", "1e5", "", None, 7, " 12"])
def test_a_journal_entry_whose_time_cannot_be_read_is_unreadable(realtime: object) -> None:
    entry = {
        "_SYSTEMD_UNIT": "dovecot.service",
        "MESSAGE": "imap-login: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2",
        "SYSLOG_IDENTIFIER": "dovecot",
        "_HOSTNAME": "mail",
        "__REALTIME_TIMESTAMP": realtime,
    }
    from exactcron.sources.journal import UnreadableEntry, entry_line

    with pytest.raises(UnreadableEntry):
        entry_line(entry, frozenset({"dovecot.service"}))


@pytest.mark.parametrize("point", ["update:merged", "update:maps-written"])
def test_an_internal_error_prunes_the_maps_and_is_recorded(
    site: Site, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.write_log(dovecot_imap_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
    assert site.run("update").exit_code == 0
    site.write_log(dovecot_imap_login("192.0.2.20", at("2026-11-25T18:25:00+00:00"), "bob"))
    later = "2026-11-25T18:30:00+00:00"  # 192.0.2.10's lease ended at 18:20
    monkeypatch.setenv("EXACTCRON_FAIL_AT", point)
    result = site.run("update", now=later)
    monkeypatch.delenv("EXACTCRON_FAIL_AT")
    assert result.exit_code == 70
    assert "internal error: RuntimeError" in result.stderr
    assert not postmap_says_ok(site.map, "192.0.2.10")
    assert map_keys(site.map) == shown(site, later)
    status = site.run("status", "--json", now=later)
    assert status.exit_code == 1
    assert json.loads(status.stdout)["last_error"].startswith("internal error: RuntimeError")
    assert "failed: internal error" in status.stderr
    # The next run, without the fault, grants what the failed one read.
    assert site.run("update", now=later).exit_code == 0
    assert map_keys(site.map) == shown(site, later) == {"192.0.2.20"}


# -- generated lines over the whole run ------------------------------------------

RUN_STEP = timedelta(minutes=7)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(
    runs=[
        [(OVERFLOW_LOW.encode(), True, 60), (OVERFLOW_HIGH.encode(), False, 0)],
        [(b"\x00\xff\r" + OVERFLOW_LOW.encode(), True, 30)],
    ]
)
@given(
    runs=st.lists(
        st.lists(st.tuples(noise_lines(), st.booleans(), st.integers(0, 1200)), min_size=1, max_size=12),
        min_size=2,
        max_size=4,
    )
)
def test_no_generated_line_stops_a_run_or_hides_a_login(
    tmp_path_factory: pytest.TempPathFactory, runs: list[list[tuple[bytes, bool, int]]]
) -> None:
    require_tool("postmap")
    root = tmp_path_factory.mktemp("containment")
    state = root / "state"
    config = write_site_config(root, state, settings='timeout = "30m"')
    (root / "mail.log").touch()
    site = Site(root, config, root / "mail.log", state, state / "relay")
    now = at(NOW)
    real_number = 0
    for batch in runs:
        lines: list[bytes] = []
        granted_now: list[str] = []
        for noise, with_login, seconds_ago in batch:
            lines.append(noise)
            if with_login:
                real_number += 1
                address = f"198.51.100.{real_number}"
                # A user of its own: the guard (on by default) limits the addresses one user holds.
                login = dovecot_imap_login(
                    address, now - timedelta(seconds=seconds_ago), f"user{real_number}"
                )
                lines.append(login.encode())
                granted_now.append(address)
        append_bytes(site, lines)
        instant = format_instant(now)
        result = site.run("update", now=instant)
        assert result.exit_code == 0, result.output
        listed = shown(site, instant)
        assert set(granted_now) <= listed
        for address in granted_now:
            assert postmap_says_ok(site.map, address)
        assert map_keys(site.map) == listed
        now += RUN_STEP
