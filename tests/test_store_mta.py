"""MTAs asking the shared store directly: a real Postfix (proxy:pgsql) and Exim (pgsql).

Host A is a POP server whose log exactcron reads; host B is an MTA that
only queries PostgreSQL's `relay` view with the read-only role, through the
files in examples/ as shipped; host C flushes. The client lives in network
namespace excpg-c2 (10.79.0.2, fd79::2) and talks SMTP to B on 10.79.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.binaries import FETCH_MTA, MTA_CACHE, fetched_bin_dir
from tests.support.maps import postmap_query
from tests.support.pg_cluster import READER, Cluster
from tests.support.stores import Host
from tests.support.tools import require_tool

try:
    from tests.e2e import harness
except ImportError:  # tests/ is no package: pytest put tests/ itself on sys.path
    from e2e import harness  # type: ignore[no-redef,import-not-found,unused-ignore]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVER = ("10.79.0.1", "fd79::1")
CLIENT = harness.Client("excpg-c2", "10.79.0.2", "fd79::2", "excpg-c2h", "excpg-c2n")


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def example(name: str, postgres: Cluster, schema: str) -> str:
    """An example file with this cluster's address, role, password and schema in place."""
    return (
        (EXAMPLES / name)
        .read_text()
        .replace("db.example.net:5432", f"127.0.0.1:{postgres.port}")
        .replace("exactcron_mta", READER)
        .replace("CHANGE-ME", postgres.passwords[READER])
        .replace("exactcron.relay", f"{schema}.relay")
    )


@pytest.fixture
def client_network() -> Iterator[None]:
    """A veth pair: 10.79.0.1/fd79::1 here, the client's end in its own namespace."""
    if os.geteuid() != 0:
        unavailable("needs root for network namespaces")
    ip = require_tool("ip")

    def remove() -> None:
        subprocess.run([ip, "netns", "del", CLIENT.netns], capture_output=True)
        subprocess.run([ip, "link", "del", CLIENT.host_if], capture_output=True)

    remove()
    try:
        for command in (
            ["netns", "add", CLIENT.netns],
            ["link", "add", CLIENT.host_if, "type", "veth", "peer", "name", CLIENT.ns_if],
            ["link", "set", CLIENT.ns_if, "netns", CLIENT.netns],
            ["addr", "add", f"{SERVER[0]}/24", "dev", CLIENT.host_if],
            ["addr", "add", f"{SERVER[1]}/64", "dev", CLIENT.host_if, "nodad"],
            ["link", "set", CLIENT.host_if, "up"],
            ["-n", CLIENT.netns, "link", "set", "lo", "up"],
            ["-n", CLIENT.netns, "addr", "add", f"{CLIENT.v4}/24", "dev", CLIENT.ns_if],
            ["-n", CLIENT.netns, "addr", "add", f"{CLIENT.v6}/64", "dev", CLIENT.ns_if, "nodad"],
            ["-n", CLIENT.netns, "link", "set", CLIENT.ns_if, "up"],
        ):
            subprocess.run([ip, *command], check=True, capture_output=True)
        yield
    finally:
        remove()


def test_a_login_on_host_a_opens_relay_through_postfix_on_host_b_and_a_flush_on_c_closes_it(
    site_dir: Path, postgres: Cluster, schema: str, client_network: None
) -> None:
    require_tool("postmap")
    require_tool("postfix")
    if not Path("/usr/lib/postfix/postfix-pgsql.so").exists():
        unavailable("postfix-pgsql is not installed (the test bootstrap installs it)")
    from exactcron.stores.postgres import grants_sql, schema_sql

    postgres.sql(schema_sql(schema) + grants_sql(schema, "pop_writer", READER))
    pop = Host(site_dir / "a", postgres.store(schema, "pop_writer"), maps=False)
    admin = Host(site_dir / "c", postgres.store(schema, "pop_writer"), maps=False)
    table = site_dir / "exactcron-relay.cf"
    table.write_text(example("postfix-exactcron-relay.cf", postgres, schema))
    shutil.chown(table, "root", "postfix")
    table.chmod(0o640)
    postfix = harness.Postfix(
        site_dir / "postfix", table, addresses=SERVER, client_access=f"proxy:pgsql:{table}"
    )

    def lookup(address: str) -> str:
        return postmap_query(table, address, "pgsql", timeout=30).stdout

    with harness.started(postfix):
        assert harness.relay_probe(CLIENT, SERVER[0])[0] == 554
        pop.login(CLIENT.v4, minutes_ago=0.5)
        pop.login(CLIENT.v6, minutes_ago=0.5)
        pop.ok("update")
        assert lookup(CLIENT.v4) == "OK\n"
        assert lookup(CLIENT.v6) == "OK\n"
        assert lookup("10.79.0.3") == ""
        assert harness.relay_probe(CLIENT, SERVER[0])[0] == 250
        assert harness.relay_probe(CLIENT, SERVER[1])[0] == 250

        admin.ok("flush", CLIENT.v4)
        assert lookup(CLIENT.v4) == ""
        assert harness.relay_probe(CLIENT, SERVER[0])[0] == 554
        assert harness.relay_probe(CLIENT, SERVER[1])[0] == 250

        # The database gone, the lookup fails and smtpd defers: no relay, even for a lease.
        postgres.stop()
        try:
            assert harness.relay_probe(CLIENT, SERVER[1])[0] == 451
        finally:
            postgres.start()


@pytest.fixture(scope="session")
def exim_heavy() -> Path:
    if os.geteuid() != 0:
        unavailable("needs root: Exim's binary needs the Debian-exim user")
    return fetched_bin_dir(FETCH_MTA, MTA_CACHE, unavailable, timeout=600) / "exim4-heavy"


def exim_rcpt_reply(exim: Path, config: Path, client: str) -> str:
    session = subprocess.run(
        [str(exim), "-C", str(config), "-bh", client],
        input="HELO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@outside.example>\r\nQUIT\r\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    replies = [line for line in session.stdout.splitlines() if line[:3].isdigit()]
    assert [reply[:3] for reply in replies[:3]] == ["220", "250", "250"], session.stdout + session.stderr
    return replies[3]


def test_exim_relays_for_the_leases_in_the_store(
    site_dir: Path, postgres: Cluster, schema: str, exim_heavy: Path
) -> None:
    from exactcron.stores.postgres import grants_sql, schema_sql

    postgres.sql(schema_sql(schema) + grants_sql(schema, "pop_writer", READER))
    pop = Host(site_dir / "a", postgres.store(schema, "pop_writer"), maps=False)
    main_section, acl = example("exim-exactcron-relay.conf", postgres, schema).split("# acl_check_rcpt:\n")
    spool = site_dir / "spool"
    spool.mkdir()
    config = site_dir / "exim.conf"
    config.write_text(
        f"spool_directory = {spool}\nlog_file_path = {spool}/%slog\n"
        "primary_hostname = mail.test.invalid\ndomainlist local_domains = mail.test.invalid\n"
        f"{main_section}acl_smtp_rcpt = acl_check_rcpt\nbegin acl\nacl_check_rcpt:\n"
        f"  accept domains = +local_domains\n{acl}  deny message = relay not permitted\n"
    )
    assert exim_rcpt_reply(exim_heavy, config, "10.79.0.2").startswith("550 relay not permitted")
    pop.login("10.79.0.2", minutes_ago=0.5)
    pop.login("fd79::2", minutes_ago=0.5)
    pop.ok("update")
    assert exim_rcpt_reply(exim_heavy, config, "10.79.0.2") == "250 Accepted"
    assert exim_rcpt_reply(exim_heavy, config, "fd79::2") == "250 Accepted"
    assert exim_rcpt_reply(exim_heavy, config, "10.79.0.3").startswith("550 relay not permitted")
    pop.ok("flush", "10.79.0.2")
    assert exim_rcpt_reply(exim_heavy, config, "10.79.0.2").startswith("550 relay not permitted")
    postgres.stop()
    try:
        assert exim_rcpt_reply(exim_heavy, config, "fd79::2").startswith("451")
    finally:
        postgres.start()
