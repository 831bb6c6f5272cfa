"""The whole update / show / flush / add / status / render cycle, as an administrator sees it.

Runs the real postmap and reads the map back with the real `postmap -q`.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from exactcron.cli import FORGEABLE_WARNING
from tests.support.clock import NOW
from tests.support.lines import dovecot_failure, dovecot_login
from tests.support.maps import postmap_value
from tests.support.site import Site


def test_first_update_writes_an_empty_map_so_the_mta_never_finds_it_missing(site: Site) -> None:
    result = site.run("update")
    assert (result.exit_code, result.output) == (0, "")
    assert site.map.read_text() == ""
    assert Path(f"{site.map}.db").exists()
    assert postmap_value(site.map, "192.0.2.10") is None


def test_a_successful_login_grants_relay_and_a_failed_one_does_not(site: Site) -> None:
    site.write_log(
        dovecot_login("192.0.2.10"), dovecot_failure("192.0.2.66"), dovecot_login("2001:DB8::0:7", "bob")
    )
    result = site.run("update")
    assert (result.exit_code, result.output) == (0, "")
    assert site.map.read_text() == "192.0.2.10 OK\n2001:db8::7 OK\n"
    assert postmap_value(site.map, "192.0.2.10") == "OK"
    assert postmap_value(site.map, "2001:db8::7") == "OK"
    assert postmap_value(site.map, "192.0.2.66") is None
    shown = site.run("show")
    assert shown.output == (
        "ADDRESS      USER   LAST LOGIN                 EXPIRES\n"
        "192.0.2.10   alice  2026-11-25T17:50:13+00:00  2026-11-25T18:20:13+00:00\n"
        "2001:db8::7  bob    2026-11-25T17:50:13+00:00  2026-11-25T18:20:13+00:00\n"
    )


def test_show_json_has_the_documented_keys(site: Site) -> None:
    site.write_log(dovecot_login("::ffff:192.0.2.10"))
    site.run("update")
    document = json.loads(site.run("show", "--json").output)
    assert document == {
        "leases": [
            {
                "ip": "192.0.2.10",
                "user": "alice",
                "last_login": "2026-11-25T17:50:13+00:00",
                "expires": "2026-11-25T18:20:13+00:00",
                "server": "dovecot",
            }
        ]
    }


def test_a_second_update_with_nothing_new_leaves_every_map_file_untouched(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    files = [site.map, Path(f"{site.map}.db")]
    before = [(path.stat().st_ino, path.stat().st_mtime_ns) for path in files]
    result = site.run("update", now="2026-11-25T18:01:00+00:00")
    assert result.exit_code == 0
    assert [(path.stat().st_ino, path.stat().st_mtime_ns) for path in files] == before


def test_only_new_lines_are_read_on_the_next_run(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    assert site.run("-v", "update").output.startswith(f"{site.log}: 1 new line, 1 login\n")
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    output = site.run("-v", "update").output
    assert output == (f"{site.log}: 1 new line, 1 login\ngranted 192.0.2.11\nwrote {site.map}\n2 leases\n")


def test_an_unterminated_last_line_waits_for_its_end(site: Site) -> None:
    line = dovecot_login("192.0.2.10")
    with site.log.open("a") as stream:
        stream.write(line[:60])
    site.run("update")
    assert site.map.read_text() == ""
    with site.log.open("a") as stream:
        stream.write(line[60:] + "\n")
    site.run("update")
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_the_lease_expires_after_the_timeout(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    result = site.run("-v", "update", now="2026-11-25T18:20:14+00:00")
    assert (
        result.output
        == f"{site.log}: 0 new lines, 0 logins\nexpired 192.0.2.10\nwrote {site.map}\n0 leases\n"
    )
    assert postmap_value(site.map, "192.0.2.10") is None
    assert site.run("show", now="2026-11-25T18:20:14+00:00").output == "no leases\n"


def test_flush_revokes_at_once_and_unread_earlier_logins_never_regrant(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    result = site.run("flush", "192.0.2.10")
    assert (result.exit_code, result.output) == (0, "revoked 192.0.2.10\n")
    assert postmap_value(site.map, "192.0.2.10") is None
    # The same client's earlier login reaches the log late (or is re-read).
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T17:59:59+00:00"))
    site.run("update", now="2026-11-25T18:01:00+00:00")
    assert postmap_value(site.map, "192.0.2.10") is None
    # A login after the flush grants again.
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:02:00+00:00"))
    site.run("update", now="2026-11-25T18:03:00+00:00")
    assert postmap_value(site.map, "192.0.2.10") == "OK"


def test_flush_of_an_address_without_a_lease_says_so(site: Site) -> None:
    site.run("update")
    result = site.run("flush", "192.0.2.99")
    assert result.output == "192.0.2.99 held no lease; logins logged before now will not grant it\n"


def test_flush_all(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"), dovecot_login("192.0.2.11"))
    site.run("update")
    result = site.run("flush", "--all")
    assert result.output == "revoked 192.0.2.10\nrevoked 192.0.2.11\n"
    assert site.map.read_text() == ""


def test_flush_of_something_that_is_not_an_address_is_a_usage_error_and_changes_nothing(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    result = site.run("flush", "192.0.2.10", "mail.example.com")
    assert result.exit_code == 2
    assert "'mail.example.com' is not an IP address" in result.output
    assert postmap_value(site.map, "192.0.2.10") == "OK"
    assert site.run("flush").exit_code == 2


def test_add_grants_by_hand_for_a_duration(site: Site) -> None:
    result = site.run("add", "198.51.100.7", "--for", "2h")
    assert (result.exit_code, result.output) == (0, "added 198.51.100.7 until 2026-11-25T20:00:00+00:00\n")
    assert postmap_value(site.map, "198.51.100.7") == "OK"
    assert site.run("add", "127.0.0.5").exit_code == 2
    assert site.run("add", "198.51.100.8", "--for", "soon").exit_code == 2


def test_render_rebuilds_a_deleted_map(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    site.map.unlink()
    Path(f"{site.map}.db").unlink()
    result = site.run("render")
    assert (result.exit_code, result.output) == (0, f"wrote {site.map}\n")
    assert postmap_value(site.map, "192.0.2.10") == "OK"


def test_status_reports_the_checkpoint_and_the_last_run(site: Site) -> None:
    before = site.run("status")
    assert (before.exit_code, before.output) == (
        1,
        f"source {site.log}\n  trust: {FORGEABLE_WARNING}\n  checkpoint: none (not read yet)\n  unread bytes: 0\n  unreadable lines: 0\nlast run: never\nleases: 0\n"
        "unhealthy\nexactcron: unhealthy: no update has run yet\n",
    )
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    size = site.log.stat().st_size
    document = json.loads(site.run("status", "--json").output)
    (source,) = document["sources"]
    assert source["checkpoint"]["offset"] == size
    assert source["checkpoint"]["inode"] == site.log.stat().st_ino
    assert source["unread_bytes"] == 0
    assert source["unreadable_lines"] == 0
    assert document["last_run"]["time"] == NOW
    assert document["last_run"]["outcome"] == "ok"
    assert document["leases"] == 1


def test_now_without_an_offset_is_a_usage_error(site: Site) -> None:
    result = site.run("show", now="2026-11-25T18:00:00")
    assert result.exit_code == 2
    assert "has no UTC offset" in result.output


def test_check_prints_the_logins_a_log_would_grant(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"), dovecot_failure("192.0.2.66"))
    result = site.run("check", str(site.log))
    assert result.exit_code == 0
    assert "192.0.2.10" in result.output
    assert "192.0.2.66" not in result.output
    assert not site.state.exists()


def test_log_file_records_every_run_every_grant_and_every_error_in_utc(
    make_site: Callable[..., Site],
) -> None:
    site = make_site(extra='log_file = "exactcron.log"')
    site.write_log(dovecot_login("192.0.2.10"))
    assert site.run("update").output == ""
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:04:00+00:00"))
    assert site.run("update", now="2026-11-25T18:05:00+00:00").output == ""
    assert site.run("update", now="2026-11-25T18:40:00+00:00").output == ""
    site.log.unlink()
    site.log.mkdir()  # unreadable as a file
    assert site.run("update", now="2026-11-25T18:41:00+00:00").exit_code == 66
    text = (site.root / "exactcron.log").read_text()
    assert re.sub(r"exactcron\[\d+\]", "exactcron[PID]", text) == (
        f"2026-11-25T18:00:00Z grant 192.0.2.10 user=alice until=2026-11-25T18:20:13Z source={site.log}\n"
        "2026-11-25T18:00:00Z exactcron[PID]: INFO: read 1 line, 1 login; granted 1, expired 0, 1 lease, 1 map written\n"
        f"2026-11-25T18:05:00Z extend 192.0.2.10 user=alice until=2026-11-25T18:34:00Z source={site.log}\n"
        "2026-11-25T18:05:00Z exactcron[PID]: INFO: read 1 line, 1 login; granted 1, expired 0, 1 lease, 0 maps written\n"
        "2026-11-25T18:40:00Z expire 192.0.2.10 user=alice until=2026-11-25T18:34:00Z\n"
        "2026-11-25T18:40:00Z exactcron[PID]: INFO: read 0 lines, 0 logins; granted 0, expired 1, 0 leases, 1 map written\n"
        f"2026-11-25T18:41:00Z exactcron[PID]: ERROR: cannot read log {site.log}: Is a directory\n"
    )
    assert stat.S_IMODE((site.root / "exactcron.log").stat().st_mode) == 0o640


def test_manual_add_and_flush_name_who_ran_them_in_the_audit_trail(
    make_site: Callable[..., Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(extra='log_file = "exactcron.log"')
    monkeypatch.setenv("SUDO_USER", "alice")
    site.run("add", "192.0.2.44", "--for", "2h")
    site.run("flush", "192.0.2.44", "192.0.2.45")
    site.run("add", "192.0.2.46")
    monkeypatch.setenv("SUDO_USER", "bob smith")  # a name that could forge a field is quoted
    site.run("flush", "--all")
    assert (site.root / "exactcron.log").read_text() == (
        "2026-11-25T18:00:00Z add 192.0.2.44 until=2026-11-25T20:00:00Z by=alice\n"
        "2026-11-25T18:00:00Z flush 192.0.2.44 by=alice\n"
        "2026-11-25T18:00:00Z flush 192.0.2.45 by=alice\n"
        "2026-11-25T18:00:00Z add 192.0.2.46 until=2026-11-25T18:30:00Z by=alice\n"
        '2026-11-25T18:00:00Z flush all by="bob smith" revoked=1\n'
        '2026-11-25T18:00:00Z flush 192.0.2.46 by="bob smith"\n'
    )


def test_who_ran_a_manual_command_is_the_login_user_without_sudo(
    make_site: Callable[..., Site], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pwd

    site = make_site(extra='log_file = "exactcron.log"')
    monkeypatch.delenv("SUDO_USER", raising=False)
    try:
        login_uid = int(Path("/proc/self/loginuid").read_text())
    except (OSError, ValueError):
        login_uid = -1
    uid = login_uid if 0 <= login_uid < 4294967295 else os.getuid()
    site.run("add", "192.0.2.44")
    assert (site.root / "exactcron.log").read_text().endswith(f" by={pwd.getpwuid(uid).pw_name}\n")
