"""The shared store failing under a run: down, restarted, a transaction killed.

Whatever the fault, `update` exits 75 with one line, advances no checkpoint
(the login it could not store is granted once the database is back), and
still takes the expired leases out of this host's map.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exactcron import faults
from tests.support.pg_cluster import OWNER, Cluster
from tests.support.stores import Host

START = datetime.now(UTC).replace(microsecond=0)
# The fault strikes 15 minutes on: the lease of a login 20 minutes before START has expired.
LATER = (START + timedelta(minutes=15)).isoformat()


def strike_at(monkeypatch: pytest.MonkeyPatch, point: str, fault: Callable[[], None]) -> None:
    """Run `fault` the first time the run reaches `point`."""
    real = faults.point
    struck: list[str] = []

    def point_with_fault(name: str) -> None:
        if name == point and not struck:
            struck.append(name)
            fault()
        real(name)

    monkeypatch.setattr(faults, "point", point_with_fault)


FAULTS = {
    # name: (where in the run, what happens there, what brings the database back)
    "down before the run": ("", lambda cluster: cluster.stop(), lambda cluster: cluster.start()),
    "down after the first commit": (
        "store:committed",
        lambda cluster: cluster.stop(),
        lambda cluster: cluster.start(),
    ),
    "restarted after the first commit": (
        "store:committed",
        lambda cluster: cluster.restart(),
        lambda _: None,
    ),
    "transaction killed": ("store:writing", lambda cluster: cluster.terminate(OWNER), lambda _: None),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_store_fault_exits_75_loses_no_login_and_leaves_no_expired_relay(
    tmp_path: Path, postgres: Cluster, schema: str, fault: str
) -> None:
    point, strike, recover = FAULTS[fault]
    host = Host(tmp_path, postgres.store(schema))
    host.login_at("192.0.2.10", START - timedelta(minutes=20))  # expires at START + 10 min
    host.login_at("192.0.2.11", START - timedelta(minutes=5))  # expires at START + 25 min
    assert host.invoke("update", now=START.isoformat()).exit_code == 0
    assert host.map.read_text() == "192.0.2.10\n192.0.2.11\n"
    before = host.checkpoints()

    host.login_at("192.0.2.12", START + timedelta(minutes=14))
    try:
        with pytest.MonkeyPatch.context() as patch:
            if point:
                strike_at(patch, point, lambda: strike(postgres))
            else:
                strike(postgres)
            failed = host.invoke("update", now=LATER)
    finally:
        recover(postgres)
        postgres.ensure_running()
    assert failed.exit_code == 75, failed.output
    assert failed.output.startswith("exactcron: lease store postgresql://")
    assert len(failed.output.splitlines()) == 1
    assert host.checkpoints() == before
    # Expired since: gone from the map. Not yet stored: not in it either.
    assert host.map.read_text() == "192.0.2.11\n"

    recovered = host.invoke("update", now=LATER)
    assert recovered.exit_code == 0, recovered.output
    assert host.map.read_text() == "192.0.2.11\n192.0.2.12\n"
    assert host.checkpoints() != before


def test_a_quiet_run_with_the_store_down_still_drops_expired_leases(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    host = Host(tmp_path, postgres.store(schema))
    host.login_at("192.0.2.10", START - timedelta(minutes=20))
    host.login_at("192.0.2.11", START - timedelta(minutes=5))
    assert host.invoke("update", now=START.isoformat()).exit_code == 0
    postgres.stop()
    try:
        failed = host.invoke("update", now=LATER)
        shown = host.invoke("show", now=LATER)
    finally:
        postgres.start()
    assert failed.exit_code == 75
    assert host.map.read_text() == "192.0.2.11\n"
    assert shown.exit_code == 75
