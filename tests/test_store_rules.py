"""The shared store keeps the lease file's rules (interface, "Lease rules").

A lowered timeout shortens the leases in PostgreSQL, in the `relay` view
and in the maps at the next run; a flush record outlives the longest
timeout any host uses; text no PostgreSQL column can hold never blocks a
run; a flush is remembered to the microsecond.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.pg_cluster import READER, WRITER, Cluster
from tests.support.stores import Host, relay, stamp


def with_timeout(host: Host, timeout: str) -> Host:
    body = host.config.read_text()
    if body.startswith("timeout = "):
        body = body.split("\n", 1)[1]
    host.config.write_text(f'timeout = "{timeout}"\n{body}')
    return host


def test_a_lowered_timeout_shortens_the_stores_leases_the_view_and_the_maps(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = with_timeout(Host(tmp_path / "pop", postgres.store(schema)), "2h")
    mx = Host(tmp_path / "mx", postgres.store(schema), sources=False)
    pop.login("192.0.2.10", minutes_ago=50)
    pop.login("192.0.2.11", minutes_ago=10)
    pop.ok("update")
    mx.ok("update")
    assert relay(postgres, schema) == ["192.0.2.10", "192.0.2.11"]
    with_timeout(pop, "30m")
    pop.ok("update")
    # 50 minutes old: over under a 30 minute timeout, wherever it is asked.
    assert relay(postgres, schema) == ["192.0.2.11"]
    assert pop.shown() == ["192.0.2.11"] and pop.mapped() == ["192.0.2.11"]
    mx.ok("update")
    assert mx.shown() == ["192.0.2.11"] and mx.mapped() == ["192.0.2.11"]
    (lease,) = json.loads(pop.ok("show", "--json"))["leases"]
    last_login = datetime.fromisoformat(lease["last_login"])
    assert datetime.fromisoformat(lease["expires"]) == last_login + timedelta(minutes=30)


def test_a_lowered_timeout_on_one_host_leaves_another_hosts_leases_their_own_timeout(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    short = with_timeout(Host(tmp_path / "short", postgres.store(schema)), "2h")
    long = with_timeout(Host(tmp_path / "long", postgres.store(schema)), "2h")
    short.login("192.0.2.10", minutes_ago=50)
    long.login("192.0.2.20", minutes_ago=50)
    short.ok("update")
    long.ok("update")
    with_timeout(short, "30m")
    short.ok("update")
    assert relay(postgres, schema) == ["192.0.2.20"]


def test_a_flush_record_outlives_the_longest_timeout_of_any_host(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    quick = with_timeout(Host(tmp_path / "a", postgres.store(schema)), "30m")
    slow = with_timeout(Host(tmp_path / "b", postgres.store(schema)), "2h")
    admin = Host(tmp_path / "admin", postgres.store(schema), sources=False)
    quick.ok("update")
    slow.ok("update")
    admin.ok("flush", "192.0.2.10", now=stamp(40))
    # Logged before the flush, read by the 2h host only after the 30m host pruned.
    slow.login("192.0.2.10", minutes_ago=50)
    quick.ok("update")
    slow.ok("update")
    assert relay(postgres, schema) == []
    assert slow.mapped() == []


def test_a_host_new_to_the_store_never_undoes_a_forgotten_flush(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    quick = with_timeout(Host(tmp_path / "a", postgres.store(schema)), "30m")
    quick.ok("update")
    quick.ok("flush", "192.0.2.10", now=stamp(40))
    quick.ok("update")  # the only host: the record is deleted after 30 minutes
    assert postgres.sql(f"SELECT count(*) FROM {schema}.flush").strip() == "0"
    newcomer = with_timeout(Host(tmp_path / "b", postgres.store(schema)), "2h")
    newcomer.login("192.0.2.10", minutes_ago=50)  # before the forgotten flush
    newcomer.login("192.0.2.11", minutes_ago=5)
    newcomer.ok("update")
    assert relay(postgres, schema) == ["192.0.2.11"]


def cyrus_login(address: str, user: str, minutes_ago: float) -> bytes:
    return (
        f"{stamp(minutes_ago)} mail cyrus/imaps[8]: event=login.good r.sessionid=s-1"
        f' r.clienthost="client.example [{address}]" u.username="{user}" login.mech=PLAIN login.tls=1\n'
    ).encode()


def test_a_cyrus_user_name_holding_a_nul_never_blocks_a_run(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    pop.config.write_text(pop.config.read_text().replace('server = "dovecot"', 'server = "cyrus"'))
    with pop.log.open("ab") as log:
        log.write(cyrus_login("192.0.2.10", "a\\x{00}b", 5))
    pop.ok("update")
    assert relay(postgres, schema) == ["192.0.2.10"]
    # The NUL is stored escaped, as the four characters \x00.
    (lease,) = json.loads(pop.ok("show", "--json"))["leases"]
    assert lease["user"] == "a\\x00b"
    # The next login is read and granted as ever.
    with pop.log.open("ab") as log:
        log.write(cyrus_login("192.0.2.11", "bob", 1))
    pop.ok("update")
    assert relay(postgres, schema) == ["192.0.2.10", "192.0.2.11"]


@given(st.text())
def test_storable_text_is_what_postgresql_holds_and_leaves_the_rest_alone(text: str) -> None:
    from exactcron.stores.postgres import storable

    stored = storable(text)
    assert stored is not None
    assert "\x00" not in stored
    stored.encode("utf-8")  # no surrogate: PostgreSQL's json and text take it
    if "\x00" not in text and not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert stored == text


@pytest.mark.parametrize(
    ("fraction", "granted"),
    [(".610000", False), ("", False), (".900000", True)],
    ids=["fraction-before", "no-fraction-same-second", "fraction-after"],
)
def test_the_store_remembers_a_flush_to_the_microsecond(
    tmp_path: Path, postgres: Cluster, schema: str, fraction: str, granted: bool
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    second = (datetime.now(UTC) - timedelta(minutes=2)).replace(microsecond=0)
    pop.ok("flush", "192.0.2.10", now=second.replace(microsecond=800_000).isoformat())
    with pop.log.open("a") as log:
        login = second.isoformat().replace("+00:00", f"{fraction}+00:00")
        log.write(
            f"{login} mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10,"
            " lip=10.77.0.1, mpid=1, session=<Mr1iP0TtYMEKTQAC>\n"
        )
    pop.ok("update")
    assert (relay(postgres, schema) == ["192.0.2.10"]) is granted


def test_a_store_of_version_1_is_upgraded_by_the_documented_sql_and_keeps_its_leases(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    from exactcron.stores.postgres import SCHEMA_VERSION, grants_sql, migrations, upgrade_sql

    documented = (Path(__file__).parent.parent / "docs" / "shared-store.md").read_text()
    # Every step from version 1 on, in order, as the docs give them.
    steps = [upgrade_sql("exactcron", version) for version in range(2, SCHEMA_VERSION + 1)]
    assert all(f"```sql\n{step}```" in documented for step in steps)
    upgrade = "".join(steps)
    postgres.sql(
        migrations(schema)[0]
        + f"INSERT INTO {schema}.schema_version VALUES (1);\n"
        + grants_sql(schema, WRITER, READER)
        + f"INSERT INTO {schema}.lease VALUES ('192.0.2.10', 'alice', now() - interval '50 minutes',"
        " now() + interval '70 minutes', 'dovecot');\n"
    )
    pop = with_timeout(Host(tmp_path / "pop", postgres.store(schema, WRITER)), "30m")
    # The POP hosts' role may not alter the tables: it says so, and changes nothing.
    refused = pop.run("update")
    assert (
        refused.returncode == 75
        and f"to version {SCHEMA_VERSION}" in refused.stderr
        and "docs/shared-store.md" in refused.stderr
    )
    postgres.sql(upgrade.replace("exactcron.", f"{schema}."))
    pop.login("192.0.2.11", minutes_ago=5)
    pop.ok("update")
    # The lease granted under the old timeout, by a host not recorded: the longest timeout in force.
    assert relay(postgres, schema) == ["192.0.2.11"]
    assert postgres.sql(f"SELECT timeout FROM {schema}.host").strip() == "00:30:00"
