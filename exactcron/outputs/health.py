"""Whether relay control is still running: the record each update leaves, and what it means.

Pure: the record in and out as JSON values; the caller reads and writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from exactcron.records import dataclass, field, replace
from exactcron.timestamps import format_instant, parse_instant

# A log that is missing for longer than this is not being rotated: logrotate
# renames it and the syslog daemon (or `create`) makes a new one within a
# second or two; two cron runs a minute apart finding none is no rotation.
ROTATION_GRACE = timedelta(minutes=2)

# The grant delays the metrics' quantiles are taken over: the latest this many.
RECENT_GRANT_DELAYS = 1000


@dataclass(frozen=True)
class FollowerRecord:
    """One `update --follow`: who (pid, started), until when, and what its steps did.

    `steps` counts its runs, its first one included; `granted`, the leases
    they granted or extended."""

    pid: int
    started: datetime
    until: datetime
    steps: int = 0
    granted: int = 0

    def same(self, other: FollowerRecord | None) -> bool:
        """Whether `other` is this follower: its pid and its start, to the second (as recorded)."""
        return other is not None and (other.pid, format_instant(other.started)) == (
            self.pid,
            format_instant(self.started),
        )

    @classmethod
    def from_json(cls, document: object) -> FollowerRecord | None:
        if not isinstance(document, dict):
            return None
        pid = document.get("pid")
        started = _instant(document.get("started"))
        until = _instant(document.get("until"))
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or started is None or until is None:
            return None
        return cls(pid, started, until, _count(document.get("steps")), _count(document.get("granted")))

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "started": format_instant(self.started),
            "until": format_instant(self.until),
            "steps": self.steps,
            "granted": self.granted,
        }


@dataclass(frozen=True)
class RunRecord:
    """What the last update left behind, for `status`, the metrics and the next run."""

    time: datetime | None = None
    outcome: str | None = None  # "ok" or "failed: MESSAGE"
    last_success: datetime | None = None
    # The error of the last run that failed, until a run succeeds again.
    last_error: str | None = None
    leases: int | None = None
    logins_total: Mapping[str, int] = field(default_factory=dict)  # per source, since the state began
    logs_seen: Mapping[str, datetime] = field(default_factory=dict)  # per source: when last found
    # Per source, since the state began: lines skipped because they could not be read.
    unreadable_lines: Mapping[str, int] = field(default_factory=dict)
    # Per reason (guard.py), since the state began: logins `[guard]` refused.
    refused_total: Mapping[str, int] = field(default_factory=dict)
    # Since the state began: leases granted or extended, and the sum of their
    # delays (login stamp to maps installed, seconds); the latest delays themselves.
    grant_delay_count: int = 0
    grant_delay_sum: float = 0.0
    recent_grant_delays: tuple[float, ...] = ()
    # The follower whose step ran last (its figures), or None.
    follower: FollowerRecord | None = None

    @classmethod
    def from_json(cls, document: Mapping[str, Any] | None) -> RunRecord:
        """Whatever of the record is readable; the rest as if never recorded."""
        if not document:
            return cls()
        counts = document.get("logins_total")
        unreadable = document.get("unreadable_lines")
        seen = document.get("logs_seen")
        leases = document.get("leases")
        delays = document.get("recent_grant_delays")
        delay_count = document.get("grant_delay_count")
        delay_sum = document.get("grant_delay_sum")
        time = _instant(document.get("time"))
        outcome = _text(document.get("outcome"))
        # A record of 0.1.0 has only the time and the outcome of the last run.
        last_success = _instant(document.get("last_success"))
        if last_success is None and outcome == "ok" and "last_success" not in document:
            last_success = time
        last_error = _text(document.get("last_error"))
        if last_error is None and outcome and outcome.startswith("failed: ") and "last_error" not in document:
            last_error = outcome.removeprefix("failed: ")
        return cls(
            time=time,
            outcome=outcome,
            last_success=last_success,
            last_error=last_error,
            leases=leases if isinstance(leases, int) and not isinstance(leases, bool) else None,
            logins_total=_counts(counts),
            unreadable_lines=_counts(unreadable),
            refused_total=_counts(document.get("refused_total")),
            grant_delay_count=_count(delay_count),
            grant_delay_sum=_seconds(delay_sum) or 0.0,
            recent_grant_delays=tuple(
                value
                for value in (_seconds(each) for each in (delays if isinstance(delays, list) else ()))
                if value is not None
            )[-RECENT_GRANT_DELAYS:],
            logs_seen={
                key: stamp
                for key, value in (seen.items() if isinstance(seen, dict) else ())
                if (stamp := _instant(value)) is not None
            },
            follower=FollowerRecord.from_json(document.get("follower")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "time": _format(self.time),
            "outcome": self.outcome,
            "last_success": _format(self.last_success),
            "last_error": self.last_error,
            "leases": self.leases,
            "logins_total": dict(sorted(self.logins_total.items())),
            "logs_seen": {key: format_instant(value) for key, value in sorted(self.logs_seen.items())},
            "unreadable_lines": dict(sorted(self.unreadable_lines.items())),
            "refused_total": dict(sorted(self.refused_total.items())),
            "grant_delay_count": self.grant_delay_count,
            "grant_delay_sum": round(self.grant_delay_sum, 6),
            "recent_grant_delays": [round(value, 6) for value in self.recent_grant_delays],
            "follower": None if self.follower is None else self.follower.to_json(),
        }

    def succeeded(
        self,
        now: datetime,
        leases: int,
        logins: Mapping[str, int],
        unreadable: Mapping[str, int] | None = None,
        refused: Mapping[str, int] | None = None,
        grant_delays: Sequence[float] = (),
        follower: FollowerRecord | None = None,
        granted: int = 0,
    ) -> RunRecord:
        """The record after a run that succeeded; `follower`, the follower whose
        step it was (its figures go on when it is the one recorded)."""
        totals = _added(self.logins_total, logins)
        followed = self.follower
        if follower is not None:
            base = followed if followed is not None and follower.same(followed) else follower
            followed = replace(base, steps=base.steps + 1, granted=base.granted + granted)
        return replace(
            self,
            time=now,
            outcome="ok",
            last_success=now,
            last_error=None,
            leases=leases,
            logins_total=totals,
            unreadable_lines=_added(self.unreadable_lines, unreadable or {}),
            refused_total=_added(self.refused_total, refused or {}),
            grant_delay_count=self.grant_delay_count + len(grant_delays),
            grant_delay_sum=self.grant_delay_sum + sum(grant_delays),
            recent_grant_delays=(*self.recent_grant_delays, *grant_delays)[-RECENT_GRANT_DELAYS:],
            follower=followed,
        )

    def failed(self, now: datetime, error: str) -> RunRecord:
        return replace(self, time=now, outcome=f"failed: {error}", last_error=error)


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str  # one line; empty when healthy


def assess(record: RunRecord, now: datetime, stale_after: timedelta) -> Health:
    """Healthy when the last update succeeded and is at most `stale_after` old."""
    if record.time is None:
        return Health(False, "no update has run yet")
    if record.last_error is not None:
        return Health(
            False, f"the last update, at {format_instant(record.time)}, failed: {record.last_error}"
        )
    if record.last_success is None:
        return Health(False, "no update has succeeded yet")
    age = now - record.last_success
    if age > stale_after:
        return Health(
            False,
            f"no update succeeded for {_duration(age)} (since {format_instant(record.last_success)}; "
            f"stale_after is {_duration(stale_after)}): is the cron job or timer running?",
        )
    return Health(True, "")


def missing_logs(
    record: RunRecord, present: Mapping[str, bool], now: datetime
) -> tuple[list[str], RunRecord]:
    """Warnings for logs never seen or gone for longer than a rotation; the record with today's sightings."""
    seen = {key: value for key, value in record.logs_seen.items() if key in present}
    warnings = []
    for path, exists in present.items():
        if exists:
            seen[path] = now
            continue
        last = seen.get(path)
        if last is None:
            warnings.append(
                f"log {path} does not exist and never has: check the path, and that the "
                "syslog daemon (rsyslog) writes it; no login is read until it does"
            )
        elif now - last > ROTATION_GRACE:
            warnings.append(
                f"log {path} has been missing since {format_instant(last)}, longer than a rotation "
                "takes: no login is read until it is back"
            )
    return warnings, replace(record, logs_seen=seen)


def nearest_rank(ordered: Sequence[float], quantile: float) -> float:
    """The `quantile` of the sorted, non-empty `ordered`: a value measured, never an interpolation."""
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def _duration(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _instant(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_instant(value)
    except ValueError:
        return None


def _counts(value: object) -> dict[str, int]:
    """Per source counts as recorded: whatever of them is a count."""
    return {
        key: count
        for key, count in (value.items() if isinstance(value, dict) else ())
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0
    }


def _added(totals: Mapping[str, int], counts: Mapping[str, int]) -> dict[str, int]:
    added = dict(totals)
    for source, count in counts.items():
        added[source] = added.get(source, 0) + count
    return added


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _format(value: datetime | None) -> str | None:
    return None if value is None else format_instant(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _seconds(value: Any) -> float | None:
    """A non-negative finite number of seconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if 0.0 <= number < float("inf") else None
