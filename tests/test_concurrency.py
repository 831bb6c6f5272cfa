"""Eight `update` runs at once, with `flush` and `add`, while the log grows.

Every run either works or, past `lock_wait`, exits 75 with one line; no
grant is lost and every flush is respected.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.site import write_site_config
from tests.support.tools import require_tool

FLUSHED = "198.51.100.1"
ADDED = "203.0.113.9"


def exactcron(config: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "--now", NOW, *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )


def test_overlapping_runs_lose_no_grant_and_respect_every_flush(tmp_path: Path) -> None:
    require_tool("postmap")
    log = tmp_path / "mail.log"
    log.touch()
    state = tmp_path / "state"
    config = write_site_config(tmp_path, state, settings='lock_wait = "2s"')
    written: list[str] = []

    def write_logins() -> None:
        for index in range(240):
            address = f"192.0.2.{index % 250 + 1}" if index < 200 else f"2001:db8::{index:x}"
            stamp = f"2026-11-25T17:5{index // 60}:{index % 60:02d}+00:00"
            with log.open("a") as stream:
                stream.write(dovecot_login(address, f"user{index}", stamp) + "\n")
                # The flushed client keeps logging in, always before the flush's time.
                stream.write(dovecot_login(FLUSHED, "gone", stamp) + "\n")
            written.append(address)
            time.sleep(0.004)

    writer = threading.Thread(target=write_logins)
    writer.start()
    outcomes: list[tuple[str, int, str]] = []
    for round_number in range(3):
        runs = [("update", exactcron(config, "update")) for _ in range(8)]
        if round_number == 1:
            runs.append(("flush", exactcron(config, "flush", FLUSHED)))
            runs.append(("add", exactcron(config, "add", ADDED)))
        for name, process in runs:
            _, error = process.communicate(timeout=120)
            outcomes.append((name, process.returncode, error))
    writer.join()
    final = exactcron(config, "update")
    assert final.communicate(timeout=120)[1] == ""

    for name, code, error in outcomes:
        assert code in (0, 75), (name, code, error)
        if code == 75:
            assert error.count("\n") == 1 and "this run did nothing" in error
        else:
            assert error == "", (name, error)
    assert ("flush", 0) in [(name, code) for name, code, _ in outcomes]
    assert ("add", 0) in [(name, code) for name, code, _ in outcomes]
    relay = (state / "relay").read_text().split()
    granted = set(relay[0::2])
    assert granted == set(written) | {ADDED}
    assert FLUSHED not in granted
