"""Syslog timestamps to aware UTC datetimes.

Two forms are read: RFC 3339 (what Debian's rsyslog writes, with an offset)
and the traditional BSD form `Nov 25 17:32:47`, which carries neither a year
nor a zone. dateutil's parser is not used here: it is slow, and lenient enough
to read a date into text that is not one.

A stamp without an offset is a wall-clock time in the source's zone. In the
hour repeated when clocks go back it has two readings, and in the hour skipped
when they go forward none: `dateutil.tz` says which (`datetime_exists`,
`datetime_ambiguous`, `resolve_imaginary`). It is imported only for a stamp in
an hour whose offset changes, so a run in UTC, or with offsets in its stamps,
never loads it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import NamedTuple

from exactcron.records import dataclass, field

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

# A stamp up to this far ahead of the clock is taken as clock skew between
# the writer and us; further ahead, it must be from the previous year.
FUTURE_SLACK = timedelta(days=1)

# The years a stamp may name. No Unix clock writes a year before 1970, and
# none this far ahead; a stamp outside them (`0001-01-01T00:00:00+12:00`,
# which rsyslog writes as a datagram gave it) is unreadable, not a time.
# The margin keeps every instant computed from a stamp (shifted by its
# offset, a DST ambiguity, a timeout) inside what a datetime can hold.
FIRST_YEAR = 1970
LAST_YEAR = 9000

# The shapes of a stamp, as pieces of pattern text without groups: the two
# patterns below and LineParser's one bytes pattern for the whole line head
# (rules.forms.LINE_HEAD) are built from them, so the two readers of a line
# cannot disagree on what a stamp is. ASCII only (bytes patterns take them).
TWO_DIGITS = r"\d\d"
CLOCK = rf"{TWO_DIGITS}:{TWO_DIGITS}:{TWO_DIGITS}"
DATE = r"\d{4}-\d\d-\d\d"
DATE_CLOCK_SEPARATOR = "[T ]"
# An RFC 3339 stamp to the second: what is looked up once per second.
RFC3339_SECOND = rf"{DATE}{DATE_CLOCK_SEPARATOR}{CLOCK}"
FRACTION = r"\.\d{1,9}"
OFFSET = r"[Zz]|[+-]\d\d:?\d\d"
MONTH_NAME = r"[A-Z][a-z]{2}"
DAY_OF_MONTH = r"[ 0-3]?\d"
# A traditional (BSD syslog) stamp: `Nov 25 17:32:47`.
TRADITIONAL_STAMP = rf"{MONTH_NAME} {DAY_OF_MONTH} {CLOCK}"


@lru_cache(maxsize=1)
def stamp_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The RFC 3339 stamp and the traditional one, compiled at the first stamp
    read: a quiet run reads none."""
    return (
        re.compile(rf"({DATE}){DATE_CLOCK_SEPARATOR}({CLOCK})({FRACTION})?({OFFSET})? ", re.ASCII),
        re.compile(
            rf"({MONTH_NAME}) ({DAY_OF_MONTH}) ({TWO_DIGITS}):({TWO_DIGITS}):({TWO_DIGITS}) ", re.ASCII
        ),
    )


_SECOND_CACHE_SIZE = 1 << 16


class _Hour(NamedTuple):
    """An hour of a traditional stamp, its year inferred."""

    wall: datetime  # naive, in the source's zone
    start: datetime  # in UTC
    plain: bool  # see _local_hour


@dataclass
class TimestampParser:
    """Reads the stamp at the start of a log line.

    `now` anchors the year of traditional stamps; `zone` is the zone of
    stamps written without an offset.
    """

    now: datetime
    zone: tzinfo
    # (month, day, hour) of a traditional stamp -> that hour, its year inferred.
    _hour_cache: dict[tuple[int, int, int], _Hour | None] = field(default_factory=dict)
    # (date, clock, offset) of an RFC 3339 stamp -> that second in UTC and its
    # ambiguity: log lines share their second with many others, and the fraction is added.
    _second_cache: dict[tuple[str, str, str | None], tuple[datetime, timedelta] | None] = field(
        default_factory=dict
    )
    # How much earlier the stamp last parsed may have been: non-zero for a
    # local time in the hour that occurs twice when clocks go back, which
    # is read as the later instant (a lease never ends early) but may be the
    # earlier one (a flush made in between must still win; see believed_login).
    ambiguity: timedelta = field(default=timedelta(0))
    # (clock, offset) bytes of a stamp, as LineParser's pattern takes it apart -> that second in UTC.
    _raw_cache: dict[tuple[bytes, bytes | None], tuple[datetime, timedelta] | None] = field(
        default_factory=dict
    )
    # stamp_patterns(), held here: read for every line.
    _rfc3339: re.Pattern[str] = field(
        default_factory=lambda: stamp_patterns()[0], init=False, compare=False, repr=False
    )
    _traditional: re.Pattern[str] = field(
        default_factory=lambda: stamp_patterns()[1], init=False, compare=False, repr=False
    )

    def parse_prefix(self, line: str) -> tuple[datetime, int] | None:
        """Return the stamp at the start of `line` and where the rest begins."""
        self.ambiguity = timedelta(0)
        if not line:
            return None
        if line[0].isdigit():
            match = self._rfc3339.match(line)
            if match is None:
                return None
            date, clock, fraction, offset = match.groups()
            key = (date, clock, offset)
            if key in self._second_cache:
                found = self._second_cache[key]
            else:
                if len(self._second_cache) >= _SECOND_CACHE_SIZE:
                    self._second_cache.clear()  # a hostile log may hold every second there is
                found = self._second_cache[key] = _rfc3339(date, clock, offset, self.zone)
            if found is None:
                return None
            whole_second, self.ambiguity = found
            if fraction is None:
                return whole_second, match.end()
            # Offsets are whole minutes, so the fraction survives the shift to UTC as it is.
            return whole_second.replace(microsecond=int(fraction[1:7].ljust(6, "0"))), match.end()
        match = self._traditional.match(line)
        if match is None:
            return None
        month = MONTHS.get(match.group(1))
        if month is None:
            return None
        day = int(match.group(2))
        hour, minute, second = int(match.group(3)), int(match.group(4)), int(match.group(5))
        if hour > 23 or minute > 59 or second > 60:
            return None
        hour_found = self._start_of_hour(month, day, hour)
        if hour_found is None:
            return None
        wall_hour, start_of_hour, plain = hour_found
        # A leap second (:60) is read as the next second; syslog rarely writes one.
        into_hour = timedelta(minutes=minute, seconds=second)
        if plain and second < 60:
            return start_of_hour + into_hour, match.end()
        reading, self.ambiguity = read_local(wall_hour + into_hour, self.zone)
        return reading, match.end()

    def second_of(self, clock: bytes, offset: bytes | None) -> tuple[datetime, timedelta] | None:
        """The UTC second of a raw stamp without its fraction (an RFC 3339 date, time
        and offset or none, or a traditional `Nov 25 17:32:47`), and its ambiguity."""
        key = (clock, offset)
        try:
            return self._raw_cache[key]
        except KeyError:
            pass
        if len(self._raw_cache) >= _SECOND_CACHE_SIZE:
            self._raw_cache.clear()  # a hostile log may hold every second there is
        found = _offset_second(clock, offset)
        if found is None:
            text = (
                clock.decode("ascii", "replace") + (offset.decode("ascii", "replace") if offset else "") + " "
            )
            parsed = self.parse_prefix(text)
            found = (parsed[0], self.ambiguity) if parsed and parsed[1] == len(text) else None
        self._raw_cache[key] = found
        return found

    def stamp(self, line: bytes) -> datetime | None:
        """The time at the start of a raw log line, or None (for bisecting a log)."""
        try:
            parsed = self.parse_prefix(line[:48].decode("ascii", "replace"))
        except (ValueError, OverflowError):  # never expected: the years are checked; no line stops a run
            return None
        return parsed[0] if parsed else None

    def _start_of_hour(self, month: int, day: int, hour: int) -> _Hour | None:
        key = (month, day, hour)
        if key not in self._hour_cache:
            self._hour_cache[key] = infer_year(month, day, hour, self.now, self.zone)
        return self._hour_cache[key]


_NO_AMBIGUITY = timedelta(0)


def _offset_second(clock: bytes, offset: bytes | None) -> tuple[datetime, timedelta] | None:
    """The UTC second of an RFC 3339 stamp with a `+HH:MM` or `Z` offset, when
    `datetime.fromisoformat` reads it; None leaves it to `parse_prefix`.

    A log holds a new second every few lines: this is five times faster.
    """
    if offset is None or not clock[:1].isdigit() or not _readable_year(clock[:4]):
        return None
    try:
        if len(offset) == 6 and offset[3:4] == b":":
            return datetime.fromisoformat((clock + offset).decode("ascii")).astimezone(UTC), _NO_AMBIGUITY
        if offset in (b"Z", b"z"):
            return datetime.fromisoformat(clock.decode("ascii")).replace(tzinfo=UTC), _NO_AMBIGUITY
    except ValueError:
        pass
    return None


def _readable_year(digits: bytes) -> bool:
    return digits.isdigit() and FIRST_YEAR <= int(digits) <= LAST_YEAR


def looks_stamped(text: str) -> bool:
    """Whether `text` starts with what has the shape of a stamp, readable or not."""
    rfc3339, traditional = stamp_patterns()
    return (rfc3339 if text[:1].isdigit() else traditional).match(text) is not None


def _rfc3339(date: str, clock: str, offset: str | None, zone: tzinfo) -> tuple[datetime, timedelta] | None:
    """A stamp to the second, in UTC, and its ambiguity; in `zone` when it carries no offset."""
    try:
        stamp = datetime.fromisoformat(f"{date}T{clock}")
    except ValueError:
        return None
    if not FIRST_YEAR <= stamp.year <= LAST_YEAR:
        return None
    if offset is None:
        return read_local(stamp, zone)
    if offset in ("Z", "z"):
        return stamp.replace(tzinfo=UTC), _NO_AMBIGUITY
    sign = 1 if offset[0] == "+" else -1
    digits = offset[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    if delta >= timedelta(hours=24):
        return None
    return (stamp - sign * delta).replace(tzinfo=UTC), _NO_AMBIGUITY


def infer_year(month: int, day: int, hour: int, now: datetime, zone: tzinfo) -> _Hour | None:
    """The latest hour with this month, day and hour whose start is not ahead of
    `now` by more than FUTURE_SLACK. None when the date exists in no nearby year."""
    local_year = now.astimezone(zone).year
    for year in (local_year + 1, local_year, local_year - 1, local_year - 2, local_year - 3, local_year - 4):
        try:
            naive = datetime(year, month, day, hour)
        except ValueError:  # Feb 29 outside a leap year, Apr 31, day 0
            continue
        start, plain = _local_hour(naive, zone)
        if not plain:
            start = read_local(naive, zone)[0]
        if start <= now + FUTURE_SLACK:
            return _Hour(naive, start, plain)
    return None


def read_local(wall: datetime, zone: tzinfo) -> tuple[datetime, timedelta]:
    """A wall-clock time in `zone` (naive, to the second) as the lease rules read
    it: its later reading in UTC, and how much earlier its other reading is
    (zero but in the hour repeated when clocks go back)."""
    if zone is UTC:
        return wall.replace(tzinfo=UTC), _NO_AMBIGUITY
    hour = wall.replace(minute=0, second=0, microsecond=0)
    start, plain = _local_hour(hour, zone)
    if plain:
        return start + (wall - hour), _NO_AMBIGUITY
    return _read_at_a_change(wall, zone)


@lru_cache(maxsize=4096)
def _local_hour(hour: datetime, zone: tzinfo) -> tuple[datetime, bool]:
    """The start of a wall-clock hour in UTC, and whether it is plain: one offset
    from its first second to its last, whichever fold. Any hour in which clocks
    change is not: each of its times is read by `_read_at_a_change`."""
    last = hour + timedelta(minutes=59, seconds=59)
    offsets = {
        moment.replace(tzinfo=zone, fold=fold).utcoffset() for moment in (hour, last) for fold in (0, 1)
    }
    return hour.replace(tzinfo=zone).astimezone(UTC), len(offsets) == 1


@lru_cache(maxsize=4096)
def _read_at_a_change(wall: datetime, zone: tzinfo) -> tuple[datetime, timedelta]:
    """`read_local` of a time in an hour in which the zone's offset changes."""
    # Loaded here only: a run whose stamps carry offsets, or are in UTC, never needs it.
    from dateutil import tz

    local = wall.replace(tzinfo=zone)
    # First: with zoneinfo, datetime_ambiguous also says True of a time that never was.
    if not tz.datetime_exists(local):
        # The hour skipped when clocks go forward: a stamp there was written by
        # a clock not yet moved on. resolve_imaginary reads 02:30 as 03:30 after
        # the change, the instant 02:30 names at the offset before it (and the
        # later of the two the stamp could mean, so a lease never ends early).
        moved_on: datetime = tz.resolve_imaginary(local)
        return moved_on.astimezone(UTC), _NO_AMBIGUITY
    if tz.datetime_ambiguous(local):
        later: datetime = tz.enfold(local, fold=1).astimezone(UTC)
        earlier: datetime = tz.enfold(local, fold=0).astimezone(UTC)
        return later, max(later - earlier, _NO_AMBIGUITY)
    return local.astimezone(UTC), _NO_AMBIGUITY


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with an offset, as given to `--now`. Raises ValueError."""
    stamp = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (for example 2026-11-25T17:40:00+00:00)")
    return stamp.astimezone(UTC)


def utc_stamp(time: datetime) -> str:
    """ISO 8601 in UTC to the second, with Z: `2026-11-30T13:00:00Z` (log_file's and the audit trail's)."""
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_instant(stamp: datetime) -> str:
    """ISO 8601 with offset, to the second, as written in state and output."""
    if stamp.tzinfo is not UTC:
        stamp = stamp.astimezone(UTC)
    return stamp.isoformat(timespec="seconds")
