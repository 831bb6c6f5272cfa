"""Kill `update` at every named write step; the next clean run must lose nothing.

Each point in the run (found by tracing a clean run, so new points are
covered without editing this file) is tried with SIGKILL, then one clean
`update` runs. After each: the leases equal those of a run that was never
killed, every map equals the leases, and no temporary file is left behind.

And what the MTA would see: after a kill at every point of an `update` and
of a `flush`, followed by a `flush`, an `add` or a run after every lease has
expired, each map's database (queried with postmap -q, Sendmail's editmap -q,
and Exim's file) holds exactly the addresses `show` lists.
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
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.lines import dovecot_login
from tests.support.maps import postmap_query
from tests.support.pg_cluster import Cluster
from tests.support.site import write_site_config
from tests.support.tools import require_tool

FIRST = "2026-11-25T18:00:00+00:00"
SECOND = "2026-11-25T18:01:00+00:00"


def kill_point_site(root: Path, store: str = "", sendmail: bool = False, qmail_courier: bool = False) -> Path:
    """A site; with `store` (a [store] table), its leases live in PostgreSQL.
    With `qmail_courier`, also a qmail map and a Courier map (whose esmtpd is
    `root/courier/esmtpd`, for COURIER_SYSCONFDIR)."""
    root.mkdir()
    root.chmod(0o755)
    state = root / "state"
    maps = f'[[map]]\nmta = "exim"\npath = "{state / "relay-exim"}"\n'
    if sendmail:
        maps += f'[[map]]\nmta = "sendmail"\npath = "{state / "relay-sendmail"}"\n'
    if qmail_courier:
        access = state / "smtpaccess"
        access.mkdir(parents=True)
        (root / "courier").mkdir()
        (root / "courier" / "esmtpd").write_text(f"ACCESSFILE={access}\n")
        maps += f'[[map]]\nmta = "qmail"\npath = "{state / "relay-qmail"}"\n'
        maps += f'[[map]]\nmta = "courier"\npath = "{access / "relay-courier"}"\n'
    config = write_site_config(root, state, maps + store)
    with (root / "mail.log").open("w") as log:
        log.write(dovecot_login("192.0.2.10", "alice", "2026-11-25T17:40:00+00:00") + "\n")
        log.write(dovecot_login("192.0.2.11", "bob", "2026-11-25T17:45:00+00:00") + "\n")
    return config


def run_update(config: Path, now: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return run(config, now, "update", **environment)


def run(config: Path, now: str, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "--now", now, *arguments]
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


def points_of_second_run(
    tmp_path: Path,
    store: str = "",
    command: tuple[str, ...] = ("update",),
    qmail_courier: bool = False,
    **environment: str,
) -> list[str]:
    root = tmp_path / f"trace-{command[0]}"
    if qmail_courier:
        environment = {**environment, "COURIER_SYSCONFDIR": str(root / "courier")}
    config = kill_point_site(
        root, store, sendmail=bool(environment) and not qmail_courier, qmail_courier=qmail_courier
    )
    assert run_update(config, FIRST, **environment).returncode == 0
    append_second_batch(config)
    trace = tmp_path / f"points-{command[0]}"
    traced = run(config, SECOND, *command, EXACTCRON_TRACE_POINTS=str(trace), **environment)
    assert traced.returncode == 0, traced.stderr
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
    reference = kill_point_site(tmp_path / "reference", store())
    assert run_update(reference, FIRST).returncode == 0
    append_second_batch(reference)
    assert run_update(reference, SECOND).returncode == 0
    expected = leases(reference)
    assert [lease["ip"] for lease in expected] == ["192.0.2.10", "192.0.2.11", "192.0.2.12"]

    points = points_of_second_run(tmp_path, store())
    writes = "store:committed" if store() else "leases.json:renamed"
    assert {writes, "update:maps-written", "checkpoints.json:synced"} <= set(points)
    for number, point in enumerate(points):
        config = kill_point_site(tmp_path / f"kill-{number}", store())
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
    config = kill_point_site(tmp_path / "site")
    assert run_update(config, FIRST).returncode == 0
    append_second_batch(config)
    assert run_update(config, SECOND, EXACTCRON_KILL_AT=point).returncode == -9
    relay = config.parent / "state" / "relay"
    lookup = postmap_query(relay, "192.0.2.11")
    assert lookup.stdout == "OK\n"


CANDIDATES = ["192.0.2.10", "192.0.2.11", "192.0.2.12", "198.51.100.1"]
FOLLOW_UPS = {
    "flush": (("flush", "192.0.2.12"), SECOND),
    "add": (("add", "198.51.100.1"), SECOND),
    "expiry": (("update",), "2026-11-25T19:00:00+00:00"),
}


def shown(config: Path, now: str) -> set[str]:
    result = run(config, now, "show", "--json")
    assert result.returncode == 0, result.stderr
    return {lease["ip"] for lease in json.loads(result.stdout)["leases"]}


def in_databases(config: Path, bin_dir: Path) -> dict[str, set[str]]:
    """The candidate addresses each map's database answers for, as the MTA would look them up."""
    state = config.parent / "state"
    require_tool("postmap")
    found: dict[str, set[str]] = {"postfix": set(), "sendmail": set(), "exim": set()}
    for address in CANDIDATES:
        lookup = postmap_query(state / "relay", address)
        assert lookup.returncode in (0, 1), lookup.stderr
        if lookup.stdout == "OK\n":
            found["postfix"].add(address)
        query = [str(bin_dir / "editmap"), "-q", "hash", str(state / "relay-sendmail"), f"Connect:{address}"]
        access = subprocess.run(query, capture_output=True, text=True)
        assert access.returncode in (0, 69), access.stderr
        if access.stdout == "RELAY\n":
            found["sendmail"].add(address)
    # Exim reads the file itself on every use.
    found["exim"] = set((state / "relay-exim").read_text().split()) & set(CANDIDATES)
    return found


@pytest.mark.parametrize("follow_up", FOLLOW_UPS)
@pytest.mark.parametrize("killed", ["update", "flush"])
def test_after_a_kill_anywhere_every_database_holds_what_show_lists(
    tmp_path: Path, mta_bin: Path, killed: str, follow_up: str
) -> None:
    require_tool("postmap")
    environment = {"PATH": f"{mta_bin}:{os.environ['PATH']}"}
    command = ("update",) if killed == "update" else ("flush", "192.0.2.11")
    points = points_of_second_run(tmp_path, "", command, **environment)
    assert "relay:renamed.db" in points and "relay-sendmail:renamed.db" in points
    arguments, now = FOLLOW_UPS[follow_up]
    for number, point in enumerate(points):
        config = kill_point_site(tmp_path / f"kill-{number}", sendmail=True)
        assert run_update(config, FIRST, **environment).returncode == 0
        append_second_batch(config)
        killed_run = run(config, SECOND, *command, EXACTCRON_KILL_AT=point, **environment)
        assert killed_run.returncode == -9, f"{point}: not reached ({killed_run.stderr})"
        after = run(config, now, *arguments, **environment)
        assert after.returncode == 0, f"after {point}: {after.stderr}"
        leased = shown(config, now)
        if follow_up == "flush":
            assert "192.0.2.12" not in leased
        if follow_up == "add":
            assert "198.51.100.1" in leased
        if follow_up == "expiry":
            assert leased == set()
        databases = in_databases(config, mta_bin)
        assert databases == {"postfix": leased, "sendmail": leased, "exim": leased}, (
            f"{follow_up} after a kill of {killed} at {point}"
        )


def test_a_default_type_map_killed_between_its_renames_forgets_no_revocation(tmp_path: Path) -> None:
    """The map's type left to Postfix's default_database_type: a database renamed
    in without its text is still told apart from one in step with it."""
    require_tool("postmap")
    config = kill_point_site(tmp_path / "site")
    config.write_text(config.read_text().replace('type = "hash"\n', ""))
    assert run_update(config, FIRST).returncode == 0
    killed = run(config, SECOND, "add", "198.51.100.1", EXACTCRON_KILL_AT="relay:renamed.db")
    assert killed.returncode == -9, killed.stderr
    flushed = run(config, SECOND, "flush", "198.51.100.1")
    assert flushed.returncode == 0, flushed.stderr
    relay = config.parent / "state" / "relay"
    lookup = postmap_query(relay, "198.51.100.1")
    assert (lookup.returncode, lookup.stdout) == (1, "")


def qmail_courier_relays(config: Path) -> dict[str, set[str]]:
    """The candidates tcpserver -x (as tcprulescheck) and couriertcpd (smtpaccess.dat) let relay."""
    state = config.parent / "state"
    found: dict[str, set[str]] = {"qmail": set(), "courier": set()}
    for address in CANDIDATES:
        checked = subprocess.run(
            [require_tool("tcprulescheck"), str(state / "relay-qmail.cdb")],
            env={**os.environ, "TCPREMOTEIP": address},
            capture_output=True,
            text=True,
            check=True,
        )
        if "RELAYCLIENT=" in checked.stdout:
            found["qmail"].add(address)
    script = 'tie %h, "GDBM_File", $ARGV[0], &GDBM_READER, 0 or die "$!"; print "$_\\n" for keys %h'
    dumped = subprocess.run(
        ["perl", "-MGDBM_File", "-e", script, str(state / "smtpaccess.dat")],
        capture_output=True,
        text=True,
        check=True,
    )
    found["courier"] = set(dumped.stdout.split()) & set(CANDIDATES)
    return found


@pytest.mark.parametrize("killed", ["update", "flush"])
def test_qmail_and_courier_after_a_kill_anywhere_hold_what_show_lists(
    tmp_path: Path, courier_bin: Path, killed: str
) -> None:
    require_tool("postmap")
    require_tool("tcprules")
    path = {"PATH": f"{courier_bin}:{os.environ['PATH']}"}
    command = ("update",) if killed == "update" else ("flush", "192.0.2.11")
    points = points_of_second_run(tmp_path, "", command, qmail_courier=True, **path)
    assert {"relay-qmail:renamed.cdb", "relay-courier:renamed-text", "relay-courier:makesmtpaccess"} <= set(
        points
    )
    for number, point in enumerate(points):
        root = tmp_path / f"kill-{number}"
        environment = {**path, "COURIER_SYSCONFDIR": str(root / "courier")}
        config = kill_point_site(root, qmail_courier=True)
        assert run_update(config, FIRST, **environment).returncode == 0
        append_second_batch(config)
        killed_run = run(config, SECOND, *command, EXACTCRON_KILL_AT=point, **environment)
        assert killed_run.returncode == -9, f"{point}: not reached ({killed_run.stderr})"
        after = run(config, SECOND, "flush", "192.0.2.12", **environment)
        assert after.returncode == 0, f"after {point}: {after.stderr}"
        leased = shown(config, SECOND)
        assert "192.0.2.12" not in leased
        assert qmail_courier_relays(config) == {"qmail": leased, "courier": leased}, (
            f"flush after a kill of {killed} at {point}"
        )


@settings(max_examples=100, deadline=None)
@given(
    names=st.lists(
        st.sampled_from(["leases.json", "relay", "relay.db", "a.b", "checkpoints.json"]), min_size=1
    ),
    found=st.lists(
        st.from_regex(
            r"\.(leases\.json|relay|relay\.db|a\.b|a|x)(\.[A-Za-z0-9_.]{0,10})?(\.tmp(\.[a-z]{1,3})?)?",
            fullmatch=True,
        ),
        max_size=8,
    ),
)
def test_the_lock_removes_exactly_the_temporary_files_of_the_names_it_is_given(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], found: list[str]
) -> None:
    """A file is a leftover of NAME when it is `.NAME.XXXXXXXX.tmp[.EXT]`, whichever names are cleared at once."""
    import re

    from exactcron.atomic import remove_leftovers

    directory = tmp_path_factory.mktemp("leftovers")
    for name in {*found, *names}:
        (directory / name).write_text("")
    expected = {
        name
        for name in found
        if any(
            re.fullmatch(rf"\.{re.escape(each)}\.[A-Za-z0-9_]{{8}}\.tmp(?:\.[a-z]+)?", name) for each in names
        )
    }
    removed = remove_leftovers(directory / names[0], *names[1:])
    assert {path.name for path in removed} == expected
    assert {path.name for path in directory.iterdir()} == {*found, *names} - expected
