"""A follower's step reuses the lease table it wrote instead of reading the
file back (stores/kept.py), and behaves exactly as if it had read it:

- `read_back(table)` is what reading the file encoded from `table` gives, to
  the dict order and the zone of each time, or None when that file would be
  set aside; with or without what the last write remembered (`Memo`);
- a sequence of runs in one process (logins, `flush` and `add` by another
  process in between, hand edits) leaves the same lease file and maps as
  the same sequence with the file read at every run;
- a run does not parse the lease file this process wrote, and does parse
  one that anyone else replaced or edited, even in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactcron.guard import GuardState
from exactcron.leases import LeaseTable
from exactcron.model import Lease
from exactcron.stores import file as lease_file
from exactcron.stores import kept
from exactcron.stores.local import CorruptStateError
from tests.support.clock import NOW_TIME
from tests.support.lines import dovecot_imap_login
from tests.support.site import Site, site_with_map
from tests.support.tools import require_tool

ADDRESSES = ["192.0.2.1", "192.0.2.10", "2001:db8::1", "10.0.0.7", "198.51.100.9"]
# Never written by exactcron; each makes the file one that is set aside.
NOT_CANONICAL = ["010.0.0.1", "2001:DB8::1", "::ffff:192.0.2.1", "192.0.2.1\n"]
ZONES = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)), ZoneInfo("Etc/UTC")]

instants = st.builds(
    lambda seconds, microsecond, zone: (
        datetime(2026, 11, 25, 12, tzinfo=UTC) + timedelta(seconds=seconds, microseconds=microsecond)
    ).astimezone(zone),
    st.integers(-86_400, 86_400),
    st.sampled_from([0, 0, 1, 486_319, 999_999]),
    st.sampled_from(ZONES),
)
addresses = st.sampled_from(ADDRESSES)
users = st.one_of(st.sampled_from(["alice", "Bob@example.org", "", "\ud800", 'q"\\\n']), st.text(max_size=6))
servers = st.one_of(st.none(), st.sampled_from(["dovecot", "manual"]), st.text(max_size=4))


@st.composite
def tables(draw: st.DrawFn, hostile: bool = True) -> LeaseTable:
    pool = ADDRESSES + (NOT_CANONICAL if hostile and draw(st.integers(0, 4)) == 0 else [])
    anywhere = st.sampled_from(pool)
    table = LeaseTable()
    for address in draw(st.lists(anywhere, max_size=6)):
        mismatched = draw(st.sampled_from([address, address, address, ADDRESSES[0]]))
        table.leases[address] = Lease(
            mismatched, draw(st.one_of(st.none(), users)), draw(instants), draw(instants), draw(servers)
        )
    table.flushed = draw(st.dictionaries(anywhere, instants, max_size=3))
    table.flushed_all = draw(st.one_of(st.none(), instants))
    guard = GuardState()
    guard.granted = draw(st.dictionaries(users, st.dictionaries(anywhere, instants, max_size=3), max_size=4))
    guard.seen = draw(st.dictionaries(anywhere, st.dictionaries(users, instants, max_size=3), max_size=4))
    guard.blocked = draw(st.dictionaries(users, st.tuples(instants, instants), max_size=2))
    reasons = st.sampled_from(["max-addresses", "shared"] + (["bogus"] if hostile else []))
    guard.refused = draw(
        st.dictionaries(st.tuples(users, anywhere), st.tuples(instants, reasons), max_size=3)
    )
    guard.changed = draw(st.booleans())
    table.guard = guard
    table.ignore_checked = draw(st.one_of(st.none(), st.just(("10.0.0.0/8", "special")), st.just(())))
    table.changed = draw(st.booleans())
    return table


def read_from_file(encoded: bytes, directory: Path) -> LeaseTable | None:
    """What FileLeaseStore._load makes of `encoded`: the table, or None (set aside)."""
    path = directory / "leases.json"
    path.write_bytes(encoded)
    table = lease_file.read_lease_lines(path)
    if table is not None:
        return table
    try:
        document = json.loads(encoded)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    try:
        return lease_file.leases_from_json(document)
    except CorruptStateError:
        return None


def shape(table: LeaseTable | None) -> Any:
    """Everything a reader of the table could tell apart: values, orders, zones, flags."""
    if table is None:
        return None

    def when(time: datetime) -> tuple[str, bool, int]:
        return (time.isoformat(), time.tzinfo is UTC, time.fold)

    guard = table.guard
    return (
        [
            (a, lease.address, lease.user, when(lease.last_login), when(lease.expires), lease.server)
            for a, lease in table.leases.items()
        ],
        [(a, when(t)) for a, t in table.flushed.items()],
        None if table.flushed_all is None else when(table.flushed_all),
        [(k, [(e, when(t)) for e, t in inner.items()]) for k, inner in guard.granted.items()],
        [(k, [(e, when(t)) for e, t in inner.items()]) for k, inner in guard.seen.items()],
        [(u, when(a), when(b)) for u, (a, b) in guard.blocked.items()],
        [(key, when(t), reason) for key, (t, reason) in guard.refused.items()],
        table.ignore_checked,
        table.changed,
        guard.changed,
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables(), st.data())
def test_read_back_is_what_reading_the_file_gives(
    tmp_path: Path, table: LeaseTable, data: st.DataObject
) -> None:
    memo = kept.Memo()
    for _ in range(2):
        encoded = lease_file.encode_leases(table)
        # What the last write remembered changes no byte of the next.
        assert b"".join(lease_file.lease_file_chunks(table, memo)) == encoded
        assert b"".join(lease_file.lease_file_chunks(table, memo)) == encoded
        expected = read_from_file(encoded, tmp_path)
        assert shape(kept.read_back(table, memo)) == shape(expected)
        assert shape(kept.read_back(table)) == shape(expected)
        # Then some entries change (an equal instant in another zone among them), and again.
        table = _changed(table, data)
    read = kept.read_back(table)
    if read is not None:
        # Nothing that can change is shared with the table written.
        assert read.leases is not table.leases and read.flushed is not table.flushed
        for name in ("granted", "seen"):
            inner_read, inner_table = getattr(read.guard, name), getattr(table.guard, name)
            assert all(inner_read[key] is not inner_table[key] for key in inner_read)


def _changed(table: LeaseTable, data: st.DataObject) -> LeaseTable:
    for inner in list(table.guard.seen.values()) + list(table.guard.granted.values()):
        for each, time in list(inner.items()):
            if data.draw(st.booleans()):
                inner[each] = time.astimezone(data.draw(st.sampled_from(ZONES)))
    more = data.draw(tables(hostile=False))
    table.leases.update(more.leases)
    table.guard.seen.update(more.guard.seen)
    table.flushed.update(more.flushed)
    return table


# -- runs in one process ------------------------------------------------------

GUARDED = '[guard]\nmax_addresses_per_user = 2\non_exceed = "revoke"\nwindow = "20m"\n'

operations = st.lists(
    st.one_of(
        st.tuples(st.just("login"), st.integers(0, 4), st.integers(0, 3), st.integers(0, 50)),
        st.tuples(st.just("flush"), st.integers(-1, 4), st.just(0), st.just(0)),
        st.tuples(st.just("add"), st.integers(0, 4), st.integers(1, 40), st.just(0)),
        st.tuples(st.just("edit"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("run"), st.integers(1, 400), st.just(0), st.just(0)),
    ),
    max_size=10,
)


class Pair:
    """Two sites fed alike: one reuses what it wrote, the other reads its file at every run."""

    def __init__(self, make: Callable[[Path], Site], root: Path) -> None:
        self.reusing = make(root / "reusing")
        self.reading = make(root / "reading")
        self.now = NOW_TIME

    def leases(self, site: Site) -> Path:
        return site.state / "leases.json"

    def as_another_process(self, site: Site, action: Callable[[], object]) -> None:
        """`action` as another process would do it: this process's kept table stays as it was."""
        path = self.leases(site)
        mine = kept._kept.pop(str(path), None)
        action()
        kept.forget(path)
        if mine is not None:
            kept._kept[str(path)] = mine

    def both(self, action: Callable[[Site], object], outside: bool = False) -> None:
        for site in (self.reusing, self.reading):
            if outside:
                self.as_another_process(site, lambda site=site: action(site))  # type: ignore[misc]
            else:
                action(site)
            if site is self.reading:
                kept.forget(self.leases(site))

    def update(self) -> None:
        for site in (self.reusing, self.reading):
            if site is self.reading:
                kept.forget(self.leases(site))
            result = site.run("update", now=self.now.isoformat())
            assert result.exit_code == 0, result.output

    def same(self) -> None:
        for name in ("leases.json", "relay"):
            reusing, reading = (site.state / name for site in (self.reusing, self.reading))
            assert reusing.exists() == reading.exists()
            if reusing.exists():
                assert reusing.read_bytes() == reading.read_bytes(), name


def _edit(site: Site) -> None:
    """A hand edit in place (same inode, same size): a lease's user renamed."""
    path = site.state / "leases.json"
    if path.exists():
        text = path.read_bytes()
        edited = text.replace(b'"user":"u1"', b'"user":"u9"', 1)
        with path.open("r+b") as stream:
            stream.write(edited)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
def test_runs_reusing_the_table_write_what_runs_reading_the_file_write(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Any]
) -> None:
    require_tool("postmap")
    pair = Pair(_site_in, tmp_path_factory.mktemp("pair"))
    pair.update()
    for kind, first, second, third in steps:
        if kind == "login":
            stamp = pair.now - timedelta(seconds=third)
            line = dovecot_imap_login(ADDRESSES[first], stamp, f"u{second}")
            pair.both(lambda site, line=line: site.write_log(line))  # type: ignore[misc]
        elif kind == "flush":
            arguments = ["flush", "--all"] if first < 0 else ["flush", ADDRESSES[first]]
            pair.both(lambda site, a=arguments: site.run(*a, now=pair.now.isoformat()), outside=True)  # type: ignore[misc]
        elif kind == "add":
            arguments = ["add", ADDRESSES[first], "--for", f"{second}m"]
            pair.both(lambda site, a=arguments: site.run(*a, now=pair.now.isoformat()), outside=True)  # type: ignore[misc]
        elif kind == "edit":
            pair.both(_edit, outside=True)
        else:
            pair.now += timedelta(seconds=first, microseconds=first * 1_000)
        pair.update()
        pair.same()


def _site_in(where: Path) -> Site:
    where.mkdir()
    return site_with_map(where, extra=GUARDED)


# -- what a run reads -----------------------------------------------------------


def parses(site: Site, monkeypatch: pytest.MonkeyPatch, *arguments: str) -> int:
    """How many times the command parsed the lease file."""
    calls = []
    real = lease_file.read_lease_lines

    def counted(path: Path) -> LeaseTable | None:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(lease_file, "read_lease_lines", counted)
    result = site.run(*arguments)
    assert result.exit_code == 0, result.output
    return len(calls)


def test_a_run_reuses_the_lease_file_it_wrote(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.write_log(dovecot_imap_login("192.0.2.10", NOW_TIME - timedelta(minutes=1)))
    site.run("update")
    site.write_log(dovecot_imap_login("192.0.2.11", NOW_TIME - timedelta(seconds=30)))
    assert parses(site, monkeypatch, "update") == 0
    assert (site.state / "relay").read_text().split() == ["192.0.2.10", "OK", "192.0.2.11", "OK"]


@pytest.mark.parametrize("change", ["replaced", "in place"])
def test_a_lease_file_changed_by_anyone_else_is_read(
    site: Site, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    site.write_log(dovecot_imap_login("192.0.2.10", NOW_TIME - timedelta(minutes=1), "u1"))
    site.run("update")
    path = site.state / "leases.json"
    edited = path.read_bytes().replace(b'"user":"u1"', b'"user":"u9"')
    if change == "replaced":
        fresh = path.with_name("new")
        fresh.write_bytes(edited)
        fresh.replace(path)
    else:
        # Same inode and size, within the clock tick of the write perhaps: only the content tells.
        with path.open("r+b") as stream:
            stream.write(edited)
    site.write_log(dovecot_imap_login("192.0.2.11", NOW_TIME - timedelta(seconds=30), "u2"))
    assert parses(site, monkeypatch, "update") == 1
    assert b'"user":"u9"' in path.read_bytes()


def test_a_flush_by_another_process_between_two_runs_stays(site: Site) -> None:
    site.write_log(dovecot_imap_login("192.0.2.10", NOW_TIME - timedelta(minutes=1)))
    site.run("update")
    flushed = site.run_process("flush", "192.0.2.10")
    assert flushed.returncode == 0, flushed.stderr
    site.write_log(dovecot_imap_login("192.0.2.11", NOW_TIME - timedelta(seconds=30)))
    site.run("update")
    assert (site.state / "relay").read_text().split() == ["192.0.2.11", "OK"]


def test_a_process_keeps_the_tables_of_a_few_lease_files_only(tmp_path: Path) -> None:
    """Each kept table holds its file open: a process writing many never runs out of descriptors."""
    for index in range(12):
        path = tmp_path / f"leases{index}.json"
        table = LeaseTable()
        table.add("192.0.2.1", NOW_TIME, timedelta(minutes=5))
        path.write_bytes(lease_file.encode_leases(table))
        kept.keep(path, table, kept._digest_of(path) or b"")
    assert 1 <= len(kept._kept) <= 4
    assert kept.take(tmp_path / "leases11.json") is not None
