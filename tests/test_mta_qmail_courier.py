"""qmail's and Courier's maps, a map's `value`, and `ignore = ["mynetworks"]`.

qmail: the rules text and its CDB built by the real tcprules (ucspi-tcp-ipv6,
installed by tests/setup-debian), checked with the real tcprulescheck, which
answers as tcpserver -x would for TCPREMOTEIP. Courier: Debian's own
makesmtpaccess and makedat, unpacked (courier-mta conflicts with postfix; see
tests/tools/fetch-courier-binaries.sh), build smtpaccess.dat, a GDBM file
read back with Perl's GDBM_File as couriertcpd looks a client up.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactcron.outputs.maps import courier_key, render, tcprules_keys
from exactcron.outputs.mynetworks import parse_mynetworks
from tests.support.binaries import COURIER_CACHE, courier_unavailable
from tests.support.clock import LATER
from tests.support.lines import login_line
from tests.support.maps import postmap_query
from tests.support.site import Site, ok, site_with_maps

# -- qmail -------------------------------------------------------------------------


def tcprulescheck(cdb: Path, address: str) -> str:
    """What tcpserver -x CDB does for a client at `address`, as tcprulescheck says it."""
    if shutil.which("tcprulescheck") is None:
        courier_unavailable("tcprulescheck not installed (Debian package ucspi-tcp-ipv6)")
    checked = subprocess.run(
        ["tcprulescheck", str(cdb)],
        env={**os.environ, "TCPREMOTEIP": address},
        capture_output=True,
        text=True,
        check=True,
    )
    return checked.stdout


def relays(cdb: Path, address: str) -> bool:
    verdict = tcprulescheck(cdb, address)
    return "RELAYCLIENT=" in verdict and "allow connection" in verdict


SITE_RULES = '10.:allow,RELAYCLIENT=""\n192.0.2.66:deny\n:allow\n'


def qmail_site(directory: Path) -> tuple[Site, Path]:
    rules = directory / "tcp.smtp"
    rules.write_text(SITE_RULES)
    relay = directory / "maps" / "tcp.smtp.relay"
    site = site_with_maps(directory, f'mta = "qmail"\npath = "{relay}"\ninclude = "{rules}"')
    return site, relay


def test_qmail_leased_addresses_get_relayclient_and_the_site_rules_still_apply(site_dir: Path) -> None:
    if shutil.which("tcprules") is None:
        courier_unavailable("tcprules not installed (Debian package ucspi-tcp-ipv6)")
    site, relay = qmail_site(site_dir)
    site.append_log(
        login_line("192.0.2.10", "alice", 1),
        login_line("2001:db8::5", "bob", 2),
        login_line("192.0.2.66", "eve", 3),
    )
    ok(site.run_process("update"))
    cdb = relay.with_name(relay.name + ".cdb")
    assert relays(cdb, "192.0.2.10")
    assert relays(cdb, "2001:db8::5")
    assert not relays(cdb, "192.0.2.11")
    assert not relays(cdb, "2001:db8::6")
    # The site's own rules: a network it trusts, and a deny that a login does not override.
    assert relays(cdb, "10.1.2.3")
    assert "deny connection" in tcprulescheck(cdb, "192.0.2.66")
    assert relay.read_text().endswith(SITE_RULES)

    ok(site.run_process("flush", "192.0.2.10", now=LATER))
    assert not relays(cdb, "192.0.2.10")
    assert relays(cdb, "2001:db8::5")
    assert not [name for name in os.listdir(relay.parent) if name.startswith(".")]


def test_qmail_include_file_missing_is_a_run_time_error_and_the_cdb_is_kept(site_dir: Path) -> None:
    if shutil.which("tcprules") is None:
        courier_unavailable("tcprules not installed (Debian package ucspi-tcp-ipv6)")
    site, _ = qmail_site(site_dir)
    ok(site.run_process("update"))
    (site_dir / "tcp.smtp").unlink()
    failed = site.run_process("update", now=LATER)
    assert failed.returncode == 69
    assert "tcp.smtp" in failed.stderr and "Traceback" not in failed.stderr


@pytest.fixture(scope="session")
def plain_ucspi_tcp() -> Path:
    """The bin directory of Debian's ucspi-tcp (without IPv6), unpacked, not installed
    (it conflicts with ucspi-tcp-ipv6)."""
    root = COURIER_CACHE / "ucspi-tcp"
    tcprules = root / "usr" / "bin" / "tcprules"
    if not tcprules.exists():
        COURIER_CACHE.mkdir(parents=True, exist_ok=True)
        downloads = Path(tempfile.mkdtemp(prefix="download.", dir=COURIER_CACHE))
        try:
            fetched = subprocess.run(
                ["apt-get", "download", "ucspi-tcp"],
                cwd=downloads,
                capture_output=True,
                text=True,
                check=False,
            )
            if fetched.returncode != 0:
                courier_unavailable(f"apt-get download ucspi-tcp failed: {fetched.stderr.strip()}")
            for deb in downloads.glob("*.deb"):
                subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        finally:
            shutil.rmtree(downloads, ignore_errors=True)
    return tcprules.parent


def test_qmail_with_a_tcprules_without_ipv6_still_gets_its_ipv4_leases(
    site_dir: Path, plain_ucspi_tcp: Path
) -> None:
    site, relay = qmail_site(site_dir)
    environment = {"PATH": f"{plain_ucspi_tcp}:{os.environ['PATH']}"}
    site.append_log(login_line("192.0.2.10", "alice", 1), login_line("2001:db8::5", "bob", 2))
    ran = ok(site.run_process("update", env=environment))
    assert "IPv6 leases left out" in ran.stderr
    cdb = relay.with_name(relay.name + ".cdb")
    assert relays(cdb, "192.0.2.10") and relays(cdb, "10.1.2.3")
    # Quiet next time: built once for these leases.
    before = cdb.stat().st_ino
    quiet = ok(site.run_process("update", env=environment))
    assert quiet.stderr == "" and cdb.stat().st_ino == before
    # A flush still reaches the map.
    ok(site.run_process("flush", "192.0.2.10", now=LATER, env=environment))
    assert not relays(cdb, "192.0.2.10")


# -- Courier -----------------------------------------------------------------------


def smtpaccess(dat: Path) -> dict[str, str]:
    """Every key of smtpaccess.dat and its value."""
    script = 'tie %h, "GDBM_File", $ARGV[0], &GDBM_READER, 0 or die "$!"; print "$_\\t$h{$_}\\n" for keys %h'
    dumped = subprocess.run(
        ["perl", "-MGDBM_File", "-e", script, str(dat)], capture_output=True, text=True, check=True
    )
    return dict(line.split("\t", 1) for line in dumped.stdout.splitlines())


def test_courier_smtpaccess_dat_lets_leased_addresses_relay(site_dir: Path, courier_bin: Path) -> None:
    etc = site_dir / "courier"
    access = etc / "smtpaccess"
    access.mkdir(parents=True)
    (etc / "esmtpd").write_text(f"ACCESSFILE={access}\n")
    (access / "default").write_text("127.0.0.1\tallow,RELAYCLIENT\n192.0.2\tallow,BLOCK\n")
    site = site_with_maps(site_dir, f'mta = "courier"\npath = "{access / "exactcron"}"')
    site.append_log(login_line("192.0.2.10", "alice", 1), login_line("::ffff:192.0.2.12", "carol", 2))
    site.append_log(login_line("2001:db8::5", "bob", 3))
    environment = {"PATH": f"{courier_bin}:{os.environ['PATH']}", "COURIER_SYSCONFDIR": str(etc)}
    ok(site.run_process("update", env=environment))
    table = smtpaccess(etc / "smtpaccess.dat")
    assert table["192.0.2.10"] == "allow,RELAYCLIENT"
    assert table["192.0.2.12"] == "allow,RELAYCLIENT"  # the IPv4-mapped client, as IPv4
    assert table[":2001:0db8:0000:0000:0000:0000:0000:0005"] == "allow,RELAYCLIENT"
    assert "192.0.2.11" not in table
    # The site's own files still count.
    assert table["192.0.2"] == "allow,BLOCK" and table["127.0.0.1"] == "allow,RELAYCLIENT"
    # No temporary file was ever a file in smtpaccess/, where makedat would read it.
    assert sorted(path.name for path in access.iterdir()) == ["default", "exactcron"]

    ok(site.run_process("flush", "192.0.2.10", now=LATER, env=environment))
    table = smtpaccess(etc / "smtpaccess.dat")
    assert "192.0.2.10" not in table
    assert ":2001:0db8:0000:0000:0000:0000:0000:0005" in table


def test_courier_makesmtpaccess_failing_is_69_and_retried(site_dir: Path, courier_bin: Path) -> None:
    etc = site_dir / "courier"
    access = etc / "smtpaccess"
    access.mkdir(parents=True)
    site = site_with_maps(site_dir, f'mta = "courier"\npath = "{access / "exactcron"}"')
    site.append_log(login_line("192.0.2.10", "alice", 1))
    environment = {"PATH": f"{courier_bin}:{os.environ['PATH']}", "COURIER_SYSCONFDIR": str(etc)}
    failed = site.run_process("update", env=environment)  # no esmtpd: makesmtpaccess fails
    assert failed.returncode == 69, failed.stderr
    assert "makesmtpaccess" in failed.stderr
    (etc / "esmtpd").write_text(f"ACCESSFILE={access}\n")
    ok(site.run_process("update", env=environment))  # the text is unchanged, yet the .dat is built
    assert smtpaccess(etc / "smtpaccess.dat")["192.0.2.10"] == "allow,RELAYCLIENT"


@given(st.ip_addresses(v=6))
def test_courier_key_is_couriers_expanded_form(address: ipaddress.IPv6Address) -> None:
    if address.ipv4_mapped is not None:
        return  # normalized to IPv4 before any map sees it
    key = courier_key(str(address))
    assert key == ":" + address.exploded
    assert key == key.lower() and len(key) == 40


def test_a_lease_the_site_rules_list_is_left_to_the_site() -> None:
    include = b"192.0.2.66:deny\n2001:db8::7:deny\n# 192.0.2.10:deny\n"
    assert tcprules_keys(include) == {"192.0.2.66", "2001:db8::7"}
    text = render("qmail", ["192.0.2.10", "192.0.2.66", "2001:db8::7"], include)
    assert text == b'192.0.2.10:allow,RELAYCLIENT=""\n' + include


# -- value ---------------------------------------------------------------------------


def test_postfix_value_is_what_postmap_gives(site_dir: Path) -> None:
    relay = site_dir / "maps" / "relay"
    site = site_with_maps(
        site_dir, f'mta = "postfix"\npath = "{relay}"\ntype = "hash"\nvalue = "permit_auth_destination"'
    )
    site.append_log(login_line("192.0.2.10", "alice", 1))
    ok(site.run_process("update"))
    queried = postmap_query(relay, "192.0.2.10")
    assert queried.returncode == 0, queried.stderr
    assert queried.stdout.strip() == "permit_auth_destination"


def test_sendmail_value() -> None:
    assert render("sendmail", ["192.0.2.10"], value="OK") == b"Connect:192.0.2.10 OK\n"
    assert render("sendmail", ["192.0.2.10"]) == b"Connect:192.0.2.10 RELAY\n"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('mta = "postfix"\nvalue = "OK REJECT"', "map[0].value"),
        ('mta = "postfix"\nvalue = "OK\\n10.0.0.1 OK"', "map[0].value"),
        ('mta = "sendmail"\nvalue = "RELAY\\u0000"', "map[0].value"),
        ('mta = "postfix"\nvalue = ""', "map[0].value"),
        ('mta = "exim"\nvalue = "OK"', "only a postfix or sendmail map has a value"),
        ('mta = "qmail"\nvalue = "OK"', "only a postfix or sendmail map has a value"),
        ('mta = "courier"\nvalue = "OK"', "only a postfix or sendmail map has a value"),
        ('mta = "courier"\ninclude = "/etc/x"', "map[0].include"),
    ],
)
def test_bad_map_keys_are_78_naming_the_key(site_dir: Path, table: str, expected: str) -> None:
    site = site_with_maps(site_dir, f'{table}\npath = "{site_dir / "maps" / "relay"}"')
    checked = site.run_process("check")
    assert checked.returncode == 78, checked.stderr
    assert expected in checked.stderr and "Traceback" not in checked.stderr


# -- mynetworks -------------------------------------------------------------------------


def postfix_config(directory: Path, mynetworks: str) -> Path:
    config = directory / "postfix"
    config.mkdir()
    (config / "main.cf").write_text(f"mynetworks = {mynetworks}\n")
    (config / "master.cf").write_text("")
    return config


def test_mynetworks_are_never_granted(site_dir: Path) -> None:
    trusted = site_dir / "trusted-networks"
    trusted.write_text("# the office\n192.0.2.0/28 198.51.100.64/26, [2001:db8:1::]/48\n")
    config = postfix_config(
        site_dir, f"127.0.0.0/8 [::1]/128 {trusted} hash:/etc/postfix/network_table !192.0.2.99"
    )
    relay = site_dir / "maps" / "relay"
    site = site_with_maps(site_dir, f'mta = "exim"\npath = "{relay}"')
    site.config.write_text(
        site.config.read_text().replace('timeout = "30m"', 'timeout = "30m"\nignore = ["mynetworks"]')
    )
    site.append_log(
        login_line("192.0.2.5", "alice", 1),
        login_line("2001:db8:1::9", "bob", 2),
        login_line("198.51.100.7", "carol", 3),
    )
    environment = {"MAIL_CONFIG": str(config)}
    ran = ok(site.run_process("update", env=environment))
    assert relay.read_text() == "198.51.100.7\n"
    assert "hash:/etc/postfix/network_table" in ran.stderr  # warned: a table cannot be listed
    added = site.run_process("add", "198.51.100.70", env=environment)
    assert added.returncode == 2 and "ignore" in added.stderr
    # A change to main.cf counts at the next run: the lease already held is dropped.
    (config / "main.cf").write_text("mynetworks = 198.51.100.0/24\n")
    ok(site.run_process("update", now=LATER, env=environment))
    assert relay.read_text() == ""


def test_postconf_failing_is_69(site_dir: Path) -> None:
    site = site_with_maps(site_dir, f'mta = "exim"\npath = "{site_dir / "maps" / "relay"}"')
    site.config.write_text(
        site.config.read_text().replace('timeout = "30m"', 'timeout = "30m"\nignore = ["mynetworks"]')
    )
    failed = site.run_process("update", env={"MAIL_CONFIG": str(site_dir / "no-such-directory")})
    assert failed.returncode == 69, failed.stderr
    assert "postconf" in failed.stderr and "Traceback" not in failed.stderr


def test_parse_mynetworks() -> None:
    files = {"/etc/postfix/nets": "10.1.0.0/16 # lab\n/etc/postfix/more\n", "/etc/postfix/more": "[fd00::]/8"}

    def read(name: str) -> str:
        if name not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[name]

    networks, skipped = parse_mynetworks(
        "127.0.0.0/8 [::ffff:127.0.0.0]/104, [::1]/128 /etc/postfix/nets /etc/postfix/gone "
        "cidr:/etc/postfix/t !10.1.2.3 example.org 192.0.2.7",
        read,
    )
    assert [str(network) for network in networks] == [
        "127.0.0.0/8",
        "127.0.0.0/8",
        "::1/128",
        "10.1.0.0/16",
        "fd00::/8",
        "192.0.2.7/32",
    ]
    assert [entry for entry, _ in skipped] == [
        "/etc/postfix/gone",
        "cidr:/etc/postfix/t",
        "!10.1.2.3",
        "example.org",
    ]
