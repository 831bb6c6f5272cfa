"""`[guard]` through the shared store: a user on host A and host B counts once,
with the same limit; a revocation reaches every host; two hosts merging at
once never grant past the limit (interface, "The shared store", `[guard]`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.pg_cluster import ADMIN, DATABASE, READER, WRITER, Cluster
from tests.support.stores import Host, relay


def guarded(host: Host, guard: str = "") -> Host:
    """`host` with an audit trail, and `[guard]` settings beyond the defaults."""
    body = host.config.read_text()
    audit = host.root / "audit.log"
    host.config.write_text(f'log_file = "{audit}"\n{body}' + (f"\n[guard]\n{guard}\n" if guard else ""))
    return host


def audited(host: Host, event: str) -> list[str]:
    path = host.root / "audit.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line for line in lines if f" {event} " in line]


def alice_addresses(postgres: Cluster, schema: str, user: str = "alice") -> list[str]:
    return postgres.sql(
        f"SELECT address FROM {schema}.lease WHERE username = '{user}' ORDER BY address"
    ).split()


@pytest.mark.parametrize("eleventh_on", ["a", "b"])
def test_six_addresses_on_one_host_and_five_on_another_refuse_the_eleventh_where_it_logs_in(
    tmp_path: Path, postgres: Cluster, schema: str, eleventh_on: str
) -> None:
    hosts = {name: guarded(Host(tmp_path / name, postgres.store(schema))) for name in ("a", "b")}
    a, b = hosts["a"], hosts["b"]
    for n in range(1, 7):
        a.login(f"192.0.2.{n}", minutes_ago=30 - n)
    for n in range(7, 11):
        b.login(f"192.0.2.{n}", "Alice", minutes_ago=30 - n)  # the same user, as another server logs it
    a.ok("update")
    b.ok("update")
    assert len(relay(postgres, schema)) == 10
    there = hosts[eleventh_on]
    there.login("192.0.2.11", minutes_ago=1)
    there.ok("update")
    assert "192.0.2.11" not in relay(postgres, schema)
    (refusal,) = audited(there, "refuse")
    assert " refuse 192.0.2.11 user=alice reason=max-addresses " in refusal
    other = b if there is a else a
    assert audited(other, "refuse") == []
    for host in (a, b):
        host.ok("update")
        assert sorted(host.mapped()) == sorted(f"192.0.2.{n}" for n in range(1, 11))
    # Any host's status shows the user over the limit, from the store; no word of the guard being off.
    status = other.run("status", "--json")
    assert status.returncode == 0, status.stderr
    (over,) = json.loads(status.stdout)["guard"]["over_limit"]
    assert over["user"] == "alice" and over["addresses"] == 10 and over["refused"] == 1
    assert "[guard]" not in status.stderr


def test_revoke_through_the_store_leaves_the_user_no_lease_on_either_hosts_maps(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    a = guarded(Host(tmp_path / "a", postgres.store(schema)), 'on_exceed = "revoke"')
    b = guarded(Host(tmp_path / "b", postgres.store(schema)), 'on_exceed = "revoke"')
    for n in range(1, 7):
        a.login(f"192.0.2.{n}", minutes_ago=30 - n)
    a.login("198.51.100.7", "bob", minutes_ago=20)
    for n in range(7, 12):
        b.login(f"192.0.2.{n}", minutes_ago=30 - n)
    a.ok("update")
    assert len(a.mapped()) == 7
    b.ok("update")
    assert relay(postgres, schema) == ["198.51.100.7"]
    assert len([line for line in audited(b, "flush") if "by=guard" in line]) == 10
    a.ok("update")
    for host in (a, b):
        assert host.mapped() == ["198.51.100.7"]
    # Refused on every host for the window: host A reads a later login from one of its own addresses.
    a.login("192.0.2.1", minutes_ago=1)
    a.ok("update")
    assert relay(postgres, schema) == ["198.51.100.7"]
    assert any(" refuse 192.0.2.1 user=alice reason=max-addresses " in line for line in audited(a, "refuse"))


def test_shared_ranges_are_refused_and_an_address_shared_across_hosts_is_listed(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    a = guarded(Host(tmp_path / "a", postgres.store(schema)))
    b = guarded(Host(tmp_path / "b", postgres.store(schema)))
    a.login("100.64.1.2", minutes_ago=2)
    for n in range(11):
        a.login("203.0.113.9", f"user{n}", minutes_ago=30 - n)
    for n in range(11, 21):
        b.login("203.0.113.9", f"user{n}", minutes_ago=30 - n)
    a.ok("update")
    b.ok("update")
    assert relay(postgres, schema) == ["203.0.113.9"]
    assert any(" refuse 100.64.1.2 user=alice reason=shared " in line for line in audited(a, "refuse"))
    # 21 users from one address, 11 read on one host and 10 on the other.
    status = a.run("status", "--json")
    assert json.loads(status.stdout)["guard"]["shared"] == [{"address": "203.0.113.9", "users": 21}]


def test_a_store_of_version_2_is_upgraded_by_the_documented_sql_and_keeps_its_leases(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    from exactcron.stores.postgres import grants_sql, migrations, upgrade_sql

    documented = (Path(__file__).parent.parent / "docs" / "shared-store.md").read_text()
    upgrade = upgrade_sql("exactcron", 3)
    assert f"```sql\n{upgrade}```" in documented
    postgres.sql(
        migrations(schema)[0]
        + migrations(schema)[1]
        + f"INSERT INTO {schema}.schema_version VALUES (2);\n"
        + grants_sql(schema, WRITER, READER)
        + f"INSERT INTO {schema}.lease VALUES ('192.0.2.200', 'carol', now() - interval '5 minutes',"
        " now() + interval '25 minutes', 'dovecot');\n"
    )
    pop = guarded(Host(tmp_path / "pop", postgres.store(schema, WRITER)))
    mx = Host(tmp_path / "mx", postgres.store(schema, READER), sources=False)
    for n in range(1, 12):
        pop.login(f"192.0.2.{n}", minutes_ago=30 - n)
    refused = pop.run("update")
    assert refused.returncode == 75 and "to version 3" in refused.stderr
    assert relay(postgres, schema) == ["192.0.2.200"]
    postgres.sql(upgrade.replace("exactcron.", f"{schema}."))
    pop.ok("update")
    assert postgres.sql(f"SELECT version FROM {schema}.schema_version") == "3"
    held = relay(postgres, schema)
    assert "192.0.2.200" in held and "192.0.2.11" not in held and len(held) == 11
    # The MTAs' read-only role reads the guard's tables too (their privileges follow the lease table's).
    mx.ok("update")
    assert "192.0.2.200" in mx.mapped()
    status = mx.run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert [entry["user"] for entry in json.loads(status.stdout)["guard"]["over_limit"]] == ["alice"]


def _hold_guard_tables(postgres: Cluster, schema: str) -> object:
    """A session holding the guard's tables locked: whoever reaches them waits."""
    import psycopg

    session = psycopg.connect(host=str(postgres.socket_dir), port=postgres.port, user=ADMIN, dbname=DATABASE)
    session.execute(f"LOCK TABLE {schema}.guard_granted, {schema}.guard_seen IN ACCESS EXCLUSIVE MODE")
    return session


def _waiting(postgres: Cluster) -> int:
    return int(
        postgres.sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'exactcron' AND wait_event_type = 'Lock'"
        )
    )


@pytest.mark.parametrize("barrier", [True, False], ids=["both-waiting-then-released", "free-running"])
def test_two_hosts_merging_at_once_never_grant_more_than_the_limit(
    tmp_path: Path, postgres: Cluster, schema: str, barrier: bool
) -> None:
    a = guarded(Host(tmp_path / "a", postgres.store(schema)))
    b = guarded(Host(tmp_path / "b", postgres.store(schema)))
    a.ok("update")  # the schema, created
    rounds = 1 if barrier else 4
    for round_ in range(rounds):
        user = f"user{round_}"
        for n in range(8):
            a.login(f"192.0.{round_}.{n + 1}", user, minutes_ago=20 - n)
            b.login(f"198.51.{round_}.{n + 1}", user, minutes_ago=20 - n)
        before = len(audited(a, "refuse")) + len(audited(b, "refuse"))
        session = _hold_guard_tables(postgres, schema) if barrier else None
        try:
            running = [
                subprocess.Popen(
                    [sys.executable, "-m", "exactcron", "--config", str(host.config), "update"],
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for host in (a, b)
            ]
            if session is not None:
                # Both runs wait on the store (one on the guard's tables, one on the
                # writers' queue) before either has decided anything.
                for _ in range(1200):
                    if _waiting(postgres) >= 2 or any(process.poll() is not None for process in running):
                        break
                    time.sleep(0.05)
                assert _waiting(postgres) >= 2
        finally:
            if session is not None:
                session.commit()  # type: ignore[attr-defined]
                session.close()  # type: ignore[attr-defined]
        for process in running:
            assert process.wait(timeout=120) == 0, process.communicate()[1]
        # From the store's rows: 16 addresses tried, exactly the limit granted, the rest refused.
        assert len(alice_addresses(postgres, schema, user)) == 10
        assert postgres.sql(f"SELECT count(*) FROM {schema}.guard_granted WHERE username = '{user}'") == "10"
        assert len(audited(a, "refuse")) + len(audited(b, "refuse")) - before == 6


def test_the_guards_rows_are_forgotten_after_window_and_timeout(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = guarded(Host(tmp_path / "pop", postgres.store(schema)))
    pop.ok("update")
    s = schema
    postgres.sql(
        f"INSERT INTO {s}.guard_granted VALUES ('alice', '192.0.2.1', now() - interval '95 minutes'),"
        " ('alice', '192.0.2.2', now() - interval '80 minutes');"
        f"INSERT INTO {s}.guard_seen VALUES ('192.0.2.1', 'alice', now() - interval '95 minutes');"
        f"INSERT INTO {s}.guard_refused VALUES ('bob', '192.0.2.3', now() - interval '95 minutes', 'shared');"
        f"INSERT INTO {s}.guard_blocked VALUES ('carol', now() - interval '3 hours', now() - interval '95 minutes')"
    )
    pop.login("198.51.100.7", "dave")  # a run with something to read prunes
    pop.ok("update")
    # window (1h) + timeout (30m): what is older judges no login any more.
    assert postgres.sql(f"SELECT address FROM {s}.guard_granted WHERE username = 'alice'") == "192.0.2.2"
    assert postgres.sql(f"SELECT address FROM {s}.guard_seen") == "198.51.100.7"
    for table in ("guard_refused", "guard_blocked"):
        assert postgres.sql(f"SELECT count(*) FROM {s}.{table}") == "0", table
