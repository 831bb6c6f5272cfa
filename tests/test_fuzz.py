"""Property tests over the loaders: any input gives a result or the loader's own error, never a crash.

Examples per test are modest by default; `HYPOTHESIS_PROFILE=long` runs a long fuzz.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactcron.cli import main
from exactcron.config import parse_config
from exactcron.errors import ConfigError
from exactcron.leases import LeaseTable
from exactcron.rules import Login
from exactcron.store import CorruptStateError, StateStore, leases_from_json, leases_to_json

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
    StateStore(state).load_leases(repair=False)


addresses = st.ip_addresses().map(str)
users = st.none() | st.text(max_size=40)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.lists(st.tuples(addresses, users, st.integers(min_value=0, max_value=1799)), max_size=8))
def test_show_json_is_always_valid_json_with_the_documented_keys(
    tmp_path: Path, logins: list[tuple[str, str | None, int]]
) -> None:
    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    table = LeaseTable()
    for address, user, seconds_ago in logins:
        from exactcron.addresses import normalize_address

        normalized = normalize_address(address)
        assert normalized is not None
        table.merge(
            Login(now - timedelta(seconds=seconds_ago), "dovecot", user, normalized),
            now,
            timedelta(minutes=30),
        )
    state = tmp_path / "show-state"
    state.mkdir(exist_ok=True)
    StateStore(state).save_leases(table)
    config = tmp_path / "show.toml"
    config.write_text(
        f'state_dir = "{state}"\n[[source]]\npath = "x.log"\nserver = "dovecot"\n'
        f'[[map]]\nmta = "exim"\npath = "{state / "relay"}"\n'
    )
    config.chmod(0o644)
    result = CliRunner().invoke(main, ["--config", str(config), "--now", now.isoformat(), "show", "--json"])
    assert result.exit_code == 0
    shown = json.loads(result.output)["leases"]
    assert [lease["ip"] for lease in shown] == [lease.address for lease in table.active(now)]
    for lease in shown:
        assert set(lease) >= {"ip", "user", "last_login", "expires"}
        assert datetime.fromisoformat(lease["expires"]) > now


@settings(max_examples=60)
@given(st.lists(st.tuples(addresses, users, st.integers(min_value=0, max_value=1799)), max_size=8))
def test_the_lease_file_is_exactly_the_compact_json_of_the_table(
    logins: list[tuple[str, str | None, int]],
) -> None:
    from exactcron.addresses import normalize_address
    from exactcron.store import encode_leases

    now = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    table = LeaseTable()
    for address, user, seconds_ago in logins:
        normalized = normalize_address(address)
        assert normalized is not None
        login = Login(now - timedelta(seconds=seconds_ago, microseconds=7), "dovecot", user, normalized)
        table.merge(login, now, timedelta(minutes=30))
    table.flush([login[0] for login in logins[:1] if normalize_address(login[0]) == login[0]], now)
    encoded = encode_leases(table)
    assert (
        encoded == (json.dumps(leases_to_json(table), separators=(",", ":"), sort_keys=True) + "\n").encode()
    )
    # Read back and written again: the same bytes (times are kept to the second).
    assert encode_leases(leases_from_json(json.loads(encoded))) == encoded
