"""Relay never outlives its lease, whatever fails in a run.

A lease is granted at 18:00 and ends at 18:20:09; at 18:30 the run fails
(an unreadable log, a failing postmap, a configuration typo, a lease file
that cannot be read). The run exits with its error, on one line, and yet
every map that can be written no longer relays for the expired address;
a second, healthy source is still read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.clock import NOW
from tests.support.lines import login_line
from tests.support.maps import postmap_query
from tests.support.site import ok, site_with_maps

EXPIRED = "2026-11-25T18:30:00+00:00"
MAPS = ('mta = "postfix"\npath = "maps/relay"\ntype = "hash"', 'mta = "exim"\npath = "maps/relay-exim"')


def postfix_answers(map_path: Path, address: str) -> bool:
    lookup = postmap_query(map_path, address)
    assert lookup.returncode in (0, 1), lookup.stderr
    return lookup.stdout == "OK\n"


def granted_site(tmp_path: Path):  # type: ignore[no-untyped-def]
    site = site_with_maps(tmp_path, *MAPS)
    site.append_log(login_line("10.77.0.9", second=9))
    ok(site.run_process("update", now=NOW))
    assert postfix_answers(site.map_dir / "relay", "10.77.0.9")
    return site


def assert_closed(site, result, code: int) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert (site.map_dir / "relay-exim").read_text() == ""


def test_an_unreadable_log_still_expires_leases_and_the_other_source_is_read(tmp_path: Path) -> None:
    site = granted_site(tmp_path)
    second = tmp_path / "other.log"
    second.write_text(login_line("10.77.0.20", "bob", second=20).replace("17:50:", "18:29:"))
    site.config.write_text(
        site.config.read_text().replace(
            "[[map]]", f'[[source]]\npath = "{second}"\nserver = "dovecot"\nhosts = ["vm"]\n[[map]]', 1
        )
    )
    site.log.unlink()
    site.log.mkdir()  # open() fails: as unreadable as a log gets for root

    result = site.run_process("update", now=EXPIRED)

    assert result.returncode == 66
    assert result.stderr == f"exactcron: cannot read log {site.log}: Is a directory\n"
    assert not postfix_answers(site.map_dir / "relay", "10.77.0.9")
    assert postfix_answers(site.map_dir / "relay", "10.77.0.20")
    assert (site.map_dir / "relay-exim").read_text() == "10.77.0.20\n"


def test_a_failing_postmap_still_expires_leases_in_the_other_maps(tmp_path: Path) -> None:
    site = granted_site(tmp_path)
    result = site.run_process("update", now=EXPIRED, env={"MAIL_CONFIG": str(tmp_path / "no-postfix-here")})
    assert_closed(site, result, 69)
    assert result.stderr.startswith(f"exactcron: postmap for {site.map_dir / 'relay'} failed:")


def test_a_configuration_typo_still_expires_leases(tmp_path: Path) -> None:
    site = granted_site(tmp_path)
    site.config.write_text(
        site.config.read_text().replace('timeout = "30m"', 'timeout = "30m"\ntiemout = "1h"')
    )
    result = site.run_process("update", now=EXPIRED)
    assert_closed(site, result, 78)
    assert "tiemout: unknown key" in result.stderr
    assert not postfix_answers(site.map_dir / "relay", "10.77.0.9")


def test_a_lease_file_that_cannot_be_read_leaves_no_relay_open(tmp_path: Path) -> None:
    site = granted_site(tmp_path)
    leases = tmp_path / "state" / "leases.json"
    leases.unlink()
    leases.mkdir()
    result = site.run_process("update", now="2026-11-25T18:01:00+00:00")
    assert_closed(site, result, 73)
    assert not postfix_answers(site.map_dir / "relay", "10.77.0.9")
    shutil.rmtree(leases)


def test_a_configuration_that_is_no_longer_toml_still_expires_leases(tmp_path: Path) -> None:
    site = granted_site(tmp_path)
    site.config.write_text(site.config.read_text().replace('timeout = "30m"', 'timeout = "30m'))
    result = site.run_process("update", now=EXPIRED)
    assert_closed(site, result, 78)


def test_the_fail_closed_install_takes_the_first_leases_it_can_read_and_else_none(tmp_path: Path) -> None:
    """fail_closed, the one way out of every failure: each source of leases is a
    fallback for the one before; when none can be read, the map holds no address."""
    from datetime import UTC, datetime, timedelta

    from exactcron.commands.failclosed import fail_closed
    from exactcron.config import MapConfig
    from exactcron.model import Lease
    from exactcron.stores.local import LocalState

    now = datetime(2026, 11, 25, 18, tzinfo=UTC)
    lease = Lease("192.0.2.10", "alice", now, now + timedelta(minutes=30), "dovecot")
    state = LocalState(tmp_path / "state")
    state.ensure_directory()
    relay = MapConfig("exim", tmp_path / "state" / "relay")

    def broken() -> list[Lease]:
        raise OSError("cannot read")

    fail_closed([relay], state, broken, lambda: [lease])
    assert relay.path.read_text() == "192.0.2.10\n"
    fail_closed([relay], state, broken, broken)
    assert relay.path.read_text() == ""
    # A map that cannot be written: logged, never raised over the run's own error.
    fail_closed([MapConfig("exim", tmp_path / "missing" / "relay")], state, lambda: [lease])
