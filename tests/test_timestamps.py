"""Syslog stamps to UTC: the year a traditional stamp belongs to, zones, DST."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from exactcron.timestamps import TimestampParser, parse_instant

BERLIN = ZoneInfo("Europe/Berlin")


def stamp(text: str, now: str, zone: object = UTC) -> datetime | None:
    parsed = TimestampParser(parse_instant(now), zone).parse_prefix(text + " mx dovecot: x")  # type: ignore[arg-type]
    return None if parsed is None else parsed[0]


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        # The same year when the stamp is not ahead of the clock.
        ("Nov 25 17:32:47", "2026-11-25T17:40:00+00:00", "2026-11-25T17:32:47+00:00"),
        # Dec 31 read just after midnight on Jan 1: last year.
        ("Dec 31 23:59:58", "2027-01-01T00:00:30+00:00", "2026-12-31T23:59:58+00:00"),
        # The writer's clock a little ahead, across New Year: next year, not last.
        ("Jan  1 00:00:05", "2026-12-31T23:59:50+00:00", "2027-01-01T00:00:05+00:00"),
        # More than a day ahead: from last year.
        ("Nov 27 10:00:00", "2026-11-25T10:00:00+00:00", "2025-11-27T10:00:00+00:00"),
        # Less than a day ahead: clock skew, this year.
        ("Nov 25 20:00:00", "2026-11-25T10:00:00+00:00", "2026-11-25T20:00:00+00:00"),
        # Feb 29 exists in 2028 only.
        ("Feb 29 12:00:00", "2028-03-01T00:00:00+00:00", "2028-02-29T12:00:00+00:00"),
        ("Feb 29 12:00:00", "2029-03-01T00:00:00+00:00", "2028-02-29T12:00:00+00:00"),
    ],
)
def test_the_year_of_a_traditional_stamp(text: str, now: str, expected: str) -> None:
    assert stamp(text, now) == parse_instant(expected)


@pytest.mark.parametrize("text", ["Mar  5 08:09:10", "Mar 5 08:09:10", "Mar 05 08:09:10"])
def test_a_day_padded_with_a_space_unpadded_or_zero_padded(text: str) -> None:
    assert stamp(text, "2026-11-25T00:00:00+00:00") == datetime(2026, 3, 5, 8, 9, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "Feb 30 10:00:00",
        "Nov 00 10:00:00",
        "Nov 25 24:00:00",
        "Nov 25 10:60:00",
        "Foo 25 10:00:00",
        "nov 25 10:00:00",
    ],
)
def test_no_such_date_is_no_stamp(text: str) -> None:
    assert stamp(text, "2026-11-25T12:00:00+00:00") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T17:50:13.486319+00:00", datetime(2026, 11, 25, 17, 50, 13, 486319, tzinfo=UTC)),
        ("2026-11-25T18:50:13+01:00", datetime(2026, 11, 25, 17, 50, 13, tzinfo=UTC)),
        ("2026-11-25T12:20:13-05:30", datetime(2026, 11, 25, 17, 50, 13, tzinfo=UTC)),
        ("2026-11-25T17:50:13Z", datetime(2026, 11, 25, 17, 50, 13, tzinfo=UTC)),
    ],
)
def test_rfc3339_with_an_offset_ignores_the_configured_zone(text: str, expected: datetime) -> None:
    assert stamp(text, "2026-11-25T18:00:00+00:00", BERLIN) == expected


def test_rfc3339_garbage_is_no_stamp() -> None:
    assert stamp("2026-13-25T17:50:13+00:00", "2026-11-25T18:00:00+00:00") is None
    assert stamp("2026-11-25T17:50:13+25:00", "2026-11-25T18:00:00+00:00") is None


def test_stamps_without_an_offset_are_read_in_the_configured_zone() -> None:
    now = "2026-07-01T12:00:00+00:00"
    assert stamp("Jul  1 13:00:00", now, BERLIN) == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)
    assert stamp("2026-07-01T13:00:00", now, BERLIN) == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)
    assert stamp("Jan  1 13:00:00", now, BERLIN) == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_an_hour_that_happens_twice_is_read_as_the_later_one() -> None:
    # Berlin set its clocks back from 03:00 CEST to 02:00 CET on 2026-10-25:
    # 02:30 local is 00:30 UTC and again 01:30 UTC. The later one lets the
    # lease end later rather than too early.
    now = "2026-10-25T03:00:00+00:00"
    assert stamp("Oct 25 02:30:00", now, BERLIN) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert stamp("2026-10-25T02:30:00", now, BERLIN) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def test_an_hour_that_never_happened_still_gives_a_time() -> None:
    # 2026-03-29 02:30 does not exist in Berlin (02:00 CET -> 03:00 CEST).
    result = stamp("Mar 29 02:30:00", "2026-03-29T06:00:00+00:00", BERLIN)
    assert result is not None
    assert datetime(2026, 3, 29, 0, 30, tzinfo=UTC) <= result <= datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_stamp_of_a_raw_line() -> None:
    parser = TimestampParser(parse_instant("2026-11-25T18:00:00+00:00"), UTC)
    assert parser.stamp(b"Nov 25 17:00:00 mx postfix/smtpd[1]: connect") == datetime(
        2026, 11, 25, 17, tzinfo=UTC
    )
    assert parser.stamp(b"\xff\xfe garbage") is None
    assert parser.stamp(b"") is None


@pytest.mark.parametrize(
    "clock",
    [
        "2026-11-25T17:50:10",
        "2026-11-25 00:00:00",
        "2026-02-29T12:00:00",
        "2024-02-29T23:59:59",
        "2026-13-01T00:00:00",
    ],
)
@pytest.mark.parametrize(
    "offset", ["+00:00", "-05:30", "+23:59", "+24:00", "-00:60", "+01:99", "Z", "z", "+0100", None]
)
def test_a_raw_stamp_is_read_as_the_stamp_of_a_line(clock: str, offset: str | None) -> None:
    parser = TimestampParser(datetime(2026, 11, 25, 18, 0, tzinfo=UTC), ZoneInfo("Europe/Berlin"))
    text = clock + (offset or "") + " "
    parsed = parser.parse_prefix(text)
    expected = (parsed[0], parser.ambiguity) if parsed is not None else None
    assert parser.second_of(clock.encode(), offset.encode() if offset else None) == expected
