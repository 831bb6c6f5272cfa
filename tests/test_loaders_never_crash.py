"""Property tests over the loaders: any input gives a result or the loader's own error, never a crash.

Examples per test are modest by default; `HYPOTHESIS_PROFILE=long` runs a long fuzz.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactcron.atomic import write_atomically
from exactcron.cli import main
from exactcron.config import parse_config
from exactcron.errors import ConfigError
from exactcron.leases import LeaseTable
from exactcron.model import Login
from exactcron.stores.file import (
    LEASES_FILE,
    FileLeaseStore,
    lease_file_chunks,
    leases_from_json,
    leases_to_json,
)
from exactcron.stores.local import CorruptStateError, LocalState
from tests.support.clock import NOW_TIME
from tests.support.runner import invoke


def load_leases(state: Path, repair: bool = True) -> LeaseTable:
    return FileLeaseStore(LocalState(state), repair).table


def save_leases(state: Path, table: LeaseTable) -> None:
    write_atomically(state / LEASES_FILE, lease_file_chunks(table), 0o640)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ["state_dir", "timeout", "ignore", "lock_wait", "log_file", "source", "map", "rule", "path", "server"]


def near_miss_documents() -> st.SearchStrategy[dict[str, Any]]:
    """Config-shaped documents: the right keys with arbitrary values, and some wrong keys."""
    table = st.dictionaries(
        st.sampled_from([*KEYS, "mta", "type", "include", "timezone"]), json_values, max_size=5
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "timeout": json_values,
            "ignore": json_values,
            "lock_wait": json_values,
            "state_dir": json_values,
            "source": st.lists(table, max_size=2) | json_values,
            "map": st.lists(table, max_size=2) | json_values,
            "rule": st.dictionaries(st.text(max_size=8), table | json_values, max_size=2),
        },
    )


@given(near_miss_documents())
def test_the_config_loader_accepts_or_names_a_key(document: dict[str, Any]) -> None:
    try:
        parse_config(Path("/etc/exactcron/exactcron.toml"), document)
    except ConfigError as error:
        message = str(error)
        assert message.startswith("/etc/exactcron/exactcron.toml: ")
        assert "\n" not in message


lease_items = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["192.0.2.1", "2001:db8::1", "::ffff:1.2.3.4", "300.1.1.1", ""]) | scalars,
        "user": scalars,
        "last_login": st.sampled_from(["2026-11-25T17:00:00+00:00", "2026-11-25T17:00:00", "yesterday"])
        | scalars,
        "expires": st.sampled_from(["2026-11-25T18:00:00+00:00", "2026-13-01T00:00:00+00:00"]) | scalars,
        "server": scalars,
    },
)
lease_documents = st.fixed_dictionaries(
    {"schema": st.just(1) | scalars},
    optional={
        "leases": st.lists(lease_items, max_size=3) | json_values,
        "flushed": st.dictionaries(st.text(max_size=12), scalars, max_size=2) | json_values,
        "flushed_all": scalars,
    },
)


@given(lease_documents)
def test_the_lease_file_loader_reads_or_reports_corruption(document: dict[str, Any]) -> None:
    try:
        table = leases_from_json(document)
    except CorruptStateError:
        return
    assert leases_from_json(leases_to_json(table)) == table


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | json_values.map(lambda value: json.dumps(value).encode()))
def test_any_bytes_in_the_lease_file_never_crash_a_load(tmp_path: Path, raw: bytes) -> None:
    state = tmp_path / "fuzz-state"
    state.mkdir(exist_ok=True)
    (state / "leases.json").write_bytes(raw)
    load_leases(state, repair=False)


addresses = st.ip_addresses().map(str)
users = st.none() | st.text(max_size=40)


def table_of(logins: list[tuple[str, str | None, int]], microseconds: int = 0) -> LeaseTable:
    """The leases these (address, user, seconds ago) logins grant at NOW_TIME."""
    from exactcron.addresses import normalize_address

    table = LeaseTable()
    for address, user, seconds_ago in logins:
        normalized = normalize_address(address)
        assert normalized is not None
        login = Login.at(
            NOW_TIME - timedelta(seconds=seconds_ago, microseconds=microseconds), "dovecot", user, normalized
        )
        table.merge(login, NOW_TIME, timedelta(minutes=30))
    return table


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.lists(st.tuples(addresses, users, st.integers(min_value=0, max_value=1799)), max_size=8))
def test_show_json_is_always_valid_json_with_the_documented_keys(
    tmp_path: Path, logins: list[tuple[str, str | None, int]]
) -> None:
    now = NOW_TIME
    table = table_of(logins)
    state = tmp_path / "show-state"
    state.mkdir(exist_ok=True)
    save_leases(state, table)
    config = tmp_path / "show.toml"
    config.write_text(
        f'state_dir = "{state}"\n[[source]]\npath = "x.log"\nserver = "dovecot"\n'
        f'[[map]]\nmta = "exim"\npath = "{state / "relay"}"\n'
    )
    config.chmod(0o644)
    result = invoke(main, ["--config", str(config), "--now", now.isoformat(), "show", "--json"])
    assert result.exit_code == 0
    shown = json.loads(result.output)["leases"]
    assert [lease["ip"] for lease in shown] == [lease.address for lease in table.active(now)]
    for lease in shown:
        assert set(lease) >= {"ip", "user", "last_login", "expires"}
        assert datetime.fromisoformat(lease["expires"]) > now


@settings(max_examples=60)
@given(st.lists(st.tuples(addresses, users, st.integers(min_value=0, max_value=1799)), max_size=8))
def test_the_lease_file_is_the_json_of_the_table_one_lease_a_line(
    tmp_path_factory: pytest.TempPathFactory, logins: list[tuple[str, str | None, int]]
) -> None:
    from exactcron.addresses import normalize_address
    from exactcron.stores.file import encode_leases

    now = NOW_TIME
    table = table_of(logins, microseconds=7)
    table.flush([login[0] for login in logins[:1] if normalize_address(login[0]) == login[0]], now)
    encoded = encode_leases(table)
    document = leases_to_json(table)
    assert json.loads(encoded) == document
    # Compact, keys sorted, each lease on a line of its own (for grep, and
    # for reading the file a batch of lines at a time).
    lines = encoded.decode().splitlines()
    compact = json.dumps(document, separators=(",", ":"), sort_keys=True)
    assert "".join(lines) == compact
    assert len(lines) == len(document["leases"]) + 2
    for line, lease in zip(lines[1:-1], document["leases"], strict=True):
        assert json.loads(line.removesuffix(",")) == lease
    # Read back and written again: the same bytes (times are kept to the second).
    assert encode_leases(leases_from_json(json.loads(encoded))) == encoded
    state = tmp_path_factory.mktemp("leases")
    (state / "leases.json").write_bytes(encoded)
    assert load_leases(state) == table


def sample_lease_file() -> bytes:
    from exactcron.stores.file import encode_leases

    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    table = LeaseTable()
    for number, address in enumerate(["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::5"]):
        table.merge(
            Login.at(now - timedelta(minutes=number), "dovecot", f"user{number}", address), now, TIMEOUT
        )
    table.flush(["192.0.2.9"], now)
    return encode_leases(table)


TIMEOUT = timedelta(minutes=30)
SAMPLE = sample_lease_file()


def assert_read_as_whole(state: Path, raw: bytes) -> None:
    """The lease file is read a batch of lines at a time; what that accepts, and how, is what a whole read does."""
    try:
        document = json.loads(raw)
        expected = leases_from_json(document) if isinstance(document, dict) else LeaseTable()
    except (ValueError, CorruptStateError):
        expected = LeaseTable()
    (state / "leases.json").write_bytes(raw)
    assert load_leases(state, repair=False) == expected, raw


# Where the pieces the reader parses one by one meet: around each line's end.
JOINS = sorted(
    {max(0, end + offset) for end, byte in enumerate(SAMPLE) if byte == 10 for offset in range(-3, 2)}
)
INSERTS = [b",", b"]", b"[", b"\n", b"{", b"}", b'"', b" ", b"\x00", b",\n", b"\n,", b"]\n", b"\n]", b"\n\n"]


@pytest.mark.parametrize("batch", [1, 1 << 18])  # 1: each line is a batch of its own
def test_damage_where_lines_meet_is_found_as_a_whole_read_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    from exactcron.stores import file as leasefile

    monkeypatch.setattr(leasefile, "_READ_BATCH_BYTES", batch)
    heads = SAMPLE.split(b"\n", 1)
    tails = SAMPLE.rsplit(b"]", 1)
    damaged = [
        # A key given twice: the last one counts.
        heads[0].replace(b'"leases":[', b'"leases":[],"leases":[') + b"\n" + heads[1],
        tails[0] + b'],"leases":[]' + tails[1][:-1] + b"\n",
        SAMPLE + b" ",
        SAMPLE + b"\n{}",
    ]
    for at in JOINS:
        damaged += [SAMPLE[:at] + SAMPLE[at + cut :] for cut in (1, 2)]
        damaged += [SAMPLE[:at] + inserted + SAMPLE[at:] for inserted in INSERTS]
    for raw in damaged:
        assert_read_as_whole(tmp_path, raw)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(
    st.integers(min_value=0, max_value=len(SAMPLE)),
    st.integers(min_value=0, max_value=3),
    st.lists(st.sampled_from(INSERTS) | st.binary(max_size=2), max_size=2).map(b"".join),
)
def test_damage_anywhere_is_found_as_a_whole_read_finds_it(
    tmp_path: Path, at: int, cut: int, inserted: bytes
) -> None:
    assert_read_as_whole(tmp_path, SAMPLE[:at] + inserted + SAMPLE[at + cut :])


@pytest.mark.parametrize("indent", [None, 1])
def test_a_lease_file_written_otherwise_is_still_read(tmp_path: Path, indent: int | None) -> None:
    """An administrator's `jq . leases.json > new` (or a file of an earlier version) is a lease file too."""
    document = json.loads(SAMPLE)
    (tmp_path / "leases.json").write_text(json.dumps(document, indent=indent))
    table = load_leases(tmp_path)
    assert sorted(table.leases) == ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::5"]
    assert table == leases_from_json(document)
    assert list(tmp_path.iterdir()) == [tmp_path / "leases.json"]
