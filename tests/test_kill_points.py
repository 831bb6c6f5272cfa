"""Kill `update` at every named write step; the next clean run must lose nothing.

Each point in the run (found by tracing a clean run, so new points are
covered without editing this file) is tried with SIGKILL, then one clean
`update` runs. After each: the leases equal those of a run that was never
killed, every map equals the leases, and no temporary file is left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import dovecot_login, require_tool, write_site_config
from tests.pg_cluster import Cluster

FIRST = "2026-11-25T18:00:00+00:00"
SECOND = "2026-11-25T18:01:00+00:00"


def make_site(root: Path, store: str = "") -> Path:
    """A site; with `store` (a [store] table), its leases live in PostgreSQL."""
    root.mkdir()
    state = root / "state"
    config = write_site_config(
        root, state, f'[[map]]\nmta = "exim"\npath = "{state / "relay-exim"}"\n{store}'
    )
    with (root / "mail.log").open("w") as log:
        log.write(dovecot_login("192.0.2.10", "alice", "2026-11-25T17:40:00+00:00") + "\n")
        log.write(dovecot_login("192.0.2.11", "bob", "2026-11-25T17:45:00+00:00") + "\n")
    return config


def run_update(config: Path, now: str, **environment: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "--now", now, "update"]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **environment})


def append_second_batch(config: Path) -> None:
    with (config.parent / "mail.log").open("a") as log:
        log.write(dovecot_login("192.0.2.12", "carol", "2026-11-25T18:00:30+00:00") + "\n")
        log.write(dovecot_login("192.0.2.10", "alice", "2026-11-25T18:00:40+00:00") + "\n")


def leases(config: Path) -> list[dict[str, object]]:
    """The leases as `show --json` lists them, at SECOND."""
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "--now", SECOND, "show", "--json"]
    shown = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)["leases"]  # type: ignore[no-any-return]


def points_of_second_run(tmp_path: Path, store: Callable[[], str]) -> list[str]:
    config = make_site(tmp_path / "trace", store())
    assert run_update(config, FIRST).returncode == 0
    append_second_batch(config)
    trace = tmp_path / "points"
    assert run_update(config, SECOND, EXACTCRON_TRACE_POINTS=str(trace)).returncode == 0
    return list(dict.fromkeys(trace.read_text().split()))


@pytest.fixture(params=["file", "postgresql"])
def store(request: pytest.FixtureRequest) -> Callable[[], str]:
    """A new site's [store] table (none: the lease file), one schema per site."""
    if request.param == "file":
        return lambda: ""
    cluster: Cluster = request.getfixturevalue("postgres")
    return lambda: cluster.store(f"k{uuid.uuid4().hex[:12]}")


def test_a_run_killed_at_any_point_loses_nothing(tmp_path: Path, store: Callable[[], str]) -> None:
    require_tool("postmap")
    reference = make_site(tmp_path / "reference", store())
    assert run_update(reference, FIRST).returncode == 0
    append_second_batch(reference)
    assert run_update(reference, SECOND).returncode == 0
    expected = leases(reference)
    assert [lease["ip"] for lease in expected] == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]

    points = points_of_second_run(tmp_path, store)
    writes = "store:committed" if store() else "leases.json:renamed"
    assert {writes, "update:maps-written", "checkpoints.json:synced"} <= set(points)
    for number, point in enumerate(points):
        config = make_site(tmp_path / f"kill-{number}", store())
        assert run_update(config, FIRST).returncode == 0
        append_second_batch(config)
        killed = run_update(config, SECOND, EXACTCRON_KILL_AT=point)
        assert killed.returncode == -9, f"{point}: not reached ({killed.stderr})"
        recovered = run_update(config, SECOND)
        assert recovered.returncode == 0, f"after {point}: {recovered.stderr}"
        assert leases(config) == expected, f"after a kill at {point}"
        state = config.parent / "state"
        addresses = [lease["ip"] for lease in expected]
        assert (state / "relay").read_text() == "".join(f"{a} OK\n" for a in addresses), point
        assert (state / "relay-exim").read_text() == "".join(f"{a}\n" for a in addresses), point
        leftovers = [path.name for path in state.iterdir() if path.name.startswith(".")]
        assert leftovers == [], f"after a kill at {point}"


@pytest.mark.parametrize("point", ["leases.json:synced", "update:maps-written"])
def test_a_killed_run_leaves_the_previous_map_whole(tmp_path: Path, point: str) -> None:
    require_tool("postmap")
    config = make_site(tmp_path / "site")
    assert run_update(config, FIRST).returncode == 0
    append_second_batch(config)
    assert run_update(config, SECOND, EXACTCRON_KILL_AT=point).returncode == -9
    relay = config.parent / "state" / "relay"
    lookup = subprocess.run(
        [require_tool("postmap"), "-q", "192.0.2.11", f"hash:{relay}"], capture_output=True, text=True
    )
    assert lookup.stdout == "OK\n"
