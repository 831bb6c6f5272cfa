"""Least privilege: exactcron runs as an unprivileged user, as cron.d/exactcron has it.

The user (here `nobody`) owns the state directory and reads the mail log
through group adm. Without that group the log is unreadable: exit 66,
naming the file. Needs root to switch users (CI runs as root).
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from exactcron.cli import FORGEABLE_WARNING
from tests.support.lines import dovecot_login
from tests.support.maps import postmap_query
from tests.support.tools import require_tool
from tests.support.users import SYSTEM_PYTHON, nobody_site, run_as, run_as_nobody


@pytest.fixture
def site() -> Iterator[Path]:
    with nobody_site("exactcron-privilege-") as root:
        yield root


def update_as_nobody(site: Path, *groups: str) -> subprocess.CompletedProcess[str]:
    return run_as_nobody(site, "update", groups=groups)


def test_without_the_adm_group_the_log_is_unreadable_and_named(site: Path) -> None:
    require_tool("postmap")
    result = update_as_nobody(site)
    assert result.returncode == 66
    assert result.stderr == f"exactcron: cannot read log {site / 'mail.log'}: permission denied\n"


def test_as_a_member_of_adm_it_grants_and_writes_a_map_only_it_can_change(site: Path) -> None:
    require_tool("postmap")
    result = update_as_nobody(site, "adm")
    assert (result.returncode, result.stderr) == (0, "")
    relay = site / "state" / "relay"
    assert relay.read_text() == "192.0.2.10 OK\n"
    nobody = pwd.getpwnam("nobody").pw_uid
    for path in (relay, Path(f"{relay}.db")):
        status = path.stat()
        assert status.st_uid == nobody
        assert status.st_mode & 0o777 == 0o644  # the MTA reads it; no one else writes it
    leases = (site / "state" / "leases.json").stat()
    assert leases.st_mode & 0o777 == 0o640


def test_check_says_the_cron_user_cannot_read_the_log_without_adm(site: Path) -> None:
    require_tool("postmap")
    result = run_as_nobody(site, "check")
    assert (result.returncode, result.stdout, result.stderr) == (
        66,
        "",
        f"exactcron: as user nobody: cannot read log {site / 'mail.log'}\n",
    )
    granted = run_as_nobody(site, "check", groups=("adm",))
    assert (granted.returncode, granted.stdout, granted.stderr) == (
        0,
        f"{site / 'exactcron.toml'}: OK (1 sources)\nwarning: {site / 'mail.log'}: {FORGEABLE_WARNING}\n",
        "",
    )


def test_check_names_every_right_and_tool_the_cron_user_lacks(site: Path) -> None:
    require_tool("postmap")
    maps = site / "maps"
    maps.mkdir(mode=0o755)  # root's: the cron user cannot write there
    (site / "state").chmod(0o555)
    os.chown(site / "state", 0, 0)
    config = site / "exactcron.toml"
    config.write_text(
        config.read_text()
        + f'[[map]]\nmta = "sendmail"\npath = "{maps / "access"}"\n'
        + f'[[source]]\npath = "{site / "missing.log"}"\nserver = "dovecot"\n'
    )
    result = run_as_nobody(site, "check", groups=("adm",), path="/usr/bin:/bin")
    assert result.returncode == 66
    assert result.stdout == ""
    assert result.stderr == (
        f"exactcron: as user nobody: log {site / 'missing.log'} does not exist\n"
        f"exactcron: as user nobody: state_dir: cannot write in {site / 'state'}\n"
        "exactcron: as user nobody: postmap not found on PATH (/usr/bin:/bin): "
        f'[[map]] 1 (mta = "postfix", {site / "state" / "relay"}) needs Postfix\'s postconf and postmap; '
        f'install postfix, or set type = "texthash" (no postmap) or another mta in {config}\n'
        f"exactcron: as user nobody: the directory of map {maps / 'access'}: cannot write in {maps}\n"
        "exactcron: as user nobody: makemap not found on PATH (/usr/bin:/bin): "
        f'[[map]] 2 (mta = "sendmail", {maps / "access"}) needs sendmail\'s makemap; '
        f"install sendmail-bin, or set another mta in {config}\n"
    )


def test_check_run_as_root_tests_the_rights_of_the_owner_of_state_dir(site: Path) -> None:
    require_tool("postmap")
    command = [SYSTEM_PYTHON, "-m", "exactcron", "--config", str(site / "exactcron.toml"), "check"]
    environment = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(site / "lib")}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/")
    # nobody is in no group that may read the log (it is root:adm 0640).
    assert (result.returncode, result.stdout, result.stderr) == (
        66,
        "",
        f"exactcron: as user nobody: cannot read log {site / 'mail.log'}\n",
    )
    (site / "mail.log").chmod(0o644)
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/")
    assert (result.returncode, result.stderr) == (0, "")


def postfix_answers(relay: Path, address: str) -> bool:
    lookup = postmap_query(relay, address)
    return lookup.stdout == "OK\n"


def test_a_command_run_as_root_runs_as_the_owner_and_leaves_nothing_the_cron_job_cannot_write(
    site: Path,
) -> None:
    require_tool("postmap")
    added = run_as(site, None, "add", "198.51.100.1", "--for", "5m")
    assert (added.returncode, added.stderr) == (0, "")
    nobody = pwd.getpwnam("nobody").pw_uid
    state = site / "state"
    assert {path.stat().st_uid for path in state.iterdir()} == {nobody}
    relay = state / "relay"
    assert postfix_answers(relay, "198.51.100.1")
    # The cron job, an hour later: it can write everything, and the lease is gone.
    later = run_as(site, "nobody", "update", now="2026-11-25T19:00:00+00:00")
    assert (later.returncode, later.stderr) == (0, "")
    assert not postfix_answers(relay, "198.51.100.1")
    for command in (["update"], ["render"], ["flush", "--all"]):
        assert run_as(site, None, *command).returncode == 0
    assert {path.stat().st_uid for path in state.iterdir()} == {nobody}


def test_state_files_an_earlier_root_run_left_are_handed_to_the_owner(site: Path) -> None:
    require_tool("postmap")
    state = site / "state"
    (state / "leases.json").write_text('{"schema": 1, "leases": [], "flushed": {}, "flushed_all": null}\n')
    (state / "leases.json").chmod(0o600)  # as 0.1 left it when run as root
    assert run_as(site, None, "render").returncode == 0
    result = run_as(site, "nobody", "update")
    assert (result.returncode, result.stderr) == (0, "")


def test_a_root_file_hard_linked_into_the_state_directory_is_not_handed_over(site: Path) -> None:
    """The owner of state_dir could link any root file there; root must not give it away."""
    state = site / "state"
    secret = site / "root-secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    os.link(secret, state / "leases.json.bak")
    assert run_as(site, None, "render").returncode == 0
    assert secret.stat().st_uid == 0


def test_any_other_user_is_refused_with_77_naming_the_owner(site: Path) -> None:
    for command in (["update"], ["add", "198.51.100.1"], ["flush", "--all"], ["render"]):
        result = run_as(site, "daemon", *command)
        assert result.returncode == 77, command
        assert result.stderr == (
            f"exactcron: {site / 'state'} belongs to nobody; run this as nobody "
            "(runuser -u nobody -- exactcron ...) or as root\n"
        )
    assert list((site / "state").iterdir()) == []


def test_a_log_directory_that_cannot_be_listed_never_makes_a_run_quiet(site: Path) -> None:
    require_tool("postmap")
    logs = site / "logs"
    logs.mkdir(mode=0o711)  # the cron user may open the log, not list its directory
    log = logs / "mail.log"
    (site / "mail.log").rename(log)
    config = site / "exactcron.toml"
    config.write_text(config.read_text().replace(str(site / "mail.log"), str(log)))
    first = run_as(site, "nobody", "update")
    assert (first.returncode, first.stderr) == (0, "")
    with log.open("a") as stream:
        stream.write(dovecot_login("192.0.2.11", "bob", "2026-11-25T18:00:30+00:00") + "\n")
    second = run_as(site, "nobody", "update", now="2026-11-25T18:01:00+00:00")
    assert (second.returncode, second.stderr) == (0, "")
    assert (site / "state" / "relay").read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"
