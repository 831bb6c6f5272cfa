"""The shared lease store on a real PostgreSQL: many hosts, one set of leases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.pg_cluster import READER, WRITER, Cluster
from tests.support.stores import Host, relay


def test_a_login_read_on_one_host_counts_on_every_host(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    mx = Host(tmp_path / "mx", postgres.store(schema), sources=False)
    pop.login("192.0.2.10")
    pop.ok("update")
    assert relay(postgres, schema) == ["192.0.2.10"]
    mx.ok("update")
    assert mx.mapped() == ["192.0.2.10"]
    assert mx.shown() == ["192.0.2.10"]


@pytest.mark.parametrize("restart", [False, True], ids=["steady", "database-restarted-in-the-middle"])
def test_three_hosts_reading_at_once_lose_no_login(
    tmp_path: Path, postgres: Cluster, schema: str, restart: bool
) -> None:
    hosts = [Host(tmp_path / name, postgres.store(schema)) for name in ("pop1", "pop2", "pop3")]
    mx = Host(tmp_path / "mx", postgres.store(schema), sources=False)
    expected: dict[str, float] = {}
    for round_ in range(3):
        for number, host in enumerate(hosts):
            for client in range(20):
                address = f"198.51.{number}.{round_ * 20 + client}"
                host.login(address, f"user{number}-{client}", minutes_ago=10)  # each within [guard]
                expected[address] = 10
            # The same address logged in on every host: its lease ends after the latest login.
            host.login("192.0.2.99", minutes_ago=9 - number)
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "exactcron", "--config", str(host.config), "update"],
                stderr=subprocess.PIPE,
                text=True,
            )
            for host in [*hosts, mx]
        ]
        if restart and round_ == 1:
            # Under the runs of the second round: each may fail (75), none may lose a login.
            postgres.restart()
            for process in running:
                code = process.wait(timeout=120)
                assert code in (0, 75), process.communicate()[1]
                if code == 75:
                    assert process.communicate()[1].startswith("exactcron: lease store postgresql://")
            continue
        for process in running:
            assert process.wait(timeout=120) == 0, process.communicate()[1]
    wanted = sorted([*expected, "192.0.2.99"])
    assert sorted(relay(postgres, schema)) == wanted
    mx.ok("update")
    assert sorted(mx.mapped()) == wanted
    latest = json.loads(mx.ok("show", "--json"))["leases"]
    (shared,) = [lease for lease in latest if lease["ip"] == "192.0.2.99"]
    # pop3's login (7 minutes ago) is the latest: 23 minutes left of a 30-minute timeout.
    left = datetime.fromisoformat(shared["expires"]) - datetime.now(UTC)
    assert timedelta(minutes=22) < left < timedelta(minutes=24)
    for host in hosts:
        host.ok("update")
        assert sorted(host.mapped()) == wanted


def test_a_flush_on_one_host_beats_an_earlier_login_read_later_on_another(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop_a = Host(tmp_path / "a", postgres.store(schema))
    pop_b = Host(tmp_path / "b", postgres.store(schema))
    admin = Host(tmp_path / "c", postgres.store(schema), sources=False)
    pop_a.login("192.0.2.10", minutes_ago=5)
    pop_a.ok("update")
    pop_b.login("192.0.2.10", minutes_ago=2)  # logged before the flush, read after it
    assert admin.ok("flush", "192.0.2.10").strip() == "revoked 192.0.2.10"
    assert relay(postgres, schema) == []
    pop_b.ok("update")
    pop_a.ok("update")
    assert relay(postgres, schema) == []
    assert pop_a.mapped() == [] and pop_b.mapped() == []
    # A login after the flush grants again (one stamped ahead of the clock would not).
    time.sleep(1.1)
    pop_b.login("192.0.2.10", minutes_ago=0)
    pop_b.ok("update")
    assert relay(postgres, schema) == ["192.0.2.10"]


def test_flush_all_and_add_work_from_any_host(tmp_path: Path, postgres: Cluster, schema: str) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    mx = Host(tmp_path / "mx", postgres.store(schema), sources=False)
    pop.login("192.0.2.10", minutes_ago=3)
    pop.login("2001:db8::1", minutes_ago=3)
    pop.ok("update")
    mx.ok("add", "192.0.2.20", "--for", "2h")
    assert relay(postgres, schema) == ["192.0.2.10", "192.0.2.20", "2001:db8::1"]
    assert mx.mapped() == ["192.0.2.10", "192.0.2.20", "2001:db8::1"]
    pop.ok("flush", "--all")
    assert relay(postgres, schema) == []
    pop.login("2001:db8::1", minutes_ago=1)  # logged before the flush
    pop.ok("update")
    mx.ok("update")
    assert relay(postgres, schema) == [] and mx.mapped() == []


def test_a_quiet_run_still_brings_other_hosts_grants_to_this_hosts_map(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop_a = Host(tmp_path / "a", postgres.store(schema))
    pop_b = Host(tmp_path / "b", postgres.store(schema))
    pop_a.login("192.0.2.10")
    pop_a.ok("update")
    trace = tmp_path / "points"
    result = pop_a.run("update")
    assert result.returncode == 0
    changes = postgres.sql(f"SELECT changes FROM {schema}.meta")
    pop_b.login("192.0.2.11")
    pop_b.ok("update")
    assert postgres.sql(f"SELECT changes FROM {schema}.meta") != changes
    environment = {**os.environ, "EXACTCRON_TRACE_POINTS": str(trace)}
    subprocess.run(
        [sys.executable, "-m", "exactcron", "--config", str(pop_a.config), "update"],
        env=environment,
        check=True,
    )
    assert pop_a.mapped() == ["192.0.2.10", "192.0.2.11"]
    assert "store:read" in trace.read_text().split()
    trace.unlink()
    subprocess.run(
        [sys.executable, "-m", "exactcron", "--config", str(pop_a.config), "update"],
        env=environment,
        check=True,
    )
    # Nothing changed anywhere: the run asked one question and read no lease.
    assert "store:read" not in trace.read_text().split()
    # ... through libpq alone: loading psycopg would cost more than the rest of the run.
    quiet = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "exactcron", "--config", str(pop_a.config), "update"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exactcron.stores.libpq" in quiet.stderr and "psycopg" not in quiet.stderr


def test_the_schema_comes_from_the_readme_sql_for_roles_that_may_not_create(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    from exactcron.stores.postgres import grants_sql, schema_sql

    postgres.sql(schema_sql(schema) + grants_sql(schema, WRITER, READER))
    pop = Host(tmp_path / "pop", postgres.store(schema, WRITER))
    mx = Host(tmp_path / "mx", postgres.store(schema, READER), sources=False)
    pop.login("192.0.2.10")
    pop.ok("update")
    mx.ok("update")
    assert mx.mapped() == ["192.0.2.10"]
    mx.ok("render")
    refused = mx.run("flush", "192.0.2.10")
    assert refused.returncode == 75
    assert "permission denied" in refused.stderr
    assert relay(postgres, schema) == ["192.0.2.10"]


def test_the_docs_give_the_sql_and_the_mta_files_exactly_as_tested() -> None:
    from exactcron.stores.postgres import grants_sql, schema_sql

    root = Path(__file__).parent.parent
    documented = (root / "docs" / "shared-store.md").read_text()
    assert schema_sql("exactcron") + grants_sql("exactcron", "exactcron_pop", "exactcron_mta") in documented
    for example in ("postfix-exactcron-relay.cf", "exim-exactcron-relay.conf"):
        assert f"```\n{(root / 'examples' / example).read_text()}```" in documented


def test_hosts_creating_the_schema_at_once_create_it_once(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    hosts = [Host(tmp_path / f"h{number}", postgres.store(schema), sources=False) for number in range(4)]
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "exactcron", "--config", str(host.config), "show"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for host in hosts
    ]
    for process in running:
        assert process.wait(timeout=120) == 0, process.communicate()[1]
    from exactcron.stores.postgres import SCHEMA_VERSION

    assert postgres.sql(f"SELECT version FROM {schema}.schema_version") == str(SCHEMA_VERSION)
    assert postgres.sql(f"SELECT count(*) FROM {schema}.meta") == "1"


def test_status_warns_when_the_clocks_of_host_and_database_differ(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    pop.ok("update")
    in_step = pop.run("status")
    assert in_step.returncode == 0 and "clock" not in in_step.stderr
    skewed = pop.run("status", now=(datetime.now(UTC) + timedelta(minutes=3)).isoformat())
    assert skewed.returncode == 0
    # 180 s, less the time the run took to reach the database.
    assert re.search(r"warning: the lease store's clock is 1(79|80)s behind this host's", skewed.stderr)
    assert "NTP" in skewed.stderr


def test_a_password_in_the_url_is_refused_and_never_shown(tmp_path: Path, postgres: Cluster) -> None:
    host = Host(tmp_path / "pop", '[store]\nurl = "postgresql://pop:s3cr3tpw@127.0.0.1/mail"\n')
    result = host.run("update")
    assert result.returncode == 78
    assert "~/.pgpass" in result.stderr and "s3cr3tpw" not in result.stderr


def test_a_wrong_password_exits_75_without_showing_it(tmp_path: Path, postgres: Cluster, schema: str) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:*:not-the-password\n")
    passfile.chmod(0o600)
    host = Host(tmp_path / "pop", postgres.store(schema))
    for verbose in ([], ["-v"]):
        result = subprocess.run(
            [sys.executable, "-m", "exactcron", "--config", str(host.config), *verbose, "update"],
            capture_output=True,
            text=True,
            env={**os.environ, "PGPASSFILE": str(passfile)},
        )
        assert result.returncode == 75
        assert "password authentication failed" in result.stderr
        assert "not-the-password" not in result.stderr
        if not verbose:
            assert len(result.stderr.strip().splitlines()) == 1


def test_a_host_whose_clock_runs_ahead_ends_no_other_hosts_lease(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    fast = Host(tmp_path / "fast", postgres.store(schema), sources=False)
    pop.login("192.0.2.10", minutes_ago=1)
    pop.ok("update")
    fast.ok("update", now=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert fast.mapped() == []  # by its own clock the lease is over
    assert relay(postgres, schema) == ["192.0.2.10"]  # by the database's, it is not
    pop.ok("update")
    assert pop.mapped() == ["192.0.2.10"]


def test_a_host_leaves_addresses_in_its_own_ignore_out_of_its_maps(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    mx = Host(tmp_path / "mx", postgres.store(schema), sources=False)
    mx.config.write_text('ignore = ["192.0.2.0/28"]\n' + mx.config.read_text())
    pop.login("192.0.2.10")
    pop.login("192.0.2.20")
    pop.ok("update")
    mx.ok("update")
    assert mx.mapped() == ["192.0.2.20"]
    postgres.stop()
    try:
        assert mx.run("update").returncode == 75
    finally:
        postgres.start()
    assert mx.mapped() == ["192.0.2.20"]  # its copy of the leases, as it read them
    assert relay(postgres, schema) == ["192.0.2.10", "192.0.2.20"]


def test_the_store_believes_a_stamp_ahead_of_the_clock_as_the_lease_file_does(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    pop = Host(tmp_path / "pop", postgres.store(schema))
    pop.login("192.0.2.10", minutes_ago=-0.5)  # half a minute ahead: counts as now
    pop.login("192.0.2.11", minutes_ago=-2)  # two minutes ahead: not believed
    pop.login("192.0.2.12", minutes_ago=-2)
    pop.login("192.0.2.12", minutes_ago=1)  # a genuine login after it grants
    result = pop.run("update")
    assert result.returncode == 0, result.stderr
    assert "2 logins stamped more than a minute ahead of the clock granted nothing" in result.stderr
    assert relay(postgres, schema) == ["192.0.2.10", "192.0.2.12"]
    assert pop.mapped() == ["192.0.2.10", "192.0.2.12"]
