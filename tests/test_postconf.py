"""postconf, a process of its own, is asked for the default map type only when a map is built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.lines import dovecot_login
from tests.support.site import Site
from tests.support.tools import require_tool


@pytest.fixture
def postconf_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that gets a line each time `postconf` runs (the real one, found first on PATH)."""
    real = require_tool("postconf")
    calls = tmp_path / "postconf-calls"
    calls.touch()
    spy = tmp_path / "bin" / "postconf"
    spy.parent.mkdir()
    spy.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return calls


def test_postconf_runs_only_when_a_map_without_type_is_built(site: Site, postconf_calls: Path) -> None:
    site.config.write_text(site.config.read_text().replace('type = "hash"\n', ""))
    site.write_log(dovecot_login("192.0.2.10"))
    assert site.run("update").exit_code == 0
    assert postconf_calls.read_text().splitlines() == ["-h default_database_type"]
    # New log lines but the same leases: a full run that writes no map.
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T17:50:20+00:00"))
    assert site.run("update", now="2026-11-25T18:00:30+00:00").exit_code == 0
    assert len(postconf_calls.read_text().splitlines()) == 1
    # A new lease: the map is built again, with postconf's type.
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00"))
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    assert len(postconf_calls.read_text().splitlines()) == 2
    assert Path(f"{site.map}.db").exists()
    assert site.map.read_text() == "192.0.2.10 OK\n192.0.2.11 OK\n"
