"""`status` and `status --json` show the follow: whether a follower runs now
(from the follower file: its pid, when it started, until when), the steps and
grants of the newest one, and the median and 99th percentile of the latest
grant delays. In-process, on the tests' clock (`--now`), exact output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from exactcron.outputs.health import FollowerRecord, RunRecord
from tests.support.clock import NOW, NOW_TIME
from tests.support.lines import dovecot_login
from tests.support.site import Site

# A follow of 1s from --now ends then (the given time moves on as the follow goes).
ONE_LATER = "2026-11-25T18:00:01+00:00"


def tail(site: Site, now: str) -> str:
    """The status text from its last run on (the sources' part is tests/test_cli.py's)."""
    result = site.run("status", now=now)
    assert result.exit_code == 0, result.output
    return "last run:" + result.output.split("last run:", 1)[1]


def claim(site: Site, pid: int, started: str, until: str) -> None:
    """The follower file as a follower writes it when it starts."""
    document = {"pid": pid, "started": started, "until": until, "steps": 0, "granted": 0, "id": "0f"}
    (site.state / "follower").write_text(json.dumps(document) + "\n")


def test_status_shows_no_follower_and_no_delay_before_any(site: Site) -> None:
    site.run("update")
    assert tail(site, NOW) == f"last run: {NOW} ok\nleases: 0\nhealthy\n"
    document = json.loads(site.run("status", "--json").output)
    assert document["follower"] is None
    assert document["grant_delay"] == {"count": 0, "recent": 0, "median": None, "p99": None}


def test_status_shows_the_last_followers_steps_and_grants_and_the_delays(site: Site) -> None:
    # Stamped ahead of --now (believed up to a minute ahead): no delay, whatever
    # the follow's moving clock says when it installs.
    site.write_log(dovecot_login("192.0.2.10", time="2026-11-25T18:00:30+00:00"))
    assert site.run("update", "--follow-for", "1s").exit_code == 0
    pid = os.getpid()  # in-process: the follower was this process
    assert tail(site, "2026-11-25T18:00:30+00:00") == (
        f"last run: {NOW} ok\nleases: 1\n"
        f"follower: not running, pid {pid}, from {NOW} until {ONE_LATER}; 1 step, 1 granted\n"
        "grant delay: median 0.000000s, 99th percentile 0.000000s (the latest 1 grant)\n"
        "healthy\n"
    )
    document = json.loads(site.run("status", "--json", now="2026-11-25T18:00:30+00:00").output)
    assert document["follower"] == {
        "running": False,
        "pid": pid,
        "started": NOW,
        "until": ONE_LATER,
        "steps": 1,
        "granted": 1,
    }
    assert document["grant_delay"] == {"count": 1, "recent": 1, "median": 0.0, "p99": 0.0}
    # A plain run after it keeps the follower's figures and adds its own delays.
    site.write_log(dovecot_login("192.0.2.11", time="2026-11-25T18:00:59.5+00:00"))
    assert site.run("update", now="2026-11-25T18:01:00+00:00").exit_code == 0
    assert tail(site, "2026-11-25T18:01:00+00:00") == (
        "last run: 2026-11-25T18:01:00+00:00 ok\nleases: 2\n"
        f"follower: not running, pid {pid}, from {NOW} until {ONE_LATER}; 1 step, 1 granted\n"
        "grant delay: median 0.000000s, 99th percentile 0.500000s (the latest 2 grants)\n"
        "healthy\n"
    )


def test_status_shows_a_follower_running_now_and_a_newer_ones_figures_from_zero(site: Site) -> None:
    assert site.run("update", "--follow-for", "1s").exit_code == 0
    # A newer follower (this process stands for it: alive) has claimed, its first run not yet done.
    claim(site, os.getpid(), "2026-11-25T18:01:00+00:00", "2026-11-25T18:01:59+00:00")
    assert tail(site, "2026-11-25T18:01:10+00:00") == (
        f"last run: {NOW} ok\nleases: 0\n"
        f"follower: running, pid {os.getpid()}, from 2026-11-25T18:01:00+00:00"
        " until 2026-11-25T18:01:59+00:00; 0 steps, 0 granted\n"
        "healthy\n"
    )
    document = json.loads(site.run("status", "--json", now="2026-11-25T18:01:10+00:00").output)
    assert document["follower"]["running"] is True
    # Past its end, or its process gone, it runs no more.
    assert "follower: not running," in tail(site, "2026-11-25T18:02:00+00:00")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    claim(site, int(gone.stdout), "2026-11-25T18:01:00+00:00", "2026-11-25T18:01:59+00:00")
    assert f"follower: not running, pid {int(gone.stdout)}," in tail(site, "2026-11-25T18:01:10+00:00")


def test_a_follower_file_that_is_not_understood_shows_no_follower(site: Site) -> None:
    site.run("update")
    (site.state / "follower").write_text("1234 0123456789abcdef\n")  # as 0.3's followers wrote it
    assert tail(site, NOW) == f"last run: {NOW} ok\nleases: 0\nhealthy\n"


def test_a_followers_figures_add_up_over_its_steps_and_start_afresh_for_the_next() -> None:
    started = datetime(2026, 11, 25, 18, 0, 0, 250_000, tzinfo=UTC)
    first = FollowerRecord(4242, started, started + timedelta(seconds=59))
    record = RunRecord()
    for granted in (2, 0, 3):
        # Through JSON each time, as the state file keeps it (to the second).
        record = RunRecord.from_json(
            record.succeeded(NOW_TIME, 1, {}, follower=first, granted=granted).to_json()
        )
    assert record.follower == FollowerRecord(
        4242, started.replace(microsecond=0), first.until.replace(microsecond=0), 3, 5
    )
    # A plain run leaves them; the next follower starts from nothing.
    record = record.succeeded(NOW_TIME, 1, {}, granted=7)
    assert record.follower is not None and (record.follower.steps, record.follower.granted) == (3, 5)
    second = FollowerRecord(4243, started + timedelta(minutes=1), started + timedelta(minutes=2))
    record = record.succeeded(NOW_TIME, 1, {}, follower=second, granted=1)
    assert record.follower == FollowerRecord(4243, second.started, second.until, 1, 1)
