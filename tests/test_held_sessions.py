"""`hold_while_connected` and `session_max`, through the command line with the real postmap.

A Dovecot login's lease lasts while its session is open (runs in between
extend it), `timeout` after its end line, never longer than `session_max`
after the login; a flushed or expired lease is never brought back, by an
end line or by a later run; the open sessions survive rotations, killed
runs and hostile state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.maps import postmap_value
from tests.support.pg_cluster import Cluster
from tests.support.site import Site, site_with_map

ADDRESS = "192.0.2.10"
SESSION = "kT3M0DLGQOMKAAAB"
START = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def stamp(minutes: float) -> str:
    return at(minutes).isoformat()


def login(minutes: float, address: str = ADDRESS, session: str = SESSION, user: str = "alice") -> str:
    """A Dovecot 2.3 IMAP login through rsyslog, its mail process 4242."""
    return (
        f"{at(minutes).isoformat(timespec='microseconds')} mail dovecot: imap-login: Login: user=<{user}>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=4242, TLS, session=<{session}>"
    )


def logged_in_24(minutes: float, address: str = ADDRESS, session: str = SESSION) -> str:
    """Dovecot 2.4's form of the same login."""
    return (
        f"{at(minutes).isoformat(timespec='microseconds')} mail dovecot: imap-login: Logged in: user=<alice>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=4242, TLS, session=<{session}>"
    )


def logout(minutes: float, session: str = SESSION, user: str = "alice") -> str:
    """The mail process's last line of the session (LOGOUT)."""
    return (
        f"{at(minutes).isoformat(timespec='microseconds')} mail dovecot: imap({user})<4242><{session}>: "
        "Disconnected: Logged out in=91 out=512 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 "
        "body_count=0 body_bytes=0"
    )


def connection_closed(minutes: float, session: str = SESSION) -> str:
    """The last line of a session the client dropped (no LOGOUT)."""
    return (
        f"{at(minutes).isoformat(timespec='microseconds')} mail dovecot: imap(alice)<4242><{session}>: "
        "Connection closed (IDLE running for 0.001 + waiting input for 1739.539 secs, 2 B in + 10 B out, "
        "state=wait-input) in=120 out=4710 deleted=0 expunged=0 trashed=0"
    )


def held_site(root: Path, session_max: str = "2h", timeout: str = "30m") -> Site:
    site = site_with_map(root, timeout=timeout)
    text = site.config.read_text()
    site.config.write_text(
        text.replace(
            'hosts = ["mail"]\n',
            f'hosts = ["mail"]\nhold_while_connected = true\nsession_max = "{session_max}"\n',
        )
    )
    return site


@pytest.fixture
def held(tmp_path: Path) -> Site:
    return held_site(tmp_path)


def update(site: Site, minutes: float) -> None:
    result = site.run("update", now=stamp(minutes))
    assert result.exit_code == 0, result.output


def expires(site: Site, minutes: float, address: str = ADDRESS) -> datetime | None:
    """When `show` says the address's lease ends, asked at START + minutes; None: no lease."""
    leases = json.loads(site.run("show", "--json", now=stamp(minutes)).output)["leases"]
    found = next((lease["expires"] for lease in leases if lease["ip"] == address), None)
    return None if found is None else datetime.fromisoformat(found)


def relays(site: Site, address: str = ADDRESS) -> bool:
    return postmap_value(site.map, address) == "OK"


def test_a_lease_is_held_while_its_session_is_open(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    for minute in (20, 40, 60):
        update(held, minute)
        assert relays(held)
    # 40 minutes past the login's own end (00:30), the lease ends 30 minutes after the last run.
    assert expires(held, 61) == at(90)


def test_a_session_read_in_its_logins_own_second_is_held_too(held: Site) -> None:
    # As cron runs it: the run reads the login in the second it was written (found end to end).
    held.write_log(login(0))
    update(held, 0)
    update(held, 20)
    update(held, 40)
    assert expires(held, 41) == at(70)
    assert relays(held)


def test_without_the_key_a_session_is_not_held(tmp_path: Path) -> None:
    site = site_with_map(tmp_path)
    site.write_log(login(0))
    update(site, 1)
    update(site, 20)
    update(site, 40)
    assert not relays(site)


def test_the_disconnect_ends_the_hold_timeout_after_it(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    update(held, 20)
    update(held, 40)
    held.write_log(logout(45))
    update(held, 50)
    assert expires(held, 51) == at(75)
    update(held, 60)
    assert expires(held, 61) == at(75)
    update(held, 76)
    assert not relays(held)


def test_a_dropped_connection_ends_the_hold_too(held: Site) -> None:
    held.write_log(logged_in_24(0))
    update(held, 1)
    update(held, 20)
    held.write_log(connection_closed(25))
    update(held, 26)
    assert expires(held, 27) == at(55)


def test_session_max_caps_a_session_whose_end_is_never_read(held: Site) -> None:
    # session_max 2h: the lease ends at 02:00 after the login, whatever the runs.
    held.write_log(login(0))
    for minute in range(1, 100, 10):
        update(held, minute)
    assert expires(held, 92) == at(120)
    update(held, 111)
    assert expires(held, 112) == at(120)
    assert relays(held)
    update(held, 121)
    assert not relays(held)
    update(held, 131)
    assert not relays(held)


def test_a_flushed_address_is_not_brought_back_by_its_disconnect_nor_by_later_runs(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    assert held.run("flush", ADDRESS, now=stamp(2)).exit_code == 0
    update(held, 3)
    update(held, 20)
    assert not relays(held)
    held.write_log(logout(25))
    update(held, 26)
    update(held, 40)
    assert expires(held, 41) is None
    assert not relays(held)


def test_a_flush_then_a_new_login_holds_only_the_new_session(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    assert held.run("flush", ADDRESS, now=stamp(2)).exit_code == 0
    held.write_log(login(3, session="NewSessionAAAAAB", user="bob"))
    held.write_log(logout(4, session="NewSessionAAAAAB", user="bob"))
    update(held, 5)
    # The new session ended at 00:04: its lease ends at 00:34; the flushed one holds nothing.
    for minute in (20, 33):
        update(held, minute)
    assert expires(held, 33.5) == at(34)
    update(held, 40)
    assert not relays(held)


def test_an_expired_lease_is_not_brought_back(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    # No run for 40 minutes: the lease ended at 00:31 (the last run + timeout).
    held.write_log(logout(35))
    update(held, 41)
    assert expires(held, 42) is None
    update(held, 45)
    assert not relays(held)


def test_a_login_read_after_its_timeout_holds_nothing(held: Site) -> None:
    held.write_log(login(0))
    update(held, 31)
    update(held, 32)
    assert not relays(held)


def test_an_old_form_without_the_session_ends_nothing(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    held.write_log(f"{at(10).isoformat()} mail dovecot: imap(alice)<4242>: Logged out in=91 out=512")
    update(held, 11)
    update(held, 40)
    assert relays(held)


def test_another_sessions_end_ends_nothing(held: Site) -> None:
    held.write_log(login(0))
    held.write_log(login(1, session="OtherSessionAAAB"))
    held.write_log(logout(2, session="OtherSessionAAAB"))
    update(held, 3)
    update(held, 20)
    update(held, 40)
    assert expires(held, 41) == at(70)


def test_the_sessions_survive_a_rotation(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    held.log.rename(held.log.with_name("mail.log.1"))
    held.log.touch()
    update(held, 20)
    update(held, 40)
    assert relays(held)
    held.write_log(logout(45))
    update(held, 46)
    assert expires(held, 47) == at(75)


def test_a_held_session_makes_no_run_quiet(held: Site) -> None:
    held.write_log(login(0))
    update(held, 1)
    # Nothing new in the log: each run still extends the lease.
    update(held, 20)
    assert expires(held, 21) == at(50)


def test_a_session_max_shorter_than_the_timeout_is_refused(tmp_path: Path) -> None:
    site = held_site(tmp_path, session_max="10m")
    result = site.run("update")
    assert result.exit_code == 78
    assert "session_max" in result.output and "timeout" in result.output
    assert "Traceback" not in result.output


def test_hold_while_connected_must_be_true_or_false(tmp_path: Path) -> None:
    site = held_site(tmp_path)
    site.config.write_text(
        site.config.read_text().replace("hold_while_connected = true", 'hold_while_connected = "yes"')
    )
    result = site.run("update")
    assert result.exit_code == 78
    assert "hold_while_connected" in result.output


def checkpoint_document(site: Site) -> dict[str, object]:
    return json.loads((site.state / "checkpoints.json").read_text())  # type: ignore[no-any-return]


def plant_sessions(site: Site, sessions: object) -> None:
    document = checkpoint_document(site)
    sources = document["sources"]
    assert isinstance(sources, dict)
    sources[str(site.log)]["sessions"] = sessions
    (site.state / "checkpoints.json").write_text(json.dumps(document))


HOSTILE_SESSIONS = [
    "not a list",
    {"kT3M0DLGQOMKAAAB": "192.0.2.10"},
    [[SESSION, ADDRESS, "alice", "2026-11-25T18:00:00", "dovecot", "2026-11-25T18:10:00"]],  # no offset
    [[SESSION, "192.0.2.010", "alice", "2026-11-25T18:00:00+00:00", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, 7, "2026-11-25T18:00:00+00:00", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "yesterday", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "9999-12-31T23:59:59+00:00", "dovecot", "9999-12-31T23:59:59+00:00"]],
    [[SESSION, ADDRESS, "alice", "0001-01-01T00:00:00+14:00", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "2026-11-25T18:00:00+00:00", "dovecot"]],  # a field short
    [None, 1, 2.5, True],
    [["x" * 10_000, ADDRESS, "alice", "2026-11-25T18:00:00+00:00", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "2026-11-25T18:00:00+00:00", "dovecot", "2026-11-25T18:10:00+00:00"]]
    * 20_000,
    # Past session_max (2h); held from before its login; held in the future.
    [[SESSION, ADDRESS, "alice", "2026-11-25T15:00:00+00:00", "dovecot", "2026-11-25T18:10:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "2026-11-25T18:10:00+00:00", "dovecot", "2026-11-25T18:00:00+00:00"]],
    [[SESSION, ADDRESS, "alice", "2026-11-25T18:00:00+00:00", "dovecot", "2026-11-25T19:00:00+00:00"]],
    # Last held at 00:10 with the lease's own login at 00:00: lapsed at 00:40, not at 00:20.
    [[SESSION, ADDRESS, "alice", "2026-11-25T17:30:00+00:00", "dovecot", "2026-11-25T17:45:00+00:00"]],
]


@pytest.mark.parametrize("sessions", HOSTILE_SESSIONS, ids=range(len(HOSTILE_SESSIONS)))
def test_hostile_session_state_holds_nothing_and_never_crashes(held: Site, sessions: object) -> None:
    # A login without a session: its lease ends 30 minutes after it, whatever the state says.
    held.write_log(login(0).replace(", session=<kT3M0DLGQOMKAAAB>", ""))
    update(held, 1)
    plant_sessions(held, sessions)
    result = held.run("update", now=stamp(20))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert expires(held, 21) == at(30)
    update(held, 31)
    assert not relays(held)


def test_the_state_holds_each_open_session_once_and_forgets_ended_ones(held: Site) -> None:
    held.write_log(login(0), login(1, session="SecondSessionAAB"), logout(2, session="SecondSessionAAB"))
    update(held, 3)
    sources = checkpoint_document(held)["sources"]
    assert isinstance(sources, dict)
    assert [entry[0] for entry in sources[str(held.log)]["sessions"]] == [SESSION]
    held.write_log(logout(4))
    update(held, 5)
    sources = checkpoint_document(held)["sources"]
    assert isinstance(sources, dict)
    assert "sessions" not in sources[str(held.log)]


def run_process(site: Site, minutes: float, **environment: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "exactcron",
        "--config",
        str(site.config),
        "--now",
        stamp(minutes),
        "update",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **environment}, check=False, timeout=60
    )


def killed_points(tmp_path: Path) -> list[str]:
    (tmp_path / "trace").mkdir()
    site = held_site(tmp_path / "trace")
    site.write_log(login(0))
    update(site, 1)
    update(site, 20)
    site.write_log(logout(25))
    trace = tmp_path / "points"
    assert run_process(site, 26, EXACTCRON_TRACE_POINTS=str(trace)).returncode == 0
    return list(dict.fromkeys(trace.read_text().split()))


def test_a_run_killed_at_any_point_neither_loses_nor_stretches_a_held_session(tmp_path: Path) -> None:
    points = killed_points(tmp_path)
    assert {"update:merged", "update:maps-written"} <= set(points)
    for number, point in enumerate(points):
        # Killed while reading the disconnect: the next run still ends the lease 30 minutes after it.
        (tmp_path / f"end-{number}").mkdir()
        site = held_site(tmp_path / f"end-{number}")
        site.write_log(login(0))
        update(site, 1)
        update(site, 20)
        site.write_log(logout(25))
        assert run_process(site, 26, EXACTCRON_KILL_AT=point).returncode == -9, point
        assert run_process(site, 27).returncode == 0, point
        assert expires(site, 28) == at(55), point
        update(site, 40)
        assert expires(site, 41) == at(55), point
        # Killed while holding an open session: the next run holds it still.
        (tmp_path / f"open-{number}").mkdir()
        site = held_site(tmp_path / f"open-{number}")
        site.write_log(login(0))
        update(site, 1)
        assert run_process(site, 20, EXACTCRON_KILL_AT=point).returncode == -9, point
        assert run_process(site, 21).returncode == 0, point
        assert expires(site, 22) == at(51), point
        assert relays(site), point


# One action of the property: minutes that pass before it, and what happens then.
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from([0, 0.5, 2, 2, 10, 10, 25, 45]),
        st.sampled_from(["login", "login", "logout", "logout", "flush", "run", "run", "run"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ACTIONS)
@example([(2, "login", 0), (2, "run", 0), (10, "run", 0), (2, "logout", 0), (10, "run", 0)])
@example(
    [
        (2, "login", 0),
        (2, "run", 0),
        (2, "flush", 0),
        (2, "login", 0),
        (2, "run", 0),
        (2, "logout", 1),
        (10, "run", 0),
    ]
)
def test_a_held_lease_never_outlives_its_bounds_and_never_revives_a_flushed_address(
    tmp_path_factory: pytest.TempPathFactory, actions: list[tuple[float, str, int]]
) -> None:
    """Whatever the order of logins, disconnects, flushes and runs, at each run:
    the lease ends no later than, over the sessions logged in after the last
    flush, the latest of min(login + session_max, end + timeout) for a
    session whose end was logged, min(login + session_max, now + timeout)
    for one still open; with none such, there is no lease; a run that finds
    no lease where the run before found none, with no login between, finds
    none still. And it holds: a session still open, read while its login
    granted, not flushed since, and whose lease no gap between runs let
    lapse, has its lease end no sooner than min(now + timeout, login + session_max)."""
    site = held_site(tmp_path_factory.mktemp("property"))
    timeout, session_max = timedelta(minutes=30), timedelta(hours=2)
    minutes = 0.0
    sessions: list[ModelSession] = []
    last_flush: datetime | None = None
    last_run: datetime | None = None
    leased_before = False
    logins_since_run = False
    for number, (gap, action, which) in enumerate(actions):
        minutes += gap
        now = at(minutes)
        if action == "login":
            session = ModelSession(f"S{number:04d}AAAAAAAAAAB", now)
            site.write_log(login(minutes, session=session.id))
            sessions.append(session)
            logins_since_run = True
        elif action == "logout":
            still_open = [each for each in sessions if each.ended is None]
            if still_open:
                chosen = still_open[which % len(still_open)]
                site.write_log(logout(minutes, session=chosen.id))
                chosen.ended = now
        elif action == "flush":
            assert site.run("flush", ADDRESS, now=stamp(minutes)).exit_code == 0
            last_flush = now
        else:
            update(site, minutes)
            end = expires(site, minutes)
            after_flush = [each for each in sessions if last_flush is None or each.login > last_flush]
            bounds = [min(each.login + session_max, (each.ended or now) + timeout) for each in after_flush]
            if end is not None:
                assert bounds, f"a lease with no login after the last flush: {actions}"
                assert end <= max(bounds), f"{end} past {max(bounds)}: {actions}"
                assert relays(site)
            else:
                assert not relays(site)
            if not leased_before and not logins_since_run and number > 0:
                assert end is None, f"revived: {actions}"
            for each in sessions:
                each.live = each in after_flush and each.still_held(now, last_run, timeout, session_max)
                if each.live:
                    wanted = min(now + timeout, each.login + session_max)
                    assert end is not None and end >= wanted, f"{each.id}: {end} before {wanted}: {actions}"
            leased_before = end is not None
            logins_since_run = False
            last_run = now


@dataclass
class ModelSession:
    """The property's own account of one session."""

    id: str
    login: datetime
    ended: datetime | None = None
    # Held at the last run (None: no run has read its login yet).
    live: bool | None = None

    def still_held(
        self, now: datetime, last_run: datetime | None, timeout: timedelta, session_max: timedelta
    ) -> bool:
        if self.ended is not None or now >= self.login + session_max:
            return False
        if self.live is None or last_run is None:
            return self.login > now - timeout  # read now: its login grants
        if not self.live:
            return False
        # The lease the last run left: timeout after its extension (or the login itself).
        held_from = max(self.login, min(last_run, self.login + session_max - timeout))
        return held_from + timeout > now


def test_a_session_is_held_through_the_shared_store_and_a_flush_there_ends_it(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    site = held_site(tmp_path)
    site.config.write_text(site.config.read_text() + postgres.store(schema))
    site.write_log(login(0), login(1, address="192.0.2.20", session="OtherSessionAAAB"))
    update(site, 2)
    for minute in (20, 40):
        update(site, minute)
    assert expires(site, 41) == at(70)
    assert expires(site, 41, "192.0.2.20") == at(70)
    assert site.run("flush", "192.0.2.20", now=stamp(42)).exit_code == 0
    site.write_log(logout(45), logout(46, session="OtherSessionAAAB"))
    update(site, 50)
    assert expires(site, 51) == at(75)
    assert expires(site, 51, "192.0.2.20") is None
    assert not relays(site, "192.0.2.20")


def courier(minutes: float, what: str, pid: int = 4242, user: str = "alice", address: str = ADDRESS) -> str:
    """A Courier imapd line of process `pid` (LOGIN, LOGOUT, ...)."""
    tail = (
        ", port=[52326], protocol=IMAP"
        if what == "LOGIN"
        else ", headers=0, body=0, rcvd=37, sent=470, time=3"
    )
    return f"{at(minutes).isoformat()} mail imapd[{pid}]: {what}, user={user}, ip=[::ffff:{address}]{tail}"


def uw(minutes: float, what: str, pid: int = 4243) -> str:
    return (
        f"{at(minutes).isoformat()} mail imapd[{pid}]: {what} user=alice host=client.example.net [{ADDRESS}]"
    )


@pytest.fixture
def held_by_process(tmp_path: Path) -> Site:
    site = held_site(tmp_path)
    site.config.write_text(
        site.config.read_text().replace('server = "dovecot"', 'server = ["courier", "uw-imap"]')
    )
    return site


def test_a_courier_session_is_held_until_its_process_logs_out(held_by_process: Site) -> None:
    site = held_by_process
    site.write_log(courier(0, "LOGIN"))
    for minute in (1, 20, 40):
        update(site, minute)
    # Another user's end, or another process's, ends nothing.
    site.write_log(courier(41, "LOGOUT", user="bob"), courier(42, "LOGOUT", pid=4300))
    update(site, 45)
    assert expires(site, 46) == at(75)
    site.write_log(courier(50, "LOGOUT"))
    update(site, 55)
    assert expires(site, 56) == at(80)
    update(site, 81)
    assert not relays(site)


def test_a_uw_imap_session_ends_with_its_autologout(held_by_process: Site) -> None:
    site = held_by_process
    site.write_log(uw(0, "Login"))
    for minute in (1, 20, 40):
        update(site, minute)
    site.write_log(uw(45, "Autologout"))
    update(site, 50)
    assert expires(site, 51) == at(75)


def test_a_pid_used_again_ends_the_session_before_it(held_by_process: Site) -> None:
    site = held_by_process
    site.write_log(courier(0, "LOGIN"))
    update(site, 1)
    update(site, 20)
    # The process is gone (its end never logged): its PID now serves another client.
    site.write_log(courier(25, "LOGIN", user="bob", address="192.0.2.20"))
    update(site, 26)
    update(site, 40)
    assert expires(site, 41) == at(55)
    assert expires(site, 41, "192.0.2.20") == at(70)


def test_a_forgotten_flush_of_another_address_ends_no_held_session_in_the_shared_store(
    tmp_path: Path, postgres: Cluster, schema: str
) -> None:
    # The store forgets flush records older than the timeout, and then refuses any
    # login logged before them: an extension must not be taken for such a login.
    site = held_site(tmp_path)
    site.config.write_text(site.config.read_text() + postgres.store(schema))
    site.write_log(login(0))
    update(site, 0.5)
    assert site.run("flush", "198.51.100.9", now=stamp(1)).exit_code == 0
    for minute in (2, 20, 40, 60):
        update(site, minute)
    assert expires(site, 61) == at(90)
    assert relays(site)
