"""Failures of `update`: one line, the documented exit code, and nothing lost."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from exactcron.cli import main
from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.runner import invoke
from tests.support.site import Site


def test_a_failing_postmap_exits_69_and_the_old_map_keeps_serving(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    database = Path(f"{site.map}.db")
    before = (site.map.read_bytes(), database.read_bytes())
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:55:00+00:00"))
    # postmap fails for real when its configuration directory holds no main.cf.
    monkeypatch.setenv("MAIL_CONFIG", str(site.root / "no-postfix-here"))
    result = site.run("update", now="2026-11-25T18:01:00+00:00")
    assert result.exit_code == 69
    assert result.output.startswith(f"exactcron: postmap for {site.map} failed: ")
    assert "main.cf" in result.output
    assert result.output.count("\n") == 1
    assert (site.map.read_bytes(), database.read_bytes()) == before
    assert sorted(path.name for path in site.state.iterdir() if path.name.startswith(".")) == []
    # The checkpoint was not advanced: once postmap works, the login is granted.
    monkeypatch.delenv("MAIL_CONFIG")
    assert site.run("update", now="2026-11-25T18:01:30+00:00").exit_code == 0
    assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"
    status = json.loads((site.state / "last-run.json").read_text())
    assert status["outcome"] == "ok"


def test_a_failed_run_is_recorded_for_status(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    monkeypatch.setenv("MAIL_CONFIG", str(site.root / "no-postfix-here"))
    site.run("update")
    assert (
        f"last run: 2026-11-25T18:00:00+00:00 failed: postmap for {site.map} failed:"
        in site.run("status").output
    )


def test_another_run_holding_the_lock_past_lock_wait_exits_75(make_site: Callable[..., Site]) -> None:
    site = make_site(extra='lock_wait = "1s"')
    site.state.mkdir()
    with FileLock(site.state / "lock"):
        result = site.run("update")
    assert result.exit_code == 75
    assert result.output.startswith("exactcron: another exactcron run has held")
    assert result.output.endswith("for over 1s; this run did nothing\n")


def test_a_broken_lease_file_is_set_aside_and_leases_rebuilt_from_the_log(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    (site.state / "leases.json").write_text('{"schema": 1, "leases": [{"ip": "192.0.')
    result = invoke(main, ["--config", str(site.config), "--now", NOW, "update"])
    assert result.exit_code == 0
    assert "leases.json is not valid JSON; moved it to leases.json.corrupt-" in result.output
    assert [path.name.startswith("leases.json.corrupt-") for path in site.state.glob("leases.json.*")] == [
        True
    ]
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_a_lease_file_of_a_future_schema_is_set_aside(site: Site) -> None:
    site.run("update")
    (site.state / "leases.json").write_text('{"schema": 99, "leases": []}')
    result = site.run("update")
    assert result.exit_code == 0
    assert "leases.json is of schema 99, not 1; moved it to" in result.output


def test_show_on_a_broken_lease_file_warns_and_leaves_it_for_update(site: Site) -> None:
    site.state.mkdir()
    (site.state / "leases.json").write_text("garbage")
    result = site.run("show")
    assert result.exit_code == 0
    assert result.stdout.endswith("no leases\n")
    assert "the next update sets it aside" in result.output
    assert (site.state / "leases.json").read_text() == "garbage"


def test_a_log_that_cannot_be_read_exits_66_naming_it(site: Site) -> None:
    site.log.unlink()
    site.log.mkdir()  # readable by nobody as a file, root included
    result = site.run("update")
    assert result.exit_code == 66
    assert result.output == f"exactcron: cannot read log {site.log}: Is a directory\n"


def test_a_log_rotated_and_not_yet_recreated_is_not_an_error(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    site.run("update")
    site.log.rename(f"{site.log}.1")
    result = site.run("update", now="2026-11-25T18:01:00+00:00")
    assert (result.exit_code, result.output) == (0, "")
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_a_world_writable_state_directory_is_refused(site: Site) -> None:
    site.state.mkdir()
    site.state.chmod(0o777)
    result = site.run("update")
    assert result.exit_code == 78
    assert result.output == (
        f"exactcron: state_dir {site.state} is writable by every user; refusing it (chmod o-w)\n"
    )
    assert not (site.state / "leases.json").exists()
