"""Containment: no log line, whatever its bytes, stamp, length or encoding, ends a run.

A line that cannot be read is skipped, counted (`status`, the metric
`exactcron_unreadable_lines_total`) and read past: the checkpoint moves on,
later logins are granted, and ended leases leave the maps. A bug anywhere in
`update` still prunes the maps to the leases in force and is recorded.

The line generators below (stamps of every form and range, hosts, tags,
hostile bytes) are meant to be reused by other whole-run property tests.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exactcron.sources.logfile import BISECT_MIN_BYTES
from exactcron.timestamps import TimestampParser, format_instant
from tests.conftest import NOW, Site, require_tool, write_site_config

OVERFLOW_LOW = (
    "0001-01-01T00:00:00+12:00 vm dovecot[1]: imap-login: Login: user=<b>, method=PLAIN, "
    "rip=192.0.2.11, lip=192.0.2.1, mpid=1, session=<abcdEFGH1235>"
)
OVERFLOW_HIGH = (
    "9999-12-31T23:59:59-12:00 vm dovecot[1]: imap-login: Login: user=<c>, method=PLAIN, "
    "rip=192.0.2.12, lip=192.0.2.1, mpid=1, session=<abcdEFGH1236>"
)


def real_login(address: str, stamp: datetime, user: str = "alice") -> str:
    """A Dovecot login as Debian's rsyslog writes it, from the source's host `mail`."""
    return (
        f"{stamp.isoformat(timespec='microseconds')} mail dovecot: imap-login: Login: user=<{user}>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=10899, TLS, session=<Mr1iP0TtYMEKTQAC>"
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def postmap_keys(map_path: Path) -> set[str]:
    """Every address the postfix hash map answers OK for (`postmap -s` dumps them all)."""
    dumped = subprocess.run(
        [require_tool("postmap"), "-s", f"hash:{map_path}"], capture_output=True, text=True, check=True
    )
    return {line.split()[0] for line in dumped.stdout.splitlines() if line.split()[1:] == ["OK"]}


def postmap_says_ok(map_path: Path, address: str) -> bool:
    found = subprocess.run(
        [require_tool("postmap"), "-q", address, f"hash:{map_path}"], capture_output=True, text=True
    )
    return found.stdout.strip() == "OK"


def shown(site: Site, now: str) -> set[str]:
    result = site.run("show", "--json", now=now)
    assert result.exit_code == 0, result.output
    return {lease["ip"] for lease in json.loads(result.stdout)["leases"]}


def status_json(site: Site, now: str) -> dict[str, object]:
    result = site.run("status", "--json", now=now)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def unreadable_lines(site: Site, now: str) -> int:
    (source,) = status_json(site, now)["sources"]  # type: ignore[misc]
    return source["unreadable_lines"]  # type: ignore[no-any-return]


def append_bytes(site: Site, lines: list[bytes]) -> None:
    with site.log.open("ab") as stream:
        for line in lines:
            stream.write(line + b"\n")


# -- the reproductions ---------------------------------------------------------


def test_a_stamp_out_of_range_is_skipped_counted_and_read_past(site: Site) -> None:
    site.write_log(real_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
    assert site.run("update").exit_code == 0
    assert postmap_says_ok(site.map, "192.0.2.10")
    # The lines rsyslog writes for datagrams stamped at the ends of time, then a real login.
    site.write_log(
        OVERFLOW_LOW, OVERFLOW_HIGH, real_login("192.0.2.20", at("2026-11-25T18:25:00+00:00"), "bob")
    )
    later = "2026-11-25T18:30:00+00:00"  # 192.0.2.10's lease ended at 18:20
    result = site.run("update", now=later)
    assert result.exit_code == 0, result.output
    # One warning for the source, with the count, not one per line.
    warnings = [line for line in result.stderr.splitlines() if "unreadable" in line]
    assert len(warnings) == 1 and "skipped 2 unreadable lines" in warnings[0], result.stderr
    assert postmap_says_ok(site.map, "192.0.2.20")
    assert not postmap_says_ok(site.map, "192.0.2.10")
    assert postmap_keys(site.map) == shown(site, later) == {"192.0.2.20"}
    # The checkpoint moved past them: the next run finds nothing to skip, and the count stays.
    again = site.run("update", now=later)
    assert again.exit_code == 0 and "unreadable" not in again.stderr
    assert unreadable_lines(site, later) == 2
    record = status_json(site, later)
    assert record["healthy"] is True and record["last_error"] is None


def test_the_count_is_in_status_and_in_the_metrics(make_site: Callable[..., Site], tmp_path: Path) -> None:
    metrics = tmp_path / "exactcron.prom"
    site = make_site(extra=f'metrics_file = "{metrics}"')
    site.write_log(OVERFLOW_LOW, real_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
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
    site.write_log(real_login("192.0.2.10", at("2026-11-25T17:55:00+00:00")))
    result = site.run("update")
    assert result.exit_code == 0, result.output
    assert postmap_keys(site.map) == shown(site, NOW) == {"192.0.2.10"}


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
    site.write_log(real_login("192.0.2.10", at("2026-11-25T17:50:00+00:00")))
    assert site.run("update").exit_code == 0
    site.write_log(real_login("192.0.2.20", at("2026-11-25T18:25:00+00:00"), "bob"))
    later = "2026-11-25T18:30:00+00:00"  # 192.0.2.10's lease ended at 18:20
    monkeypatch.setenv("EXACTCRON_FAIL_AT", point)
    result = site.run("update", now=later)
    monkeypatch.delenv("EXACTCRON_FAIL_AT")
    assert result.exit_code == 70
    assert "internal error: RuntimeError" in result.stderr
    assert not postmap_says_ok(site.map, "192.0.2.10")
    assert postmap_keys(site.map) == shown(site, later)
    status = site.run("status", "--json", now=later)
    assert status.exit_code == 1
    assert json.loads(status.stdout)["last_error"].startswith("internal error: RuntimeError")
    assert "failed: internal error" in status.stderr
    # The next run, without the fault, grants what the failed one read.
    assert site.run("update", now=later).exit_code == 0
    assert postmap_keys(site.map) == shown(site, later) == {"192.0.2.20"}


# -- generated lines over the whole run ------------------------------------------

_DIGITS = "0123456789"


def _number(width: int, low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda value: str(value).zfill(width))


def rfc3339_stamps() -> st.SearchStrategy[str]:
    """RFC 3339 stamps of every range, valid or not: years 0001 to 9999, Feb 30, :60,
    hour 24, fractions of any length, offsets to +-25:99, Z, none."""
    year = st.one_of(
        st.sampled_from(["0001", "1969", "1970", "2026", "9000", "9001", "9999"]), _number(4, 0, 9999)
    )
    offset = st.one_of(
        st.sampled_from(["", "Z", "z", "+00:00", "+14:00", "-12:00", "+24:00", "-24:00", "+23:59", "-00:60"]),
        st.builds(
            lambda sign, hours, minutes, colon: f"{sign}{hours}{colon}{minutes}",
            st.sampled_from("+-"),
            _number(2, 0, 25),
            _number(2, 0, 99),
            st.sampled_from([":", ""]),
        ),
    )
    fraction = st.one_of(st.just(""), st.text(_DIGITS, min_size=1, max_size=12).map(lambda text: "." + text))
    return st.builds(
        lambda y, mo, d, sep, h, mi, s, f, o: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{f}{o}",
        year,
        _number(2, 0, 13),
        _number(2, 0, 32),
        st.sampled_from("T "),
        _number(2, 0, 25),
        _number(2, 0, 60),
        _number(2, 0, 61),
        fraction,
        offset,
    )


def extreme_stamps() -> st.SearchStrategy[str]:
    """The edges of time at the offsets that push them over: what found the overflow."""
    return st.builds(
        lambda clock, fraction, offset: clock + fraction + offset,
        st.sampled_from(
            [
                "0001-01-01T00:00:00",
                "0001-01-01 11:59:59",
                "9999-12-31T23:59:59",
                "9999-12-31 12:00:00",
                "1970-01-01T00:00:00",
                "1969-12-31T23:59:59",
                "2026-02-30T10:00:00",
                "2026-11-25T17:59:60",
                "2026-11-25T24:00:00",
            ]
        ),
        st.sampled_from(["", ".5", ".999999999"]),
        st.sampled_from(["", "Z", "+12:00", "+14:00", "-12:00", "+24:00", "-23:59", "+1400"]),
    )


def bsd_stamps() -> st.SearchStrategy[str]:
    """`Mmm dd hh:mm:ss`, of real and false months, days 0 to 39, any padding, :60."""
    month = st.sampled_from(["Jan", "Feb", "Mar", "Oct", "Nov", "Dec", "Foo", "feb"])
    day = st.integers(0, 39).flatmap(lambda day: st.sampled_from([f"{day:2d}", f"{day:02d}", str(day)]))
    return st.builds(
        lambda m, d, h, mi, s: f"{m} {d} {h}:{mi}:{s}",
        month,
        day,
        _number(2, 0, 25),
        _number(2, 0, 60),
        _number(2, 0, 61),
    )


def stamps() -> st.SearchStrategy[str]:
    return st.one_of(extreme_stamps(), rfc3339_stamps(), bsd_stamps(), st.text(max_size=30))


def hosts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["mail", "MAIL", "vm", "", "mail:", "[mail]"]), st.text(max_size=20))


def tags() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            ["dovecot", "dovecot[1]", "dovecot[99999999999]", "imap-login", "pop3-login", "postfix/smtpd[7]"]
        ),
        st.text(max_size=20),
    )


def messages() -> st.SearchStrategy[str]:
    """Login lines' messages, some well formed (from noise addresses), some not."""
    address = st.sampled_from(
        ["192.0.2.50", "192.0.2.51", "2001:db8::5", "0.0.0.0", "999.1.1.1", "::ffff:192.0.2.52"]
    )
    well_formed = st.builds(
        lambda who, rip: (
            f"imap-login: Login: user=<{who}>, method=PLAIN, rip={rip}, lip=10.77.0.1, session=<Ab12>"
        ),
        st.text(max_size=20),
        address,
    )
    return st.one_of(
        well_formed,
        st.text(max_size=80).map(lambda text: "imap-login: Login: " + text),
        st.text(max_size=80).map(lambda text: "Logged in: " + text),
        st.text(max_size=80),
    )


def hostile_bytes() -> st.SearchStrategy[bytes]:
    """What no well-behaved writer sends: NUL, invalid UTF-8, CR, very long lines."""
    return st.one_of(
        st.binary(max_size=200),
        st.sampled_from([b"\x00", b"\xff\xfe", b"\r", b"\xc3", b"\xed\xa0\x80", b"\x1b[2J"]),
        st.integers(8000, 70_000).map(lambda size: b"Login: " + b"x" * size),
    )


def noise_lines() -> st.SearchStrategy[bytes]:
    """A log line of any shape: stamp, host, tag and message, with hostile bytes spliced in."""
    assembled = st.builds(
        lambda stamp, host, tag, message: f"{stamp} {host} {tag}: {message}".encode("utf-8", "surrogatepass"),
        stamps(),
        hosts(),
        tags(),
        messages(),
    )
    spliced = st.builds(
        lambda line, junk, where: line[:where] + junk + line[where:],
        assembled,
        hostile_bytes(),
        st.integers(0, 200),
    )
    return st.one_of(assembled, spliced, hostile_bytes())


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
                lines.append(real_login(address, now - timedelta(seconds=seconds_ago)).encode())
                granted_now.append(address)
        append_bytes(site, lines)
        instant = format_instant(now)
        result = site.run("update", now=instant)
        assert result.exit_code == 0, result.output
        listed = shown(site, instant)
        assert set(granted_now) <= listed
        for address in granted_now:
            assert postmap_says_ok(site.map, address)
        assert postmap_keys(site.map) == listed
        now += RUN_STEP
