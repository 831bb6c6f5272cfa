"""Postfix maps through the real CLI, read back with the real postmap.

Also what every map shares: created empty on the first run, written only
when its content changes, renamed into place whole, the old map untouched
when a build fails, no temporary file left behind.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from exactcron.outputs.maps import render
from tests.support.clock import LATER
from tests.support.lines import failed_line, login_line
from tests.support.maps import postmap_query
from tests.support.site import ok, site_with_maps

pytestmark = pytest.mark.skipif(shutil.which("postmap") is None, reason="postfix is not installed")

POSTFIX_TYPES = ["hash", "btree", "lmdb", "cdb", "texthash"]
SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb", "texthash": None}


def expected_files(name: str, suffix: str | None) -> list[str]:
    return sorted([name] + ([name + suffix] if suffix else []))


# -- the text, pure ----------------------------------------------------------


def test_render_writes_each_mtas_own_form() -> None:
    addresses = ["10.77.0.2", "fd77::2"]
    assert render("postfix", addresses) == b"10.77.0.2 OK\nfd77::2 OK\n"
    assert render("exim", addresses) == b"10.77.0.2\nfd77::2\n"
    assert render("sendmail", addresses) == b"Connect:10.77.0.2 RELAY\nConnect:IPv6:fd77::2 RELAY\n"
    assert render("postfix", []) == b""


def test_render_sendmail_puts_the_sites_entries_first_and_lets_them_win() -> None:
    include = b"# site\nconnect:10.77.0.4 REJECT\nFrom:spam@example.com REJECT"
    text = render("sendmail", ["10.77.0.2", "10.77.0.4"], include)
    assert text == include + b"\nConnect:10.77.0.2 RELAY\n"


# -- every postfix type, read back by postmap ----------------------------------


@pytest.mark.parametrize("map_type", POSTFIX_TYPES)
def test_each_type_is_found_by_postmap_under_the_key_smtpd_looks_up(tmp_path: Path, map_type: str) -> None:
    site = site_with_maps(tmp_path, f'mta = "postfix"\npath = "maps/relay"\ntype = "{map_type}"')
    site.append_log(
        login_line("10.77.0.2", second=1),
        login_line("FD77:0:0::2", second=2),  # logged uppercase, uncompressed
        login_line("::ffff:10.77.0.5", second=3),  # IPv4-mapped: smtpd sees 10.77.0.5
        failed_line("10.77.0.3"),
    )
    ok(site.run_process("update"))

    relay = site.map_dir / "relay"
    assert relay.read_text() == "10.77.0.2 OK\n10.77.0.5 OK\nfd77::2 OK\n"
    assert sorted(site.map_files()) == expected_files("relay", SUFFIX[map_type])
    for key in ("10.77.0.2", "10.77.0.5", "fd77::2"):
        found = postmap_query(relay, key, map_type)
        assert (found.returncode, found.stdout) == (0, "OK\n"), key
    for absent in ("10.77.0.3", "10.77.0.4", "::ffff:10.77.0.5"):
        missing = postmap_query(relay, absent, map_type)
        assert (missing.returncode, missing.stdout) == (1, ""), absent


def test_without_a_type_the_map_has_postfixs_default_database_type(tmp_path: Path) -> None:
    default = subprocess.run(
        ["postconf", "-h", "default_database_type"], capture_output=True, text=True, check=True
    ).stdout.strip()
    site = site_with_maps(tmp_path, 'mta = "postfix"\npath = "maps/relay"')
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update"))
    assert sorted(site.map_files()) == expected_files("relay", SUFFIX[default])
    assert postmap_query(site.map_dir / "relay", "10.77.0.2", default).stdout == "OK\n"


# -- what every map shares -----------------------------------------------------

ALL_MAPS = (
    'mta = "postfix"\npath = "maps/relay-hash"\ntype = "hash"',
    'mta = "postfix"\npath = "maps/relay-lmdb"\ntype = "lmdb"',
    'mta = "postfix"\npath = "maps/relay-cdb"\ntype = "cdb"',
    'mta = "postfix"\npath = "maps/relay-text"\ntype = "texthash"',
    'mta = "exim"\npath = "maps/relay-exim"',
)
ALL_FILES = [
    "relay-cdb",
    "relay-cdb.cdb",
    "relay-exim",
    "relay-hash",
    "relay-hash.db",
    "relay-lmdb",
    "relay-lmdb.lmdb",
    "relay-text",
]


def test_first_run_with_nothing_leased_creates_every_map_empty(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, *ALL_MAPS)
    result = ok(site.run_process("update"))
    assert (result.stdout, result.stderr) == ("", "")
    assert sorted(site.map_files()) == ALL_FILES
    for name in ("relay-hash", "relay-lmdb", "relay-cdb", "relay-text", "relay-exim"):
        assert (site.map_dir / name).read_bytes() == b""
    assert postmap_query(site.map_dir / "relay-hash", "10.77.0.2", "hash").returncode == 1
    assert postmap_query(site.map_dir / "relay-cdb", "10.77.0.2", "cdb").returncode == 1


def test_an_update_with_nothing_new_touches_no_map_file(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, *ALL_MAPS)
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update"))
    before = site.map_files()

    quiet = ok(site.run_process("-v", "update", now=LATER))
    after = site.map_files()

    assert after == before  # inode, mtime to the nanosecond, content
    assert "wrote" not in quiet.stdout


def test_a_change_replaces_each_file_by_rename_never_in_place(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, *ALL_MAPS)
    ok(site.run_process("update"))
    before = site.map_files()
    site.append_log(login_line("10.77.0.2"))

    result = ok(site.run_process("-v", "update", now=LATER))

    after = site.map_files()
    assert sorted(after) == ALL_FILES
    for name, (inode, _, content) in after.items():
        assert inode != before[name][0], f"{name} was rewritten in place"
        assert content != before[name][2] or name.endswith((".db", ".lmdb", ".cdb")), name
    assert result.stdout.count("wrote ") == len(ALL_MAPS)
    assert postmap_query(site.map_dir / "relay-lmdb", "10.77.0.2", "lmdb").stdout == "OK\n"


def test_flush_rewrites_the_map_before_returning(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, ALL_MAPS[0])
    site.append_log(login_line("10.77.0.2"), login_line("fd77::2", second=5))
    ok(site.run_process("update"))
    ok(site.run_process("flush", "fd77::2"))
    assert postmap_query(site.map_dir / "relay-hash", "fd77::2").returncode == 1
    assert postmap_query(site.map_dir / "relay-hash", "10.77.0.2").stdout == "OK\n"


def test_maps_are_readable_by_all_and_writable_by_their_owner_only(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, *ALL_MAPS)
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update"))
    modes = {path.name: path.stat().st_mode & 0o7777 for path in site.map_dir.iterdir()}
    assert modes == dict.fromkeys(ALL_FILES, 0o644)


def test_a_failing_postmap_leaves_the_old_map_and_exits_69_with_its_message(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, *ALL_MAPS)
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update"))
    before = site.map_files()
    site.append_log(login_line("10.77.0.9", second=9))
    # A real postmap failure: its configuration directory has no main.cf.
    broken = {"MAIL_CONFIG": str(tmp_path / "no-postfix-here")}

    result = site.run_process("update", now=LATER, env=broken)

    assert result.returncode == 69
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        f"exactcron: postmap for {site.map_dir / 'relay-hash'} failed: postmap: fatal:"
    )
    assert "main.cf" in lines[0]
    # The maps postmap builds are untouched, no temporary file is left, and
    # the maps that need no postmap are written all the same.
    written = ("relay-text", "relay-exim")
    assert {name: file for name, file in site.map_files().items() if name not in written} == {
        name: file for name, file in before.items() if name not in written
    }
    assert (site.map_dir / "relay-exim").read_text() == "10.77.0.2\n10.77.0.9\n"

    ok(site.run_process("update", now=LATER))
    assert postmap_query(site.map_dir / "relay-hash", "10.77.0.9", "hash").stdout == "OK\n"
    assert (site.map_dir / "relay-exim").read_text() == "10.77.0.2\n10.77.0.9\n"
    assert sorted(site.map_files()) == ALL_FILES


def test_a_failing_postconf_is_reported_the_same_way(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, 'mta = "postfix"\npath = "maps/relay"')
    result = site.run_process("update", env={"MAIL_CONFIG": str(tmp_path / "no-postfix-here")})
    assert result.returncode == 69
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("exactcron: postconf failed: postconf: fatal:")
    assert list(site.map_dir.iterdir()) == []


def test_without_postfix_check_and_update_say_the_map_needs_it_and_what_to_do(tmp_path: Path) -> None:
    """The shipped configuration's map on a host with no MTA: one line naming the
    [[map]], the package to install, and the setting that needs no Postfix tool."""
    site = site_with_maps(
        tmp_path, 'mta = "exim"\npath = "maps/relay-exim"', 'mta = "postfix"\npath = "maps/relay"'
    )
    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    needs = (
        f'(mta = "postfix", {site.map_dir / "relay"}) needs Postfix\'s postconf and postmap; '
        'install postfix, or set type = "texthash" (no postmap) or another mta'
    )
    checked = site.run_process("check", env={"PATH": str(no_tools)})
    assert checked.returncode == 69
    assert checked.stderr == (
        f"exactcron: as user root: postconf and postmap not found on PATH ({no_tools}): "
        f"[[map]] 2 {needs} in {site.config}\n"
    )
    updated = site.run_process("update", env={"PATH": str(no_tools)})
    assert updated.returncode == 69
    assert updated.stderr == f"exactcron: postconf not found on PATH ({no_tools}): the [[map]] {needs}\n"
    # Fails closed as any failed build: the postfix map is not written, the others are.
    assert sorted(path.name for path in site.map_dir.iterdir()) == ["relay-exim"]


def test_a_map_directory_that_does_not_exist_is_a_configuration_error_naming_the_key(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, 'mta = "exim"\npath = "nowhere/relay-exim"')
    result = site.run_process("update")
    assert result.returncode == 78
    assert result.stderr == (
        f"exactcron: {site.config}: map[0].path: {tmp_path / 'nowhere'} does not exist; "
        "create it (the map's directory)\n"
    )


def test_a_deleted_map_is_recreated_by_the_next_update(tmp_path: Path) -> None:
    site = site_with_maps(tmp_path, ALL_MAPS[2])
    site.append_log(login_line("10.77.0.2"))
    ok(site.run_process("update"))
    (site.map_dir / "relay-cdb.cdb").unlink()
    ok(site.run_process("update", now=LATER))
    assert postmap_query(site.map_dir / "relay-cdb", "10.77.0.2", "cdb").stdout == "OK\n"
