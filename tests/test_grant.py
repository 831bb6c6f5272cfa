"""One grant decision: `check` and `update` judge a login alike, to the second
the lease table keeps, whatever the fraction of its stamp or of the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from exactcron.addresses import parse_network
from exactcron.commands.check import check_log
from exactcron.leases import Grant, LeaseTable
from exactcron.model import Login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.grant import Refusal
from exactcron.timestamps import TimestampParser
from tests.support.lines import dovecot_login
from tests.support.site import Site

TIMEOUT = timedelta(minutes=30)  # the site's


def test_check_and_update_agree_on_a_login_in_the_boundary_second(site: Site) -> None:
    # now is 18:00:00 and the timeout 30 minutes: 17:30:00 is the boundary second.
    site.write_log(
        dovecot_login("192.0.2.10", time="2026-11-25T17:30:00.500000+00:00"),
        dovecot_login("192.0.2.11", time="2026-11-25T17:30:01.000000+00:00"),
    )
    checked = site.run("check", str(site.log))
    assert checked.exit_code == 0, checked.output
    assert "would grant: 192.0.2.11\n" in checked.output
    assert "192.0.2.10" in checked.output.split("would grant:")[0]  # listed as too old
    assert site.run("update").exit_code == 0
    assert site.map.read_text() == "192.0.2.11 OK\n"


@given(
    now_fraction=st.integers(0, 999_999),
    offsets=st.lists(st.integers(-2_500_000, 2_500_000), min_size=1, max_size=6),
    ignored=st.booleans(),
)
def test_check_grants_exactly_what_the_lease_table_grants(
    now_fraction: int, offsets: list[int], ignored: bool
) -> None:
    """Logins around now - timeout (microseconds apart), some ahead of the clock."""
    now = datetime(2026, 11, 25, 18, 0, 0, now_fraction, tzinfo=UTC)
    ignore = [parse_network("192.0.2.0/28")] if ignored else []
    times = [now - TIMEOUT + timedelta(microseconds=offset) for offset in offsets]
    times += [now + timedelta(seconds=30, microseconds=offsets[0]), now + timedelta(minutes=5)]
    lines = [
        dovecot_login(f"192.0.2.{index * 10}", time=time.isoformat(timespec="microseconds")).encode()
        for index, time in enumerate(times, start=1)
    ]
    report = check_log(lines, (BUILTIN_RULES["dovecot"],), TimestampParser(now, UTC), TIMEOUT, ignore)
    table = LeaseTable()
    logins = [
        Login.at(time, "dovecot", "alice", f"192.0.2.{index * 10}") for index, time in enumerate(times, 1)
    ]
    table.merge_all(logins, now, TIMEOUT, ignore)
    assert report.granted == [lease.address for lease in table.active(now)]
    judged = {Refusal.TOO_OLD: report.too_old, Refusal.IGNORED: report.ignored, Refusal.AHEAD: report.ahead}
    grant = Grant(now, TIMEOUT, ignore)
    for login in logins:
        verdict = grant.verdict(login)
        if not isinstance(verdict, Login):
            assert login.address in judged[verdict]
