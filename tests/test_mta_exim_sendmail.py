"""Exim's and Sendmail's maps, proven with their own binaries.

The binaries come from the Debian packages unpacked beside Postfix (they
conflict as installed packages): see tests/tools/fetch-mta-binaries.sh.
Exim decides relay in host-checking mode (`exim -bh ADDRESS`, a scripted
SMTP session); Sendmail's decision comes from its own check_rcpt ruleset in
a sendmail.cf built by m4 from sendmail-cf with FEATURE(access_db), in
address-test mode (`sendmail -bt`). Where the binaries cannot be had, these
tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.clock import LATER
from tests.support.lines import failed_line, login_line
from tests.support.site import Site, ok, site_with_maps


def with_path(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


# -- Exim ------------------------------------------------------------------------


def exim_config(directory: Path, relay_map: Path) -> Path:
    config = directory / "exim.conf"
    spool = directory / "spool"
    spool.mkdir()
    # The relay_from_hosts line is the one docs/install.md gives; the ACL is the
    # relevant part of Debian's acl_check_rcpt.
    config.write_text(
        f"spool_directory = {spool}\n"
        f"log_file_path = {spool}/%slog\n"
        "primary_hostname = mail.test.invalid\n"
        "domainlist local_domains = mail.test.invalid\n"
        f"hostlist relay_from_hosts = <; 127.0.0.1 ; ::1 ; {relay_map}\n"
        "acl_smtp_rcpt = acl_check_rcpt\n"
        "begin acl\n"
        "acl_check_rcpt:\n"
        "  accept domains = +local_domains\n"
        "  accept hosts = +relay_from_hosts\n"
        "  deny message = relay not permitted\n"
        "begin routers\n"
        "begin transports\n"
    )
    return config


def exim_rcpt_reply(bin_dir: Path, config: Path, client: str) -> str:
    """Exim's reply to a RCPT for an outside domain from `client`, in a simulated session."""
    dialogue = (
        "HELO client.invalid\r\nMAIL FROM:<a@client.invalid>\r\nRCPT TO:<b@outside.example>\r\nQUIT\r\n"
    )
    session = subprocess.run(
        [bin_dir / "exim4", "-C", str(config), "-bh", client],
        input=dialogue,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    replies = [line for line in session.stdout.splitlines() if line[:3].isdigit()]
    assert [reply[:3] for reply in replies[:3]] == ["220", "250", "250"], session.stdout + session.stderr
    return replies[3]


def test_exim_relays_for_leased_addresses_only(mta_bin: Path, site_dir: Path) -> None:
    site = site_with_maps(site_dir, 'mta = "exim"\npath = "maps/relay-exim"')
    relay_map = site.map_dir / "relay-exim"
    config = exim_config(site_dir, relay_map)

    ok(site.run_process("update"))
    assert relay_map.read_bytes() == b""  # exists at once: Exim defers on a missing file
    assert exim_rcpt_reply(mta_bin, config, "10.77.0.2").startswith("550 relay not permitted")

    site.append_log(login_line("10.77.0.2"), login_line("fd77::2", second=5), failed_line("10.77.0.3"))
    ok(site.run_process("update", now=LATER))
    assert relay_map.read_text() == "10.77.0.2\nfd77::2\n"
    assert exim_rcpt_reply(mta_bin, config, "10.77.0.2") == "250 Accepted"
    assert exim_rcpt_reply(mta_bin, config, "fd77::2") == "250 Accepted"
    assert exim_rcpt_reply(mta_bin, config, "10.77.0.3").startswith("550 relay not permitted")
    assert exim_rcpt_reply(mta_bin, config, "fd77::3").startswith("550 relay not permitted")

    ok(site.run_process("flush", "10.77.0.2", now=LATER))
    assert exim_rcpt_reply(mta_bin, config, "10.77.0.2").startswith("550 relay not permitted")
    assert exim_rcpt_reply(mta_bin, config, "fd77::2") == "250 Accepted"


# -- Sendmail --------------------------------------------------------------------


def sendmail_cf(bin_dir: Path, directory: Path, access_map: Path) -> Path:
    """A sendmail.cf made by m4 from sendmail-cf, with the access_db line of docs/install.md."""
    cf_m4 = bin_dir.parent / "root" / "usr" / "share" / "sendmail" / "cf" / "m4" / "cf.m4"
    mc = directory / "relay.mc"
    mc.write_text(
        "divert(-1)\ndivert(0)dnl\n"
        f"include(`{cf_m4}')dnl\n"
        "OSTYPE(`linux')dnl\n"
        # Only because the test lives under /tmp, which everyone may write.
        "define(`confDONT_BLAME_SENDMAIL', `MapInUnsafeDirPath')dnl\n"
        f"FEATURE(`access_db', `hash -T<TMPF> -o {access_map}')dnl\n"
        "MAILER(`local')dnl\nMAILER(`smtp')dnl\n"
    )
    cf = directory / "sendmail.cf"
    with cf.open("w") as output:
        subprocess.run([bin_dir / "m4", str(mc)], stdout=output, check=True, timeout=30)
    return cf


def sendmail_rcpt_verdict(bin_dir: Path, cf: Path, client: str) -> str:
    """What sendmail's check_rcpt ruleset returns for an outside recipient from `client`."""
    macro = f"IPv6:{client}" if ":" in client else client  # as sendmail sets ${client_addr}
    # Sendmail qualifies its host name before reading the cf, over DNS, and
    # sleeps 60s when it cannot. A fully qualified name in a UTS namespace
    # of its own, and no network at all, keep it to this machine and quick.
    hermetic = ["unshare", "--uts", "--net", "sh", "-c", 'hostname mail.test.invalid && exec "$@"', "sh"]
    test = subprocess.run(
        [*hermetic, str(bin_dir / "sendmail"), "-C", str(cf), "-bt"],
        input=f".D{{client_addr}}{macro}\n.D{{client_name}}client.invalid\ncheck_rcpt <b@outside.example>\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    verdicts = [line for line in test.stdout.splitlines() if line.startswith("check_rcpt ")]
    assert len(verdicts) == 1, test.stdout + test.stderr
    return verdicts[0].split("returns:", 1)[1].strip()


DENIED = '$# error $@ 5 . 7 . 1 $: "550 Relaying denied"'


def access_entries(bin_dir: Path, access_map: Path) -> list[str]:
    """The access db's content, read back by makemap itself."""
    dump = subprocess.run(
        [bin_dir / "makemap", "-u", "hash", str(access_map)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return sorted(dump.stdout.splitlines())


def test_sendmail_access_db_is_built_by_makemap_and_read_back(mta_bin: Path, site_dir: Path) -> None:
    site = site_with_maps(site_dir, 'mta = "sendmail"\npath = "maps/relay-sendmail"')
    access_map = site.map_dir / "relay-sendmail"
    env = with_path(mta_bin)

    ok(site.run_process("update", env=env))
    assert sorted(site.map_files()) == ["relay-sendmail", "relay-sendmail.db"]
    assert access_entries(mta_bin, access_map) == []

    site.append_log(login_line("10.77.0.2"), login_line("FD77::2", second=5))
    ok(site.run_process("update", now=LATER, env=env))
    assert access_map.read_text() == "Connect:10.77.0.2 RELAY\nConnect:IPv6:fd77::2 RELAY\n"
    assert access_entries(mta_bin, access_map) == ["connect:10.77.0.2\tRELAY", "connect:ipv6:fd77::2\tRELAY"]
    query = [mta_bin / "editmap", "-q", "hash", str(access_map)]
    found = subprocess.run([*query, "Connect:IPv6:fd77::2"], capture_output=True, text=True, check=False)
    assert (found.returncode, found.stdout) == (0, "RELAY\n")
    absent = subprocess.run([*query, "Connect:10.77.0.3"], capture_output=True, text=True, check=False)
    assert (absent.returncode, absent.stdout) == (69, "")
    assert {path.stat().st_mode & 0o777 for path in site.map_dir.iterdir()} == {0o644}


def sendmail_site_with_include(site_dir: Path, entries: str) -> tuple[Site, Path]:
    """A site with one sendmail access map that takes in the site's own `entries` (its include file)."""
    include = site_dir / "access.site"
    include.write_text(entries)
    site = site_with_maps(site_dir, f'mta = "sendmail"\npath = "maps/relay-sendmail"\ninclude = "{include}"')
    return site, include


def test_sendmail_relays_for_leased_addresses_and_the_sites_own_entries(
    mta_bin: Path, site_dir: Path
) -> None:
    site, _ = sendmail_site_with_include(
        site_dir, "# the site's own entries\nConnect:192.0.2.7 RELAY\nConnect:10.77.0.4 REJECT\n"
    )
    access_map = site.map_dir / "relay-sendmail"
    cf = sendmail_cf(mta_bin, site_dir, access_map)
    site.append_log(
        login_line("10.77.0.2"), login_line("fd77::2", second=5), login_line("10.77.0.4", second=6)
    )

    ok(site.run_process("update", env=with_path(mta_bin)))

    assert sendmail_rcpt_verdict(mta_bin, cf, "10.77.0.2") == "RELAY"
    assert sendmail_rcpt_verdict(mta_bin, cf, "fd77::2") == "RELAY"
    assert sendmail_rcpt_verdict(mta_bin, cf, "192.0.2.7") == "RELAY"  # from the include file
    assert sendmail_rcpt_verdict(mta_bin, cf, "10.77.0.3") == DENIED
    assert sendmail_rcpt_verdict(mta_bin, cf, "fd77::3") == DENIED
    assert sendmail_rcpt_verdict(mta_bin, cf, "10.77.0.4") == DENIED  # the site's REJECT wins

    ok(site.run_process("flush", "--all", now=LATER, env=with_path(mta_bin)))
    assert sendmail_rcpt_verdict(mta_bin, cf, "10.77.0.2") == DENIED
    assert sendmail_rcpt_verdict(mta_bin, cf, "192.0.2.7") == "RELAY"


def test_a_failing_makemap_leaves_the_old_map_and_exits_69_with_its_message(
    mta_bin: Path, site_dir: Path
) -> None:
    site, include = sendmail_site_with_include(site_dir, "Connect:192.0.2.7 RELAY\n")
    env = with_path(mta_bin)
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update", env=env))
    before = site.map_files()
    # A real makemap failure: the site's file lists a key twice.
    include.write_text("Connect:192.0.2.7 RELAY\nconnect:192.0.2.7 REJECT\n")

    result = site.run_process("update", now=LATER, env=env)

    assert result.returncode == 69
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"exactcron: makemap for {site.map_dir / 'relay-sendmail'} failed: ")
    assert "duplicate key" in result.stderr
    assert site.map_files() == before  # untouched, and no temporary file left


def test_a_long_running_sendmail_sees_the_replaced_access_db(mta_bin: Path, site_dir: Path) -> None:
    """sendmail reopens a map only when the mtime of the file it holds open grows
    (it never looks at the link count, as Postfix does): the replaced inode is
    marked so that a daemon holding it reopens the new map by name."""
    site = site_with_maps(site_dir, 'mta = "sendmail"\npath = "maps/relay-sendmail"')
    env = with_path(mta_bin)
    ok(site.run_process("update", env=env))
    held = os.open(site.map_dir / "relay-sendmail.db", os.O_RDONLY)  # as the daemon holds it
    try:
        opened_at = os.fstat(held).st_mtime
        site.append_log(login_line("10.77.0.2"))
        ok(site.run_process("update", now=LATER, env=env))
        status = os.fstat(held)
        assert status.st_nlink == 0  # replaced, not rewritten in place
        assert int(status.st_mtime) > int(opened_at)  # sendmail compares whole seconds
    finally:
        os.close(held)
