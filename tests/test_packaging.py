"""The files shipped beside the package: the example, cron.d and logrotate.d."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_example_shows_leases(tmp_path: Path) -> None:
    example = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", example, ignore=shutil.ignore_patterns("state"))
    command = [sys.executable, "-m", "exactcron", "--config", str(example / "exactcron.toml")]
    command += ["--now", "2026-11-25T18:00:00+00:00"]
    subprocess.run([*command, "update"], check=True)
    shown = subprocess.run([*command, "show"], check=True, capture_output=True, text=True).stdout
    assert shown == (
        "ADDRESS         USER   LAST LOGIN                 EXPIRES\n"
        "192.0.2.44      alice  2026-11-25T17:52:26+00:00  2026-11-25T18:22:26+00:00\n"
        "2001:db8:4::17  bob    2026-11-25T17:47:55+00:00  2026-11-25T18:17:55+00:00\n"
    )
    assert (example / "state" / "relay").read_text() == "192.0.2.44 OK\n2001:db8:4::17 OK\n"


def test_the_readme_gives_the_example_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash tests/setup-debian && python3 -m pytest -q" in readme
    assert "bash tests/setup-debian && python3 -m pytest -q" in ci
    assert "--config examples/exactcron.toml --now 2026-11-25T18:00:00+00:00 show" in readme


def test_the_cron_file_is_a_valid_system_crontab() -> None:
    path = ROOT / "cron.d" / "exactcron"
    assert "." not in path.name  # cron skips files whose names hold a dot
    environment = {}
    jobs = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if "=" in line.split()[0]:
            name, value = line.split("=", 1)
            environment[name] = value
        else:
            jobs.append(line.split())
    assert "/usr/sbin" in environment["PATH"].split(":")  # postmap, postconf
    # Debian's usual test: on a host booted with systemd, exactcron.timer runs the update.
    assert [" ".join(job[:6]) for job in jobs] == ["* * * * * exactcron"]


def test_the_cron_line_runs_update_only_without_systemd_and_while_installed(tmp_path: Path) -> None:
    """The job's shell command, with the systemd test pointed at a folder of the test's own
    and `exactcron` a stand-in that records its arguments."""
    (job,) = [line for line in (ROOT / "cron.d" / "exactcron").read_text().splitlines() if line[:1] == "*"]
    command = job.split(None, 6)[6]
    runtime = tmp_path / "run-systemd-system"
    probe = command.replace("/run/systemd/system", str(runtime))
    assert probe != command
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "ran"
    stand_in = bin_dir / "exactcron"
    stand_in.write_text(f'#!/bin/sh\necho "$@" >> {ran}\n')
    stand_in.chmod(0o755)

    def cron(path: str) -> None:
        result = subprocess.run(["/bin/sh", "-c", probe], env={"PATH": path}, capture_output=True, text=True)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    cron(f"{bin_dir}:/usr/bin:/bin")
    assert ran.read_text() == "update --follow\n"  # no systemd: cron runs it, following
    runtime.mkdir()
    cron(f"{bin_dir}:/usr/bin:/bin")
    assert ran.read_text() == "update --follow\n"  # systemd: the timer runs it
    runtime.rmdir()
    cron("/usr/bin:/bin")  # removed, not purged: the cron file stays, silent
    assert ran.read_text() == "update --follow\n"


def _unit(name: str) -> dict[str, list[str]]:
    """A shipped systemd unit's settings, `Section.Key` -> its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        assert section, f"{name}: {line!r} is outside any section"  # systemd ignores it
        key, value = line.split("=", 1)
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def _seconds(span: str) -> float:
    """A systemd time span of one unit (`1s`, `100ms`, `5min`) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|min)", span)
    assert match, span
    return int(match.group(1)) * {"ms": 0.001, "s": 1, "min": 60}[match.group(2)]


def test_the_timer_starts_a_following_service_at_every_whole_minute() -> None:
    from exactcron.config import DEFAULT_LOCK_WAIT, DEFAULT_RUN_DEADLINE, parse_duration

    timer, service = _unit("exactcron.timer"), _unit("exactcron.service")
    assert timer["Timer.OnCalendar"] == ["*-*-* *:*:00"]
    # systemd's default accuracy is a minute: the run could start that late.
    (accuracy,) = timer["Timer.AccuracySec"]
    assert _seconds(accuracy) <= 1
    assert service["Service.Type"] == ["oneshot"]
    assert service["Service.ExecStart"] == ["/usr/bin/exactcron update --follow"]
    # A oneshot has no start timeout unless given one, and the timer starts no
    # run while one is active; the timeout must not cut a run short of its own deadlines.
    (timeout,) = service["Service.TimeoutStartSec"]
    longest_run = parse_duration(DEFAULT_LOCK_WAIT) + parse_duration(DEFAULT_RUN_DEADLINE)
    assert _seconds(timeout) >= 2 * longest_run.total_seconds()


def test_the_docs_say_how_to_turn_following_off() -> None:
    cron = (ROOT / "cron.d" / "exactcron").read_text()
    assert "drops --follow" in cron
    install = (ROOT / "docs" / "install.md").read_text()
    assert "ExecStart=\nExecStart=/usr/bin/exactcron update\n" in install
    assert "`systemctl edit exactcron.service`" in install


@pytest.mark.parametrize("page", ["exactcron.8", "exactcron.toml.5"])
def test_the_man_pages_render_without_warnings(page: str) -> None:
    man = require_tool("man")
    result = subprocess.run(
        [man, "--warnings", "-l", str(ROOT / "man" / page)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"},
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stderr) == (0, "")
    name = page.rsplit(".", 1)[0]
    # The NAME line is filled like any other: groff 1.23 (Debian 13) hyphenates
    # its end and widens the spaces before the dash to justify it.
    assert re.search(rf"^NAME\n\s+{re.escape(name)} +\\?- ", result.stdout, re.MULTILINE), result.stdout[:300]


def test_the_package_config_is_the_readme_production_config() -> None:
    readme = (ROOT / "README.md").read_text()
    shipped = (ROOT / "examples" / "system.toml").read_text()
    settings = "\n".join(line for line in shipped.splitlines() if line and not line.startswith("#"))
    assert settings in readme.replace("\n\n", "\n")


def test_the_debian_version_is_the_program_version() -> None:
    from exactcron import __version__

    first = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"exactcron ({__version__}) ")


def test_the_logrotate_file_is_accepted_by_logrotate(tmp_path: Path) -> None:
    logrotate = require_tool("logrotate")
    log = tmp_path / "exactcron.log"
    log.write_text("2026-11-25 18:00:00 exactcron[1]: INFO: read 0 lines\n")
    config = (ROOT / "logrotate.d" / "exactcron").read_text()
    # The shipped file names the production user and path; the test runs as
    # whoever it is, on a file of its own.
    config = config.replace("/var/log/exactcron/exactcron.log", str(log)).replace(
        "exactcron adm", "root root"
    )
    (tmp_path / "logrotate.conf").write_text(config)
    subprocess.run(
        [logrotate, "-f", "-s", str(tmp_path / "status"), str(tmp_path / "logrotate.conf")],
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "exactcron.log.1").exists()
    assert log.exists() and log.stat().st_size == 0
