"""Who relies on POP-before-SMTP: the audit trail joined to the MTA's log.

Pure: audit events and Postfix messages in, one RelayReport out. The
command (commands/report.py) finds, opens and reads the files.

The audit trail (outputs/audit.py writes it) says, per user, which logins
granted relay and what the guard refused; its grant, extend, add, expire
and flush events also say which address held a lease, and for whom, at any
time. A lease is in force from the run that granted it (the stamp of its
`grant`: the run installed it in the maps) until its `until` (the latest an
extend or add gave it), unless a `flush`, an `expire` before `until` (a
lowered timeout) or another user's login from the address ended it
earlier. A message in the minute between `until` and the run that took the
address out of the maps is not counted. Postfix
logs one `client=` line per message its smtpd accepted: a message from an
address whose lease was in force, without `sasl_username=`, was relayed
through the lease.

Memory is bounded whatever the length of the logs: events and messages are
read as two streams in time order (the trail's events are applied up to
each message's time), and an ended lease is dropped once the messages read
are `SLACK` past its end. What is kept: one summary per user (with the set
of its distinct addresses), the leases in force or ended within `SLACK`,
and one counter per distinct SASL user name.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from exactcron.addresses import normalize_address

# How far out of order the MTA log's lines (several smtpd processes) and the
# trail's runs may be: an ended lease is kept this long after its end.
SLACK = timedelta(minutes=5)
LEASE_EVENTS = frozenset({"grant", "extend", "add", "expire", "flush"})
EVENTS = LEASE_EVENTS | {"refuse"}

_AUDIT = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (grant|extend|add|expire|flush|refuse) "
    r'("(?:[^"\\]|\\.)*"|\S+)((?: [a-z_]+=(?:"(?:[^"\\]|\\.)*"|\S+))*)'
)
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_KEY = re.compile(r"[a-z_]+")
_FIELD = re.compile(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)')
# `HOST postfix/smtpd[PID]: QUEUEID: client=NAME[ADDR]` after the stamp; the
# syslog name may be `postfix/submission/smtpd` or a second instance's
# `postfix-out/smtpd`; `:PORT` with smtpd_client_port_logging.
_CLIENT = re.compile(
    r"\S+ [\w.+-]+(?:/[\w.+-]+)*/smtpd\[\d+\]: [0-9A-Za-z]+: client=[^\[\s]*\[([0-9A-Fa-f:.]+)\](?::\d+)?(.*)"
)
# The attributes Postfix may log after the client (smtpd_sasl_proto.c), in this order.
_ATTRIBUTES = re.compile(r", (sasl_method|sasl_username|sasl_sender|orig_queue_id|orig_client)=")


@dataclass(frozen=True)
class AuditEvent:
    time: datetime
    kind: str  # grant extend add expire flush refuse
    subject: str  # an address, or `all` for `flush all`
    user: str | None = None
    until: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Message:
    """A message Postfix's smtpd accepted: when, from which address, and the SASL user, if any."""

    time: datetime
    address: str
    sasl_user: str | None


@dataclass
class UserSummary:
    user: str | None  # None: leases that name no user (`add`, a site rule without `user`)
    logins: int = 0  # grant and extend events: logins that granted relay
    addresses: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    relayed: int = 0  # messages from a leased address without SMTP AUTH
    sasl_from_lease: int = 0  # messages from a leased address that used SMTP AUTH all the same
    sasl_messages: int = 0  # messages sent with SMTP AUTH under this user's name, from anywhere


@dataclass
class RelayReport:
    since: datetime
    until: datetime
    users: list[UserSummary]  # most relayed first: the users still depending on POP-before-SMTP
    with_mta: bool
    events: int = 0
    messages: int = 0  # smtpd `client=` lines within the period
    through_lease: int = 0  # of them, from a leased address without SMTP AUTH
    sasl_from_lease: int = 0
    sasl: int = 0  # with SMTP AUTH, from anywhere
    peak_leases: int = 0  # the most lease intervals held at once: the memory bound's variable part


def user_key(name: str) -> str:
    """How a POP/IMAP user name and a SASL user name are compared: as logged,
    case-folded, with the domain (alice@Example.org is alice@example.org,
    not alice)."""
    return name.casefold()


def parse_audit_line(text: str) -> AuditEvent | None:
    """An audit trail line as outputs/audit.py writes it; None for any other line."""
    text = text.rstrip("\n")
    if '"' in text:
        found = _AUDIT.fullmatch(text)
        if found is None:
            return None
        stamp, kind, subject, rest = found.groups()
        fields = {key: _unquote(value) for key, value in _FIELD.findall(rest)}
    else:
        # No quoted value: plain words (most lines), read without the pattern.
        words = text.split(" ")
        if len(words) < 3 or words[1] not in EVENTS or _STAMP.fullmatch(words[0]) is None:
            return None
        stamp, kind, subject = words[:3]
        fields = {}
        for word in words[3:]:
            key, equals, value = word.partition("=")
            if not equals or not value or not _KEY.fullmatch(key):
                return None
            fields[key] = value
    try:
        time = _utc(stamp)
        until = _utc(fields["until"]) if "until" in fields else None
    except ValueError:
        return None
    address = "all" if kind == "flush" and subject == "all" else _address(_unquote(subject))
    if address is None:
        return None
    return AuditEvent(time, kind, address, fields.get("user"), until, fields.get("reason"))


def parse_smtpd_line(text: str, stamp: datetime) -> Message | None:
    """The message of a Postfix smtpd `client=` line (the text after the stamp), or None.

    A copy re-injected by a content filter (`orig_queue_id=`, `orig_client=`)
    is the same message again, and is not counted.
    """
    found = _CLIENT.fullmatch(text.rstrip("\n"))
    if found is None:
        return None
    address = _address(found.group(1))
    if address is None:
        return None
    attributes = _attributes(found.group(2))
    if attributes is None or "orig_queue_id" in attributes or "orig_client" in attributes:
        return None
    return Message(stamp, address, attributes.get("sasl_username") or None)


@dataclass
class _Lease:
    start: datetime
    end: datetime  # the run that ended it, or `until` while none did
    user: str | None
    ended: bool = False  # an expire or flush event fixed `end`


class _Join:
    """The leases in force (and ended within SLACK), per address, as the trail is read."""

    def __init__(self) -> None:
        self.leases: dict[str, list[_Lease]] = {}
        self._ends: list[tuple[datetime, str]] = []  # a heap; stale entries are skipped
        self.count = 0
        self.peak = 0

    def apply(self, event: AuditEvent) -> None:
        if event.kind == "flush" and event.subject == "all":
            for each in self.leases.values():
                self._end(each, event.time)
            return
        held = self.leases.get(event.subject)
        current = held[-1] if held and not held[-1].ended and held[-1].end >= event.time else None
        if event.kind in ("expire", "flush"):
            if held:
                self._end(held, event.time)
            return
        until = event.until or event.time
        if event.kind == "add":
            if current is not None:
                current.end = max(current.end, until)
                self._push(current.end, event.subject)
            else:
                self._open(event.subject, _Lease(event.time, until, None))
            return
        if current is not None and (
            current.user is None or user_key(current.user) == user_key(event.user or "")
        ):
            current.end, current.user = until, event.user
            self._push(until, event.subject)
            return
        if current is not None:
            # Another user logged in from the address: the lease is theirs from now on.
            current.end, current.ended = event.time, True
        self._open(event.subject, _Lease(event.time, until, event.user))

    def holder(self, address: str, time: datetime) -> _Lease | None:
        for lease in reversed(self.leases.get(address, ())):
            if lease.start <= time <= lease.end:
                return lease
        return None

    def prune(self, before: datetime) -> None:
        """Drop every lease that ended before `before`."""
        while self._ends and self._ends[0][0] < before:
            _, address = heapq.heappop(self._ends)
            found = self.leases.get(address)
            if found is None:
                continue
            kept = [lease for lease in found if lease.end >= before]
            self.count -= len(found) - len(kept)
            if kept:
                self.leases[address] = kept
            else:
                del self.leases[address]

    def _end(self, held: list[_Lease], time: datetime) -> None:
        lease = held[-1]
        if not lease.ended:
            # A flush (or an expiry under a lowered timeout) ends it early; an
            # expiry a little after `until` leaves `until` its end.
            lease.end, lease.ended = max(min(lease.end, time), lease.start), True

    def _open(self, address: str, lease: _Lease) -> None:
        self.leases.setdefault(address, []).append(lease)
        self.count += 1
        self.peak = max(self.peak, self.count)
        self._push(lease.end, address)

    def _push(self, end: datetime, address: str) -> None:
        heapq.heappush(self._ends, (end, address))


def build_report(
    events: Iterable[AuditEvent],
    messages: Iterable[Message] | None,
    since: datetime,
    until: datetime,
) -> RelayReport:
    """Join the trail's events and the MTA's messages (each in time order) over [since, until]."""
    summaries: dict[str | None, UserSummary] = {}
    sasl_counts: dict[str, int] = {}
    report = RelayReport(since, until, [], messages is not None)
    join = _Join()
    pending: Iterator[AuditEvent] = iter(events)
    next_event = next(pending, None)

    def summary_of(user: str | None) -> UserSummary:
        key = None if user is None else user_key(user)
        found = summaries.get(key)
        if found is None:
            found = summaries[key] = UserSummary(user)
        return found

    def take(event: AuditEvent, joining: bool) -> None:
        if joining and event.kind in LEASE_EVENTS:
            join.apply(event)
            # Every message still to come is (within SLACK) at this event's time or later.
            join.prune(event.time - SLACK)
        if not since <= event.time <= until:
            return
        report.events += 1
        if event.kind in ("grant", "extend"):
            summary = summary_of(event.user)
            summary.logins += 1
            summary.addresses.add(event.subject)
            summary.first = event.time if summary.first is None else min(summary.first, event.time)
            summary.last = event.time if summary.last is None else max(summary.last, event.time)
        elif event.kind == "refuse":
            summary = summary_of(event.user)
            reason = event.reason or "unknown"
            summary.refused[reason] = summary.refused.get(reason, 0) + 1

    for message in messages or ():
        while next_event is not None and next_event.time <= message.time:
            take(next_event, True)
            next_event = next(pending, None)
        join.prune(message.time - SLACK)
        if not since <= message.time <= until:
            continue
        report.messages += 1
        if message.sasl_user is not None:
            report.sasl += 1
            key = user_key(message.sasl_user)
            sasl_counts[key] = sasl_counts.get(key, 0) + 1
        lease = join.holder(message.address, message.time)
        if lease is None:
            continue
        summary = summary_of(lease.user)
        if message.sasl_user is None:
            summary.relayed += 1
            report.through_lease += 1
        else:
            summary.sasl_from_lease += 1
            report.sasl_from_lease += 1
    # The events after the last message only count: no lease is needed any more.
    while next_event is not None:
        take(next_event, False)
        next_event = next(pending, None)
    for name, each in summaries.items():
        if name is not None:
            each.sasl_messages = sasl_counts.get(name, 0)
    report.peak_leases = join.peak
    report.users = sorted(summaries.values(), key=_still_depending_first)
    return report


def _still_depending_first(summary: UserSummary) -> tuple[int, bool, int, str]:
    """Most messages relayed through a lease first; among equals, users without
    SMTP AUTH before those who have it, then the most logins."""
    return (-summary.relayed, summary.sasl_messages > 0, -summary.logins, summary.user or "")


def _attributes(rest: str) -> dict[str, str] | None:
    """`, sasl_method=PLAIN, sasl_username=alice` -> its attributes; None when it is something else."""
    if not rest:
        return {}
    starts = list(_ATTRIBUTES.finditer(rest))
    if not starts or starts[0].start() != 0:
        return None
    values: dict[str, str] = {}
    for index, start in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(rest)
        values[start.group(1)] = rest[start.end() : end]
    return values


@lru_cache(maxsize=1 << 16)
def _address(text: str) -> str | None:
    return normalize_address(text)


@lru_cache(maxsize=1 << 12)
def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def _unquote(value: str) -> str:
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value
