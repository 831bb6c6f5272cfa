"""What a command loads: cron starts `exactcron update` every minute, and a run
that finds nothing new spends most of its time starting and importing."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.site import Site

# Runs the command as the console script (and `python -m exactcron`) does, then names every module it loaded.
_LOADED = """
import sys
before = set(sys.modules)
try:
    from exactcron.entry import main
    main()
finally:
    sys.stderr.write("loaded: " + " ".join(sorted(set(sys.modules) - before)) + "\\n")
"""


def loaded(site: Site, *args: str) -> set[str]:
    """The modules a fresh process running `exactcron ARGS` on the site imported."""
    result = subprocess.run(
        [sys.executable, "-c", _LOADED, "--config", str(site.config), "--now", NOW, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    last = result.stderr.splitlines()[-1]
    assert last.startswith("loaded: "), result.stderr
    return set(last.removeprefix("loaded: ").split())


def libraries_load() -> set[str]:
    """What importing click and filelock loads by itself (filelock 3.18 loads
    asyncio, and with it socket, signal and subprocess)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; b = set(sys.modules); import click, filelock; print(' '.join(set(sys.modules) - b))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(result.stdout.split())


def test_an_update_in_utc_loads_no_zone_database_and_a_quiet_one_no_map_builder(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    first = loaded(site, "update")
    assert site.map.read_text() == "192.0.2.10 OK\n"
    assert "exactcron.lock" in first
    assert "zoneinfo" not in first  # the source's timezone is "UTC"
    assert "dateutil" not in first  # nor does a clock change there
    for _ in range(2):
        quiet = loaded(site, "update")  # the second one, at least, finds everything as left
    assert {"exactcron.commands.quiet", "exactcron.lock"} <= quiet
    # The command line and the rules' patterns are for runs that parse options or read lines.
    assert "click" not in quiet
    assert "exactcron.cli" not in quiet
    assert "exactcron.rules.forms" not in quiet
    # A quiet run without log_file says nothing: logging (traceback, threading...) waits for a message.
    assert "logging" not in quiet
    # Nor does it compile a dataclass's methods (exactcron.records makes its records without).
    assert not quiet & {"dataclasses", "inspect"}
    unwanted = {
        "zoneinfo",
        "dateutil",
        "socket",
        "subprocess",
        "signal",
        "exactcron.outputs.maps",
        "exactcron.sources.journal",
    }
    assert not (quiet - libraries_load()) & unwanted
    assert {module for module in quiet if module.startswith("exactcron")} <= QUIET_RUN_MODULES


# Every module of the package a quiet update may load. A split adds names here;
# anything else the quiet run starts to import is a cost every cron minute pays.
QUIET_RUN_MODULES = {
    "exactcron",
    "exactcron.addresses",
    "exactcron.atomic",
    "exactcron.commands",
    "exactcron.commands.common",
    "exactcron.commands.privilege",
    "exactcron.commands.quiet",
    "exactcron.commands.update",
    "exactcron.config",
    "exactcron.console",
    "exactcron.deadline",
    "exactcron.entry",
    "exactcron.errors",
    "exactcron.faults",
    "exactcron.leases",
    "exactcron.guard",  # the lease table holds the guard's state
    "exactcron.lock",
    "exactcron.logs",
    "exactcron.model",
    "exactcron.outputs",
    "exactcron.outputs.audit",
    "exactcron.outputs.health",
    "exactcron.records",
    "exactcron.rules",
    "exactcron.rules.builtin",
    "exactcron.rules.grant",
    "exactcron.rules.rule",
    "exactcron.sources",
    "exactcron.sources.base",
    "exactcron.sources.checkpoint",
    "exactcron.sources.compressed",
    "exactcron.sources.file",
    "exactcron.sources.open",
    "exactcron.sources.rotation",
    "exactcron.sources.trust",
    "exactcron.stores",
    "exactcron.stores.base",
    "exactcron.stores.file",
    "exactcron.stores.local",
    "exactcron.stores.open",
    "exactcron.timestamps",
    "exactcron.users",
}


def test_commands_that_take_no_lock_do_not_load_the_lock(site: Site) -> None:
    site.write_log(dovecot_login("192.0.2.10"))
    assert site.run("update").exit_code == 0
    for command in ("status", "show"):
        modules = loaded(site, command)
        assert "exactcron.commands.status" in modules
        assert "exactcron.lock" not in modules


def test_a_run_takes_each_logs_signature_once(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quiet check's signature of a log is the one the full run records."""
    from exactcron.sources import file, rotation

    taken: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        taken.append(args[0])
        return rotation.files_signature(*args, **kwargs)

    monkeypatch.setattr(file, "files_signature", counted)
    site.write_log(dovecot_login("192.0.2.10"))
    assert site.run("update").exit_code == 0
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    taken.clear()
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0  # the log grew: a full run
    assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"
    assert taken == [site.log]
    taken.clear()
    assert site.run("update", now="2026-11-25T18:02:00+00:00").exit_code == 0  # quiet
    assert taken == [site.log]
