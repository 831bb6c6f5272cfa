"""`[guard]` through the real CLI and real logs: per-user address limits,
shared addresses, the state kept across runs and a lost lease file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.lines import dovecot_login
from tests.support.site import Site

START = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


def stamp(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat()


def guarded_site(make_site: Callable[..., Site], guard: str = "", timeout: str = "30m") -> Site:
    site = make_site(extra='log_file = "{root}/audit.log"\nmetrics_file = "{root}/metrics.prom"\n')
    text = site.config.read_text().replace("{root}", str(site.root))
    text = text.replace('timeout = "30m"', f'timeout = "{timeout}"')
    if guard:
        text += f"\n[guard]\n{guard}\n"
    site.config.write_text(text)
    return site


def leases(site: Site, now: str) -> dict[str, str | None]:
    result = site.run("show", "--json", now=now)
    assert result.exit_code == 0, result.output
    return {lease["ip"]: lease["user"] for lease in json.loads(result.stdout)["leases"]}


def audit(site: Site) -> list[str]:
    path = site.root / "audit.log"
    return path.read_text().splitlines() if path.exists() else []


def update(site: Site, now: str) -> None:
    result = site.run("update", now=now)
    assert result.exit_code == 0, result.output


def leased_after_login(site: Site, address: str, user: str, login_at: float, run_at: float) -> bool:
    """Whether `address` holds a lease after `user` logs in from it at `login_at` and an update runs at `run_at`."""
    site.write_log(dovecot_login(address, user, stamp(login_at)))
    update(site, stamp(run_at))
    return address in leases(site, stamp(run_at))


def eleven_addresses(site: Site, user: str = "alice", first: float = 40) -> None:
    site.write_log(*(dovecot_login(f"192.0.2.{n}", user, stamp(first + n * 0.5)) for n in range(1, 12)))


def test_the_eleventh_address_within_the_hour_is_refused_and_audited(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site)
    eleven_addresses(site)
    site.write_log(dovecot_login("198.51.100.7", "bob", stamp(50)))
    update(site, stamp(55))
    held = leases(site, stamp(55))
    assert sorted(a for a, u in held.items() if u == "alice") == sorted(f"192.0.2.{n}" for n in range(1, 11))
    assert held["198.51.100.7"] == "bob"  # a second user is unaffected
    refusals = [line for line in audit(site) if " refuse " in line]
    assert len(refusals) == 1
    assert " refuse 192.0.2.11 user=alice reason=max-addresses " in refusals[0]
    metrics = (site.root / "metrics.prom").read_text()
    assert 'exactcron_refused_total{reason="max-addresses"} 1' in metrics
    assert 'exactcron_refused_total{reason="shared"} 0' in metrics
    status = site.run("status", "--json", now=stamp(56))
    document = json.loads(status.stdout)
    assert [entry["user"] for entry in document["guard"]["over_limit"]] == ["alice"]
    assert "guard: user alice over the limit" in site.run("status", now=stamp(56)).stdout
    # Read again (the same log, a later run): no second refusal, the counter stays.
    update(site, stamp(57))
    assert len([line for line in audit(site) if " refuse " in line]) == 1


def test_the_limit_holds_across_runs_and_names_compare_case_folded(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site)
    site.write_log(
        *(dovecot_login(f"192.0.2.{n}", "Alice@Example.org", stamp(40 + n * 0.5)) for n in range(1, 11))
    )
    update(site, stamp(46))
    assert not leased_after_login(site, "192.0.2.11", "alice@example.ORG", 47, run_at=48)
    # Another domain is another user.
    assert leased_after_login(site, "192.0.2.12", "alice@example.net", 49, run_at=50)


def test_revoke_leaves_the_user_no_lease(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site, 'on_exceed = "revoke"')
    eleven_addresses(site)
    site.write_log(dovecot_login("198.51.100.7", "bob", stamp(50)))
    update(site, stamp(55))
    held = leases(site, stamp(55))
    assert held == {"198.51.100.7": "bob"}
    revocations = [line for line in audit(site) if " flush " in line and "by=guard" in line]
    assert len(revocations) == 10
    # A login from one of the revoked addresses within the window still grants nothing.
    assert not leased_after_login(site, "192.0.2.3", "alice", 56, run_at=57)


def test_the_window_sliding_on_lets_the_user_in_again(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site)
    site.write_log(*(dovecot_login(f"192.0.2.{n}", "alice", stamp(n)) for n in range(1, 11)))
    update(site, stamp(11))
    # At 17:30 the first leases have expired, but the hour still counts them.
    assert not leased_after_login(site, "192.0.2.11", "alice", 30, run_at=31)
    # An hour after the first login, that address no longer counts.
    assert leased_after_login(site, "192.0.2.11", "alice", 61.5, run_at=62)


def test_a_shared_range_client_is_refused(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site)
    site.write_log(
        dovecot_login("100.64.12.34", "alice", stamp(50)), dovecot_login("192.0.2.5", "bob", stamp(50))
    )
    update(site, stamp(51))
    assert leases(site, stamp(51)) == {"192.0.2.5": "bob"}
    assert any(" refuse 100.64.12.34 user=alice reason=shared " in line for line in audit(site))


def test_an_address_of_21_users_is_warned_about_and_refused_with_refuse_shared(
    make_site: Callable[..., Site],
) -> None:
    site = guarded_site(make_site)
    site.write_log(*(dovecot_login("203.0.113.9", f"user{n}", stamp(30 + n)) for n in range(21)))
    update(site, stamp(52))
    assert "203.0.113.9" in leases(site, stamp(52))
    status = site.run("status", now=stamp(53))
    assert status.exit_code == 0
    assert "203.0.113.9 is shared: 21 users" in status.stderr
    assert json.loads(site.run("status", "--json", now=stamp(53)).stdout)["guard"]["shared"] == [
        {"address": "203.0.113.9", "users": 21}
    ]

    strict = guarded_site(_fresh(make_site, site), "refuse_shared = true")
    strict.write_log(*(dovecot_login("203.0.113.9", f"user{n}", stamp(30 + n)) for n in range(20)))
    update(strict, stamp(50.5))
    assert "203.0.113.9" in leases(strict, stamp(50.5))
    strict.write_log(dovecot_login("203.0.113.9", "user20", stamp(51)))
    update(strict, stamp(52))
    assert "203.0.113.9" in leases(strict, stamp(52))  # the lease of the 20th still runs
    assert leases(strict, stamp(52))["203.0.113.9"] == "user19"
    assert any(" refuse 203.0.113.9 user=user20 reason=shared " in line for line in audit(strict))


def _fresh(make_site: Callable[..., Site], old: Site) -> Callable[..., Site]:
    """A second site beside `old` (its own directory)."""
    root = old.root / "second"
    root.mkdir()

    def make(extra: str = "") -> Site:
        config = old.config.read_text().replace(str(old.root), str(root))
        config = re.sub(r"\n\[guard\][^\[]*", "\n", config)
        (root / "mail.log").touch()
        (root / "exactcron.toml").write_text(config)
        return Site(
            root, root / "exactcron.toml", root / "mail.log", root / "state", root / "state" / "relay"
        )

    return make


def test_a_lost_lease_file_rebuilt_from_the_logs_keeps_the_verdicts(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site)
    site.write_log(*(dovecot_login(f"192.0.2.{n}", "alice", stamp(n)) for n in range(1, 11)))
    update(site, stamp(11))
    site.write_log(dovecot_login("192.0.2.11", "alice", stamp(25)))
    update(site, stamp(26))
    before = leases(site, stamp(26))
    assert "192.0.2.11" not in before
    (site.state / "leases.json").write_text("{garbage")
    update(site, stamp(27))
    assert leases(site, stamp(27)) == before


def test_add_is_not_limited(make_site: Callable[..., Site]) -> None:
    site = guarded_site(make_site, "max_addresses_per_user = 1")
    for n in range(1, 5):
        assert site.run("add", f"192.0.2.{n}", now=stamp(1)).exit_code == 0
    assert len(leases(site, stamp(2))) == 4


LOGINS = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", "Carol", "carol"]),
        st.sampled_from([*(f"192.0.2.{n}" for n in range(1, 7)), "100.64.0.1", "100.127.255.254"]),
        st.integers(min_value=0, max_value=150),
    ),
    max_size=30,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(logins=LOGINS, runs=st.integers(min_value=1, max_value=3))
def test_no_user_ever_holds_more_than_the_limit_within_a_window(
    make_site: Callable[..., Site], tmp_path: Path, logins: list[tuple[str, str, int]], runs: int
) -> None:
    """Whatever the logins, split over any runs: within any window no user is
    granted more than max addresses, and no shared-range address is ever granted."""
    for leftover in tmp_path.iterdir():
        if leftover.is_dir():
            import shutil

            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    # A timeout longer than the logins span: every login the guard lets through grants.
    site = guarded_site(make_site, 'max_addresses_per_user = 2\nwindow = "30m"', timeout="3h")
    logins = sorted(logins, key=lambda login: login[2])
    size = max(1, -(-len(logins) // runs))
    for start in range(0, max(len(logins), 1), size):
        batch = logins[start : start + size]
        site.write_log(*(dovecot_login(address, user, stamp(minute)) for user, address, minute in batch))
        last = batch[-1][2] if batch else 0
        update(site, stamp(last + 0.5))
        for address in leases(site, stamp(last + 0.5)):
            assert not address.startswith(("100.64.", "100.127.")), address
    granted: dict[str, list[tuple[datetime, str]]] = {}
    for line in audit(site):
        found = re.match(r"(\S+) (grant|extend) (\S+) user=(\S+) ", line)
        if found:
            assert not found.group(3).startswith(("100.64.", "100.127."))
    # Every login that was not refused granted (or extended) its address: the
    # logins granted per user, from the log and the refusals.
    refused = set()
    for line in audit(site):
        found = re.match(r"\S+ refuse (\S+) user=(\S+) reason=\S+ login=(\S+)", line)
        if found:
            refused.add((found.group(2), found.group(1), found.group(3)))
    for user, address, minute in logins:
        login_stamp = (START + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
        if (user, address, login_stamp) not in refused and not address.startswith("100."):
            granted.setdefault(user.casefold(), []).append((START + timedelta(minutes=minute), address))
    final = json.loads(site.run("show", "--json", now=stamp(151)).stdout)["leases"]
    for lease in final:
        assert not lease["ip"].startswith("100."), lease
    for user, grants in granted.items():
        for time, _ in grants:
            inside = {address for when, address in grants if time - timedelta(minutes=30) < when <= time}
            assert len(inside) <= 2, (user, time, inside)
