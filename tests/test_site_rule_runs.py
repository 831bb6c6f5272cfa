"""Site rules from a grammar of patterns, over whole `update` runs.

Each example is one generated `[rule.NAME]` on a source beside the built-in
Dovecot rule, and a log of noise (lines of every shape, hostile bytes, lines
holding the rule's literal text with up to 8 KB of hostile filler between)
mixed with real Dovecot logins and real success lines of the site rule,
read over consecutive runs. After every run: the exit is 0 (a run that hits
`run_deadline` would exit 75: the engine too slow, which this test must
show, not hide), every real login is granted, the map answers OK for exactly
what `show` lists, and the checkpoint is at the end of the log.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exactcron.rules.grant import is_anonymous
from exactcron.rules.linear import LinearPattern
from exactcron.rules.parser import MAX_LINE_BYTES
from exactcron.timestamps import format_instant
from tests.support.clock import NOW
from tests.support.lines import dovecot_imap_login
from tests.support.log_generators import SiteRule, address_forms, noise_lines, site_rules, user_names
from tests.support.maps import map_keys
from tests.support.site import Site, write_config
from tests.support.tools import require_tool
from tests.support.whole_run import append_bytes, at, postmap_says_ok, shown, status_json

RUN_STEP = timedelta(minutes=7)
RULE = "siterule"

programs = st.from_regex(r"[A-Za-z0-9_.\-/]{1,16}", fullmatch=True)


def site_with_rule(root: Path, rule: SiteRule, program: str) -> Site:
    """A Dovecot source that also takes the site rule, read into a postfix hash map."""
    state = root / "state"
    log = root / "mail.log"
    log.touch()
    config = write_config(
        root,
        f"""\
state_dir = "{state}"
timeout = "30m"
[[source]]
path = "{log}"
server = ["dovecot", "{RULE}"]
timezone = "UTC"
hosts = ["mail"]
[[map]]
mta = "postfix"
path = "{state / "relay"}"
type = "hash"
[guard]
# Generated user names repeat; the guard's limit has tests of its own.
max_addresses_per_user = 100000
[rule.{RULE}]
program = {json.dumps(program)}
match = {json.dumps(rule.pattern)}
""",
    )
    return Site(root, config, log, state, state / "relay")


def head(stamp: datetime, program: str, pid: bool) -> str:
    return f"{stamp.isoformat(timespec='microseconds')} mail {program}{'[4711]' if pid else ''}: "


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rule=site_rules(), program=programs, data=st.data())
def test_no_generated_site_rule_or_line_stops_a_run_or_hides_a_login(
    tmp_path_factory: pytest.TempPathFactory, rule: SiteRule, program: str, data: st.DataObject
) -> None:
    require_tool("postmap")
    site = site_with_rule(tmp_path_factory.mktemp("siterule"), rule, program)
    checked = site.run("check")
    assert checked.exit_code == 0, (rule.pattern, checked.output)
    now = at(NOW)
    fresh = 0
    for _run in range(data.draw(st.integers(2, 3), label="runs")):
        lines: list[bytes] = []
        granted_now: set[str] = set()
        kinds = data.draw(
            st.lists(st.sampled_from(["noise", "near miss", "dovecot", "site"]), max_size=10).map(
                lambda drawn: ["site", *drawn]
            ),
            label="lines",
        )
        for kind in data.draw(st.permutations(kinds)):
            stamp = now - timedelta(seconds=data.draw(st.integers(0, 1200)))
            pid = data.draw(st.booleans())
            if kind == "noise":
                lines.append(data.draw(noise_lines()))
            elif kind == "near miss":
                lines.append((head(stamp, program, pid) + data.draw(rule.near_misses())).encode())
            elif kind == "dovecot":
                fresh += 1
                address = f"198.51.100.{fresh}"
                lines.append(dovecot_imap_login(address, stamp, f"user{fresh}").encode())
                granted_now.add(address)
            else:
                fresh += 1
                written = [form for form in address_forms(fresh) if rule.writes(form)]
                address = data.draw(st.sampled_from(written))
                user = data.draw(
                    user_names().filter(rule.writes_user).filter(lambda name: not is_anonymous(name))
                )
                message = data.draw(rule.messages(address, user))
                line = (head(stamp, program, pid) + message).encode()
                lines.append(line)
                if len(line) + 1 <= MAX_LINE_BYTES:  # longer lines are skipped, counted (too long)
                    granted_now.add(str(ipaddress.ip_address(address)))
        append_bytes(site, lines)
        instant = format_instant(now)
        result = site.run("update", now=instant)
        # 75 would be run_deadline reached: the engine too slow for these lines (a finding).
        assert result.exit_code == 0, (rule.pattern, result.output)
        listed = shown(site, instant)
        assert granted_now <= listed, (rule.pattern, granted_now - listed)
        for address in granted_now:
            assert postmap_says_ok(site.map, address), address
        assert map_keys(site.map) == listed
        # Nothing left unread: the checkpoint is at the end of the log.
        (source,) = status_json(site, instant)["sources"]  # type: ignore[misc]
        assert source["checkpoint"]["offset"] == site.log.stat().st_size
        assert source["unread_bytes"] == 0
        now += RUN_STEP


@settings(max_examples=300, deadline=None)
@given(rule=site_rules(), number=st.integers(1, 0xFFFF), data=st.data())
def test_the_grammar_writes_lines_its_rule_captures_exactly(
    rule: SiteRule, number: int, data: st.DataObject
) -> None:
    """What the whole-run test relies on: the line written for a rule states the address
    (and user) the engine captures, whatever the filler around them."""
    user = data.draw(user_names().filter(rule.writes_user))
    address = data.draw(st.sampled_from([form for form in address_forms(number) if rule.writes(form)]))
    message = data.draw(rule.messages(address, user))
    found = LinearPattern(rule.pattern, re.DOTALL).fullmatch(message)
    assert found is not None, (rule.pattern, message)
    assert found.group("ip") == address
    if rule.user_body is not None:
        assert found.group("user") == user
