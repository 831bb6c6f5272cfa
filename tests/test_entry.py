"""The console entry (entry.py): cron's plain `update` runs as a quiet run
without the command line when it finds nothing to do; everything else is
the click command line's, with the same output and exit code."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from exactcron.entry import plain_update
from tests.support.clock import LATER, NOW
from tests.support.lines import dovecot_login
from tests.support.site import Site, site_with_map

ENTRY = "from exactcron.entry import main; main()"
COMMAND_LINE = "from exactcron.cli import main; main()"


def run(code: str, arguments: Sequence[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a fresh process running `code` (sys.argv[0] is `-c` for both)."""
    environment = {key: value for key, value in os.environ.items() if key != "EXACTCRON_CONFIG"}
    done = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def settled(root: Path, extra: str = "") -> Site:
    """A site in `root` whose next `update` finds nothing to do."""
    root.mkdir()
    site = site_with_map(root, extra=extra)
    site.write_log(dovecot_login("192.0.2.10"))
    for _ in range(2):
        assert run(COMMAND_LINE, ["--config", str(site.config), "--now", NOW, "update"])[0] == 0
    return site


def test_every_other_command_line_reaches_click_with_the_same_output(tmp_path: Path) -> None:
    site = settled(tmp_path / "site")
    config = str(site.config)
    missing = str(site.root / "missing.toml")
    cases = [
        [],
        ["--help"],
        ["-h"],
        ["--version"],
        ["update", "--help"],
        ["--config", config, "update", "-h"],
        ["--config", config, "update", "extra"],
        ["--config", config, "--now", "not a time", "update"],
        ["--config", config, "--now", NOW, "update", "--follow-for", "soon"],
        ["--config", config, "--now", NOW, "update", "--follow", "--follow-for", "1s"],
        ["--config", config, "--bogus", "update"],
        ["--config", config, "update", "--bogus"],
        ["--config", "--now", NOW, "update"],
        ["--config", config, "--config", config, "--now", NOW, "update"],
        ["--config", config, "--now", NOW],
        ["--config", config, "--now", NOW, "updat"],
        ["--config", config, "--now", NOW, "status"],
        ["--config", config, "--now", NOW, "show"],
        ["--config", config, "--now", NOW, "status", "--json"],
        ["--config", missing, "--now", NOW, "update"],
        ["--config", missing, "--now", NOW, "-v", "update"],
        ["update", "--config", config],
    ]
    for arguments in cases:
        assert run(ENTRY, arguments) == run(COMMAND_LINE, arguments), arguments


@pytest.mark.parametrize(
    "arguments",
    [
        ["--now", NOW, "update"],
        ["--now", NOW, "-v", "update"],
        ["-v", "--now=" + NOW, "update"],
        ["--verbose", "--now", NOW, "update"],
    ],
)
def test_a_quiet_update_says_and_records_what_the_command_line_does(
    tmp_path: Path, arguments: list[str]
) -> None:
    metrics = tmp_path / "metrics.prom"
    site = settled(tmp_path / "site", extra=f'metrics_file = "{metrics}"')
    metrics.unlink()
    last_run = site.state / "last-run.json"
    last_run.unlink()
    said = run(ENTRY, ["--config", str(site.config), *arguments])
    recorded = json.loads(last_run.read_text())
    assert metrics.exists()  # written by the quiet run
    assert said == run(COMMAND_LINE, ["--config", str(site.config), *arguments])
    assert said[0] == 0 and said[2] == ""
    assert recorded["outcome"] == "ok" and recorded["time"].startswith("2026-11-25T18:00:00")
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_a_quiet_update_loads_neither_click_nor_the_command_line(tmp_path: Path) -> None:
    site = settled(tmp_path / "site")
    code = (
        "import sys; from exactcron.entry import main; main(); "
        "print(' '.join(m for m in sys.modules if m == 'click' or m.startswith('exactcron.cli')))"
    )
    assert run(code, ["--config", str(site.config), "--now", NOW, "update"]) == (0, "\n", "")


def test_an_update_with_work_runs_as_the_command_line_runs_it(tmp_path: Path) -> None:
    """The run that is not quiet is the command line's: granted, said with -v, recorded."""
    twins = [settled(tmp_path / "a"), settled(tmp_path / "b")]
    for site in twins:
        site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    by_entry = run(ENTRY, ["--config", str(twins[0].config), "--now", LATER, "-v", "update"])
    by_click = run(COMMAND_LINE, ["--config", str(twins[1].config), "--now", LATER, "-v", "update"])
    assert by_entry == (by_click[0], by_click[1].replace(str(twins[1].root), str(twins[0].root)), by_click[2])
    assert "granted 192.0.2.11" in by_entry[1]
    assert twins[0].map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"


def test_broken_checkpoints_are_set_aside_and_said_once(tmp_path: Path) -> None:
    site = settled(tmp_path / "site")
    (site.state / "checkpoints.json").write_text("{ not json")
    code, out, err = run(ENTRY, ["--config", str(site.config), "--now", NOW, "update"])
    assert code == 0 and out == ""
    assert err.count("checkpoints.json is not valid JSON") == 1, err
    assert len(list(site.state.glob("checkpoints.json.corrupt-*"))) == 1
    assert site.map.read_text() == "192.0.2.10 OK\n"


def test_a_held_lock_is_waited_for_as_before(tmp_path: Path) -> None:
    """The quiet try never waits: the full run does, for lock_wait, then exits 75."""
    site = settled(tmp_path / "site", extra='lock_wait = "1s"')
    with open(site.state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, out, err = run(ENTRY, ["--config", str(site.config), "--now", NOW, "update"])
    assert (code, out) == (75, "")
    assert err.startswith("exactcron: another exactcron run has held") and err.count("\n") == 1


def test_a_run_as_another_user_than_the_states_owner_is_the_command_lines(
    tmp_path: Path,
) -> None:
    """Root becomes the state's owner, anyone else is refused: both as the command line does it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the state to another user")
    site = settled(tmp_path / "site")
    os.chown(site.state, 65534, 65534)
    arguments = ["--config", str(site.config), "--now", NOW, "update"]
    assert run(ENTRY, arguments) == run(COMMAND_LINE, arguments)


def test_plain_update_recognises_only_the_plain_forms() -> None:
    assert plain_update(["update"]) is not None
    request = plain_update(["--config", "/c.toml", "--now=" + NOW, "-v", "update"])
    assert request is not None
    assert (request.config, request.now, request.verbose) == ("/c.toml", NOW, True)
    follow = plain_update(["update", "--follow"])
    assert follow is not None and (follow.follow, follow.follow_for) == (True, None)
    for arguments in (["update", "--follow-for", "2s"], ["update", "--follow-for=2s"]):
        follow_for = plain_update(arguments)
        assert follow_for is not None and (follow_for.follow, follow_for.follow_for) == (False, "2s")
    for arguments in (
        [],
        ["update", "update"],
        ["-v", "-v", "update"],
        ["--config", "update"],
        ["--config=", "update"],
        ["--config", "-v", "update"],
        ["update", "--follow", "--follow"],
        ["update", "--follow", "--follow-for", "1s"],
        ["update", "--follow-for"],
        ["update", "--follow-for", "-1s"],
        ["update", "--follow-for", "1s", "x"],
        ["update", "-v"],
        ["status"],
        ["--", "update"],
        ["-vv", "update"],
        ["--conf", "x", "update"],
    ):
        assert plain_update(arguments) is None, arguments


def test_the_console_script_and_python_m_use_the_entry() -> None:
    repository = Path(__file__).resolve().parent.parent
    assert 'exactcron = "exactcron.entry:main"' in (repository / "pyproject.toml").read_text()
    assert "from exactcron.entry import main" in (repository / "exactcron" / "__main__.py").read_text()


def test_an_interrupted_quiet_run_ends_as_click_ends_an_interrupted_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import click

    from exactcron import entry

    def interrupted(_: object) -> bool:
        raise KeyboardInterrupt

    @click.command()
    def command() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(entry, "quiet_update", interrupted)
    monkeypatch.setattr(sys, "argv", ["exactcron", "update"])
    with pytest.raises(SystemExit) as by_entry:
        entry.main()
    said = capsys.readouterr()
    with pytest.raises(SystemExit) as by_click:
        command.main([], prog_name="exactcron")
    assert (by_entry.value.code, said) == (by_click.value.code, capsys.readouterr())
    assert by_entry.value.code == 1 and said.err == "\nAborted!\n"


def test_a_log_file_that_cannot_be_opened_is_said_once(tmp_path: Path) -> None:
    """Whether the run is quiet or not: the quiet try opens log_file only once it knows."""
    site = settled(tmp_path / "site", extra=f'log_file = "{tmp_path / "missing" / "exactcron.log"}"')
    warning = "exactcron: WARNING: cannot open log_file"
    arguments = ["--config", str(site.config), "update"]
    code, out, err = run(ENTRY, [*arguments[:2], "--now", NOW, *arguments[2:]])
    assert (code, out, err.count(warning)) == (0, "", 1), err
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    code, out, err = run(ENTRY, [*arguments[:2], "--now", LATER, *arguments[2:]])
    assert (code, out, err.count(warning)) == (0, "", 1), err
    assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"


def test_a_quiet_run_writes_to_log_file_what_the_command_line_writes(tmp_path: Path) -> None:
    log_file = tmp_path / "exactcron.log"
    site = settled(tmp_path / "site", extra=f'log_file = "{log_file}"')
    arguments = ["--config", str(site.config), "--now", NOW, "update"]
    written = []
    for code in (ENTRY, COMMAND_LINE):
        log_file.unlink()
        assert run(code, arguments) == (0, "", "")
        written.append(re.sub(r"exactcron\[\d+\]", "exactcron[PID]", log_file.read_text()))
    assert written[0] == written[1]
    assert written[0].endswith(
        "INFO: read 0 lines, 0 logins; granted 0, expired 0, 1 lease, 0 maps written\n"
    )


def test_a_quiet_run_writes_its_log_file_line_without_loading_logging(tmp_path: Path) -> None:
    """log_file's line of a quiet run (the shipped configuration has one) costs no `logging`."""
    log_file = tmp_path / "exactcron.log"
    site = settled(tmp_path / "site", extra=f'log_file = "{log_file}"')
    code = "import sys; from exactcron.entry import main; main(); print('logging' in sys.modules)"
    assert run(code, ["--config", str(site.config), "--now", LATER, "update"]) == (0, "False\n", "")
    assert re.fullmatch(
        r"(?s).*\n2026-11-25T18:01:00Z exactcron\[\d+\]: INFO: read 0 lines, 0 logins; "
        r"granted 0, expired 0, 1 lease, 0 maps written\n",
        log_file.read_text(),
    )


def test_a_follow_runs_without_click_and_grants_as_the_command_lines(tmp_path: Path) -> None:
    twins = [settled(tmp_path / "a"), settled(tmp_path / "b")]
    for site in twins:
        site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    code = (
        "import sys; from exactcron.entry import main; main(); "
        "print(' '.join(m for m in sys.modules if m == 'click' or m.startswith('exactcron.cli')))"
    )
    by_entry = run(code, ["--config", str(twins[0].config), "--now", LATER, "update", "--follow-for", "1s"])
    by_click = run(
        COMMAND_LINE, ["--config", str(twins[1].config), "--now", LATER, "update", "--follow-for", "1s"]
    )
    assert by_entry == (0, "\n", "") and by_click == (0, "", "")
    for site in twins:
        assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"
        assert json.loads((site.state / "last-run.json").read_text())["outcome"] == "ok"
