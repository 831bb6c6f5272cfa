"""A full or read-only state filesystem: exit 73 with one line, previous state intact.

The test mounts a tiny tmpfs of its own (root only, as in CI).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.lines import dovecot_login
from tests.support.mounts import small_tmpfs
from tests.support.site import write_site_config
from tests.support.tools import require_tool


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "mnt", "1m", "exactcron-test") as mount:
        yield mount


def update(config: Path, now: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "--now", now, "update"]
    return subprocess.run(command, capture_output=True, text=True)


def snapshot(state: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in state.iterdir() if path.name != "last-run.json"}


def first_run(root: Path, state: Path) -> tuple[Path, dict[str, bytes]]:
    """A site whose state lives on the small filesystem, after one good run; its state then."""
    require_tool("postmap")
    config = write_site_config(root, state)
    (root / "mail.log").write_text(dovecot_login("192.0.2.10") + "\n")
    assert update(config, "2026-11-25T18:00:00+00:00").returncode == 0
    return config, snapshot(state)


def assert_refused(result: subprocess.CompletedProcess[str], reason: str) -> None:
    assert result.returncode == 73, result.stderr
    assert result.stderr.count("\n") == 1
    assert reason in result.stderr


def test_a_full_disk_exits_73_and_keeps_the_previous_state(tmp_path: Path, small_filesystem: Path) -> None:
    state = small_filesystem / "state"
    config, before = first_run(tmp_path, state)
    # Many new leases, and no room left for them.
    with (tmp_path / "mail.log").open("a") as log:
        for index in range(1000):
            log.write(
                dovecot_login(
                    f"10.{index // 250}.{index % 250}.1", f"user{index}", time="2026-11-25T17:59:00+00:00"
                )
                + "\n"
            )
    filler = small_filesystem / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    assert_refused(update(config, "2026-11-25T18:01:00+00:00"), "No space left on device")
    assert snapshot(state) == before
    # Room again: the same lines are read and granted, nothing was lost.
    filler.unlink()
    assert update(config, "2026-11-25T18:01:30+00:00").returncode == 0
    assert len((state / "relay").read_text().splitlines()) == 1001


def test_a_read_only_state_filesystem_exits_73(tmp_path: Path, small_filesystem: Path) -> None:
    state = small_filesystem / "state"
    config, before = first_run(tmp_path, state)
    with (tmp_path / "mail.log").open("a") as log:
        log.write(dovecot_login("192.0.2.11", time="2026-11-25T17:59:00+00:00") + "\n")
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    assert_refused(update(config, "2026-11-25T18:01:00+00:00"), "Read-only file system")
    assert snapshot(state) == before
