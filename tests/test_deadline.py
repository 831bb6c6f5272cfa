"""run_deadline: no run holds the lock longer, and one that reaches it loses nothing.

A run that reaches its deadline stops reading, keeps the checkpoint at what
it read, merges, saves and prunes, rewrites the maps and exits 75; the next
run goes on from there. `EXACTCRON_DEADLINE_AFTER` (faults.py) makes the
deadline pass after a chosen number of blocks, whatever the machine's speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.sources import logfile as source
from exactcron.sources.checkpoint import Checkpoint
from exactcron.sources.logfile import LogReader
from tests.support.lines import login_line
from tests.support.maps import postmap_query
from tests.support.site import site_with_maps

postfix_only = pytest.mark.skipif(shutil.which("postmap") is None, reason="postfix is not installed")


def _noise(count: int) -> str:
    return "".join(
        f"2026-11-25T17:50:10.000000+00:00 vm postfix/smtpd[{index}]: connect from unknown[198.51.100.{index % 250}]\n"
        for index in range(count)
    )


def _lookup(address: str, table: Path) -> str:
    return postmap_query(table, address).stdout.strip()


@postfix_only
def test_a_run_that_reaches_its_deadline_saves_what_it_read_prunes_and_exits_75(tmp_path: Path) -> None:
    relay = tmp_path / "maps" / "relay"
    site = site_with_maps(tmp_path, f'mta = "postfix"\ntype = "hash"\npath = "{relay}"')
    site.config.write_text('run_deadline = "1s"\n' + site.config.read_text())
    # A lease that ends at 17:01: the deadlined run must still drop it.
    assert (
        site.run_process("add", "192.0.2.200", "--for", "1m", now="2026-11-25T17:00:00+00:00").returncode == 0
    )
    assert _lookup("192.0.2.200", relay) == "OK"
    # About 3 MB: three blocks. One login in the first, one in the last.
    site.append_log(login_line("192.0.2.1", "ann", 1), _noise(25000), login_line("192.0.2.2", "bob", 2))
    assert site.log.stat().st_size > 2 * source.CHUNK_BYTES

    # Check 1 is before the source, check 2 after its first block: the deadline passes there.
    stopped = site.run_process("update", env={"EXACTCRON_DEADLINE_AFTER": "2"})
    assert stopped.returncode == 75, stopped.stderr
    lines = stopped.stderr.strip().splitlines()
    assert len(lines) == 1
    prefix = "exactcron: run_deadline of 1s reached after reading "
    suffix = f" bytes of {site.log}; the next run goes on from there"
    assert lines[0].startswith(prefix) and lines[0].endswith(suffix), lines
    read = int(lines[0][len(prefix) : -len(suffix)])
    assert 0 < read <= source.CHUNK_BYTES
    # What was read is granted, what expired is gone, what was not read is not granted yet.
    assert _lookup("192.0.2.1", relay) == "OK"
    assert _lookup("192.0.2.200", relay) == ""
    assert _lookup("192.0.2.2", relay) == ""
    shown = json.loads(site.run_process("show", "--json").stdout)
    assert [lease["ip"] for lease in shown["leases"]] == ["192.0.2.1"]
    # The checkpoint is exactly what was read; status names the failure.
    status = site.run_process("status", "--json")
    assert status.returncode == 1
    document = json.loads(status.stdout)
    assert "run_deadline of 1s reached" in document["last_error"]
    assert document["sources"][0]["checkpoint"]["offset"] == read

    # The next run (deadline not forced) reads the rest and grants the rest.
    finished = site.run_process("update")
    assert finished.returncode == 0, finished.stderr
    assert _lookup("192.0.2.1", relay) == "OK"
    assert _lookup("192.0.2.2", relay) == "OK"
    assert json.loads(site.run_process("status", "--json").stdout)["sources"][0]["checkpoint"]["offset"] == (
        site.log.stat().st_size
    )


@pytest.mark.parametrize("value", ['"soon"', '"-5s"', "true", '"400d"', "[1]"])
def test_a_bad_run_deadline_exits_78_naming_it(tmp_path: Path, value: str) -> None:
    site = site_with_maps(tmp_path, f'mta = "exim"\npath = "{tmp_path / "maps" / "relay"}"')
    site.config.write_text(f"run_deadline = {value}\n" + site.config.read_text())
    result = site.run_process("check")
    assert result.returncode == 78
    assert f"{site.config}: run_deadline: " in result.stderr


@pytest.mark.parametrize(("value", "seconds"), [("0", 50), ('"0s"', 50), ('"2m"', 120), ("5", 5)])
def test_run_deadline_zero_or_absent_is_the_default(tmp_path: Path, value: str, seconds: int) -> None:
    from exactcron.config import load_config

    site = site_with_maps(tmp_path, f'mta = "exim"\npath = "{tmp_path / "maps" / "relay"}"')
    assert load_config(site.config).run_deadline.total_seconds() == 50
    site.config.write_text(f"run_deadline = {value}\n" + site.config.read_text())
    assert load_config(site.config).run_deadline.total_seconds() == seconds


# -- the reader: stopped at any block, nothing lost, nothing read twice ---------------

_line = st.binary(min_size=0, max_size=40).map(lambda data: data.replace(b"\n", b" "))


@settings(max_examples=60, deadline=None)
@given(
    rotated=st.lists(_line, max_size=30),
    live=st.lists(_line, max_size=30),
    blocks_per_run=st.integers(min_value=1, max_value=4),
    compress=st.booleans(),
)
def test_reading_stopped_after_any_block_loses_nothing_and_reads_nothing_twice(
    rotated: list[bytes], live: list[bytes], blocks_per_run: int, compress: bool
) -> None:
    # Each line unique, so that a line read twice or lost shows.
    rotated = [b"r%d %s" % (index, line) for index, line in enumerate(rotated)]
    live = [b"l%d %s" % (index, line) for index, line in enumerate(live)]
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        patch.setattr(source, "CHUNK_BYTES", 64)  # many small blocks
        log = Path(directory) / "mail.log"
        old = Path(directory) / "mail.log.1"
        old.write_bytes(b"".join(line + b"\n" for line in rotated))
        if compress:
            subprocess.run(["gzip", str(old)], check=True)
        log.write_bytes(b"".join(line + b"\n" for line in live))
        read: list[bytes] = []
        checkpoint: Checkpoint | None = None
        for _run in range(10000):
            reader = LogReader(log, checkpoint)
            count = 0

            def stop() -> bool:
                nonlocal count
                count += 1
                return count >= blocks_per_run

            for block, end in reader.blocks(stop):
                read.extend(block[: end - 1].split(b"\n") if end else [])
            checkpoint = reader.checkpoint
            if not reader.stopped:
                break
        assert read == rotated + live
