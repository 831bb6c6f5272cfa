"""Two-line rules: the address on a connect line, the login on a later line of the same process.

popa3d (standalone `Session from ADDR`, or tcpd's `connect from NAME (ADDR)`
from inetd, then `Authentication passed for USER`), GNU pop3d behind tcpd
(``user `U' logged in with mailbox `M' (N messages)``), vm-pop3d (`Connect
from ADDR`, `User 'U' logged in`), and a site's `[rule.NAME]` with
`connect`. A success pairs only with the open session of its own host,
tag and PID; a session ends at its success, at an end line, at the next
connect of its key, and after MAX_SESSION_SECONDS.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.pairing import MAX_OPEN_SESSIONS, MAX_SESSION_SECONDS, Pairings
from exactcron.rules.parser import LineParser
from exactcron.rules.site import site_rule
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME
from tests.support.site import Site, write_config

TWO_LINE = ("popa3d", "gnu-pop3d", "vm-pop3d")


def stamp(seconds: int) -> str:
    """An RFC 3339 stamp `seconds` before NOW."""
    return (NOW_TIME - timedelta(seconds=seconds)).isoformat()


def logins(
    *lines: str, hosts: frozenset[str] | None = None, state: object = None
) -> list[tuple[str, str | None, str]]:
    """(server, user, address) of each login the lines state, read in order by one parser."""
    rules = tuple(BUILTIN_RULES[name] for name in (*TWO_LINE, "dovecot"))
    parser = LineParser(rules, TimestampParser(NOW_TIME, UTC), hosts, pairing_state=state)
    block = "".join(line + "\n" for line in lines).encode()
    return [(login.server, login.user, login.address) for login in parser.logins(block)]


# -- the built-in servers -------------------------------------------------------


def test_popa3d_standalone_grants_the_session_address_at_the_success_stamp() -> None:
    rules = tuple(BUILTIN_RULES[name] for name in TWO_LINE)
    parser = LineParser(rules, TimestampParser(NOW_TIME, UTC))
    found = parser.logins(
        f"{stamp(30)} mail popa3d[4711]: Session from 192.0.2.21\n"
        f"{stamp(20)} mail popa3d[4711]: Authentication passed for pcap\n"
        f"{stamp(19)} mail popa3d[4711]: 0 (0) deleted, 2 (142) left\n".encode()
    )
    assert [(login.user, login.address, login.time) for login in found] == [
        ("pcap", "192.0.2.21", NOW_TIME - timedelta(seconds=20))
    ]


@pytest.mark.parametrize(
    "connect",
    [
        "connect from c22.client.example (192.0.2.22)",
        "connect from 192.0.2.22 (192.0.2.22)",  # Debian's tcpd without a reverse name
        "connect from 192.0.2.22",
        "connect from ident@c22.client.example (192.0.2.22)",
    ],
)
def test_popa3d_behind_tcpd_grants_the_address_tcpd_logged(connect: str) -> None:
    assert logins(
        f"{stamp(30)} mail popa3d[5001]: {connect}",
        f"{stamp(29)} mail popa3d[5001]: Authentication passed for pcap",
    ) == [("popa3d", "pcap", "192.0.2.22")]


@pytest.mark.parametrize(
    "connect",
    [
        # A name from the client's DNS or identd that imitates an address: never read.
        "connect from x (198.51.100.66) (192.0.2.22)",
        "connect from x(198.51.100.66)@y (192.0.2.22)",
        "connect from c22.client.example (192.0.2.22",
        "connect from c22.client.example",
        "refused connect from 192.0.2.22",
    ],
)
def test_a_connect_line_of_another_shape_lends_no_address(connect: str) -> None:
    assert (
        logins(
            f"{stamp(40)} mail popa3d[5001]: Session from 192.0.2.99",
            f"{stamp(30)} mail popa3d[5001]: {connect}",
            f"{stamp(29)} mail popa3d[5001]: Authentication passed for pcap",
        )
        == []
    )


@pytest.mark.parametrize(
    "failure",
    [
        "Authentication failed for pcap",
        "Authentication failed for UNKNOWN USER",
        "Didn't attempt authentication",
    ],
)
def test_a_popa3d_failure_grants_nothing_and_ends_the_session(failure: str) -> None:
    assert (
        logins(
            f"{stamp(30)} mail popa3d[4711]: Session from 192.0.2.21",
            f"{stamp(29)} mail popa3d[4711]: {failure}",
            # Not popa3d's (one authentication per process): a forged or reused line.
            f"{stamp(28)} mail popa3d[4711]: Authentication passed for pcap",
        )
        == []
    )


def test_gnu_pop3d_behind_tcpd_grants_after_a_failed_pass_in_the_same_session() -> None:
    assert logins(
        f"{stamp(30)} mail pop3d[6100]: connect from c22.client.example (192.0.2.22)",
        f"{stamp(29)} mail pop3d[6100]: user `pcap': authentication failed",
        f"{stamp(28)} mail pop3d[6100]: user `pcap' nonexistent",
        f"{stamp(27)} mail pop3d[6100]: POP3 login: user `pcap', source system",
        f"{stamp(27)} mail pop3d[6100]: user `pcap' logged in with mailbox `/var/mail/pcap' (2 messages)",
    ) == [("gnu-pop3d", "pcap", "192.0.2.22")]


def test_gnu_pop3d_one_line_form_still_grants() -> None:
    assert logins(
        f"{stamp(30)} mail gnu-pop3d[21974]: User 'alice' logged in with mailbox 'alice' from 192.0.2.10"
    ) == [("gnu-pop3d", "alice", "192.0.2.10")]


def test_vm_pop3d_pairs_its_connect_and_login_lines() -> None:
    assert logins(
        f"{stamp(30)} mail vm-pop3d[7000]: Connect from 192.0.2.40",
        f"{stamp(29)} mail vm-pop3d[7000]: User 'carol' logged in",
    ) == [("vm-pop3d", "carol", "192.0.2.40")]


def test_interleaved_sessions_of_two_pids_each_get_their_own_address_and_user() -> None:
    assert logins(
        f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21",
        f"{stamp(30)} mail popa3d[101]: Session from 192.0.2.22",
        f"{stamp(29)} mail popa3d[101]: Authentication passed for bob",
        f"{stamp(28)} mail popa3d[100]: Authentication passed for alice",
    ) == [("popa3d", "bob", "192.0.2.22"), ("popa3d", "alice", "192.0.2.21")]


def test_a_reused_pid_never_lends_the_old_address() -> None:
    assert (
        logins(
            f"{stamp(60)} mail popa3d[100]: Session from 192.0.2.21",
            # The PID comes back for a connection whose address cannot be read.
            f"{stamp(30)} mail popa3d[100]: Session from 999.0.2.1",
            f"{stamp(29)} mail popa3d[100]: Authentication passed for mallory",
        )
        == []
    )


def test_a_success_without_its_connect_line_grants_nothing() -> None:
    assert logins(f"{stamp(29)} mail popa3d[100]: Authentication passed for pcap") == []


def test_a_success_under_another_tag_or_pid_or_host_grants_nothing() -> None:
    connect = f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21"
    assert logins(connect, f"{stamp(29)} mail popa3d[101]: Authentication passed for pcap") == []
    assert logins(connect, f"{stamp(29)} mail vm-pop3d[100]: User 'pcap' logged in") == []
    assert logins(connect, f"{stamp(29)} other popa3d[100]: Authentication passed for pcap") == []
    assert logins(connect, f"{stamp(29)} mail popa3d: Authentication passed for pcap") == []


def test_a_session_grants_once() -> None:
    assert logins(
        f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21",
        f"{stamp(29)} mail popa3d[100]: Authentication passed for pcap",
        f"{stamp(28)} mail popa3d[100]: Authentication passed for mallory",
    ) == [("popa3d", "pcap", "192.0.2.21")]


def test_a_session_older_than_its_bound_lends_nothing() -> None:
    old = MAX_SESSION_SECONDS + 31
    assert (
        logins(
            f"{stamp(old)} mail popa3d[100]: Session from 192.0.2.21",
            f"{stamp(30)} mail popa3d[100]: Authentication passed for pcap",
        )
        == []
    )
    assert logins(
        f"{stamp(MAX_SESSION_SECONDS + 30)} mail popa3d[100]: Session from 192.0.2.21",
        f"{stamp(30)} mail popa3d[100]: Authentication passed for pcap",
    ) == [("popa3d", "pcap", "192.0.2.21")]


def test_a_paired_login_passes_the_checks_every_login_passes() -> None:
    connect = f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21"
    # Anonymous users, and hosts outside `hosts`.
    assert logins(connect, f"{stamp(29)} mail popa3d[100]: Authentication passed for Anonymous@x") == []
    assert (
        logins(
            connect, f"{stamp(29)} mail popa3d[100]: Authentication passed for pcap", hosts=frozenset({"mx"})
        )
        == []
    )


def test_an_unreadable_stamp_under_the_session_key_ends_it() -> None:
    assert (
        logins(
            f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21",
            "Feb 30 17:59:30 mail popa3d[100]: Session from 198.51.100.7",
            f"{stamp(29)} mail popa3d[100]: Authentication passed for pcap",
        )
        == []
    )


# -- the open sessions, as the checkpoint holds them ---------------------------------


def test_the_open_sessions_survive_their_json_and_expire() -> None:
    rules = tuple(BUILTIN_RULES[name] for name in TWO_LINE)
    parser = LineParser(rules, TimestampParser(NOW_TIME, UTC))
    parser.logins(f"{stamp(30)} mail popa3d[100]: Session from 192.0.2.21\n".encode())
    assert parser.pairings is not None
    state = json.loads(json.dumps(parser.pairings.to_json(NOW_TIME)))
    assert logins(f"{stamp(20)} mail popa3d[100]: Authentication passed for pcap", state=state) == [
        ("popa3d", "pcap", "192.0.2.21")
    ]
    later = NOW_TIME + timedelta(seconds=MAX_SESSION_SECONDS + 61)
    assert parser.pairings.to_json(later)["open"] == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {"format": st.just(1), "open": st.lists(st.lists(JSON, max_size=6), max_size=4)}
        ),
        st.fixed_dictionaries(
            {
                "format": st.just(1),
                "open": st.lists(
                    st.tuples(
                        st.one_of(st.none(), st.text(max_size=6)),
                        st.sampled_from(["popa3d", "pop3d", "", "a b"]),
                        st.one_of(st.text(max_size=4), st.integers()),
                        st.sampled_from(["192.0.2.21", "::ffff:192.0.2.21", "x", "2001:DB8::1"]),
                        st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=3)),
                    ).map(list),
                    max_size=3,
                ),
            }
        ),
    )
)
def test_any_saved_state_loads_without_a_crash_and_lends_only_what_it_says(state: object) -> None:
    found = logins(f"{stamp(20)} mail popa3d[100]: Authentication passed for pcap", state=state)
    if found:
        assert isinstance(state, dict)
        entries = [
            entry
            for entry in state["open"]
            if entry[:3] == [None, "popa3d", "100"] or entry[1:3] == ["popa3d", "100"]
        ]
        assert entries and found[0][2] == entries[-1][3]


def test_the_open_sessions_are_bounded_oldest_dropped_first() -> None:
    pairings = Pairings([("popa3d", BUILTIN_RULES["popa3d"].two_line)])  # type: ignore[list-item]
    second = NOW_TIME - timedelta(seconds=30)
    for pid in range(MAX_OPEN_SESSIONS + 5):
        pairings.paired(None, b"popa3d", str(pid).encode(), second, b"Session from 192.0.2.1")
    assert len(pairings) == MAX_OPEN_SESSIONS
    assert pairings.paired(None, b"popa3d", b"0", second, b"Authentication passed for a") is None
    assert pairings.paired(None, b"popa3d", b"5", second, b"Authentication passed for a") == (
        "popa3d",
        "a",
        "192.0.2.1",
    )


# -- the property: a grant is its own session's address --------------------------------

PIDS = ("100", "101", "102")
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(PIDS),
        st.sampled_from(["connect", "connect-bad", "success", "fail", "end"]),
        st.integers(min_value=0, max_value=9),
        st.integers(min_value=0, max_value=400),
    ),
    max_size=40,
)
MESSAGES = {
    "connect": "Session from 10.{pid}.0.{n}",
    "connect-bad": "connect from x (10.{pid}.0.{n}) (bogus",
    "success": "Authentication passed for u{pid}x{n}",
    "fail": "Authentication failed for u{pid}x{n}",
    "end": "{n} (0) deleted, 0 (0) left",
}


@settings(max_examples=300)
@given(EVENTS, st.integers(min_value=0, max_value=3))
def test_no_grant_pairs_a_success_with_another_pid_or_an_ended_session(
    events: list[tuple[str, str, int, int]], cut: int
) -> None:
    """Whatever the interleaving and wherever a run ends (the state saved and
    loaded between runs), a grant's address is the last connect of the
    success's own PID, no end, failure, success or connect of that PID between."""
    start = NOW_TIME - timedelta(seconds=1800)
    lines = []
    elapsed = 0
    for pid, kind, n, step in events:
        elapsed += step
        time = (start + timedelta(seconds=elapsed)).isoformat()
        lines.append(
            (
                pid,
                kind,
                n,
                start + timedelta(seconds=elapsed),
                f"{time} mail popa3d[{pid}]: " + MESSAGES[kind].format(pid=pid, n=n),
            )
        )
    rules = (BUILTIN_RULES["popa3d"],)
    granted = []
    state: object = None
    split = len(lines) * cut // 3
    for part in (lines[:split], lines[split:]):
        parser = LineParser(rules, TimestampParser(NOW_TIME, UTC), pairing_state=state)
        for _, _, _, _, line in part:
            login = parser.parse(line.encode())
            granted.append(login)
        assert parser.pairings is not None
        state = json.loads(json.dumps(parser.pairings.to_json(NOW_TIME)))
    # granted[i] belongs to lines[i].
    for index, login in enumerate(granted):
        pid, kind, n, time, _ = lines[index]
        if login is None:
            continue
        assert kind == "success"
        assert login.user == f"u{pid}x{n}"
        # The session it pairs with: the last line of this PID before it.
        before = [line for line in lines[:index] if line[0] == pid]
        assert before and before[-1][1] == "connect"
        assert login.address == f"10.{pid}.0.{before[-1][2]}"
        assert (time - before[-1][3]).total_seconds() <= MAX_SESSION_SECONDS


# -- site rules -----------------------------------------------------------------------


def test_a_site_two_line_rule_pairs_by_its_tag_and_pid() -> None:
    rule = site_rule(
        "oldpop",
        "oldpopd",
        r"User (?P<user>\S+) logged in",
        connect=r"Connect from (?P<ip>\S+)",
        end=r"Bye .*",
    )
    parser = LineParser((rule,), TimestampParser(NOW_TIME, UTC))
    found = parser.logins(
        f"{stamp(40)} mail oldpopd[9]: Connect from 192.0.2.50\n"
        f"{stamp(39)} mail oldpopd[9]: User bob logged in\n"
        f"{stamp(30)} mail oldpopd[9]: Connect from 192.0.2.51\n"
        f"{stamp(29)} mail oldpopd[9]: Bye now\n"
        f"{stamp(28)} mail oldpopd[9]: User eve logged in\n".encode()
    )
    assert [(login.server, login.user, login.address) for login in found] == [("oldpop", "bob", "192.0.2.50")]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("connect = 'Connect from (\\S+)'", "rule.oldpop: connect has no named group 'ip'"),
        (
            "connect = 'Connect from (?P<ip>\\S+) (?P<user>x)'",
            "rule.oldpop: connect has groups other than 'ip' and 'session': user",
        ),
        ("connect = 'Connect from (?P<ip>\\S+)(?=x)'", "rule.oldpop: connect "),
        ("connect = 'Connect from (?P<ip>\\S+'", "rule.oldpop: connect is not a valid regular expression"),
        (
            "connect = 'C (?P<ip>\\S+)'\nend = 'E (?P<ip>x)'",
            "rule.oldpop: end has groups other than 'session': ip",
        ),
        (
            "connect = '(?P<session>\\w+) C (?P<ip>\\S+)'",
            "rule.oldpop: connect and match must both have a group 'session', or neither",
        ),
        ("end = 'Bye'", "rule.oldpop: end is only read with connect"),
    ],
)
def test_a_bad_two_line_site_rule_exits_78_naming_its_key(tmp_path: Path, table: str, message: str) -> None:
    site = twoline_site(tmp_path, rule=f"match = 'User (?P<user>\\S+) logged in'\n{table}")
    result = site.run("check")
    assert result.exit_code == 78
    assert message in result.output


def test_a_two_line_match_that_names_an_address_exits_78(tmp_path: Path) -> None:
    site = twoline_site(
        tmp_path, rule="connect = 'C (?P<ip>\\S+)'\nmatch = 'User (?P<user>\\S+) from (?P<ip>\\S+)'"
    )
    result = site.run("check")
    assert result.exit_code == 78
    assert "rule.oldpop: match must not have a group 'ip' in a rule with connect" in result.output


# -- whole runs -------------------------------------------------------------------------


def twoline_site(root: Path, rule: str = "") -> Site:
    state = root / "state"
    log = root / "mail.log"
    log.touch()
    rule = rule or "connect = 'Connect from (?P<ip>\\S+)'\nmatch = 'User (?P<user>\\S+) logged in'"
    config = write_config(
        root,
        f"""\
state_dir = "{state}"
timeout = "30m"

[[source]]
path = "{log}"
server = ["popa3d", "gnu-pop3d", "vm-pop3d", "oldpop"]
timezone = "UTC"
hosts = ["mail"]

[[map]]
mta = "postfix"
path = "{state / "relay"}"
type = "texthash"

[rule.oldpop]
program = "oldpopd"
{rule}
""",
    )
    return Site(root, config, log, state, state / "relay")


def leases(site: Site, now: datetime) -> dict[str, str | None]:
    result = site.run("show", "--json", now=now.isoformat())
    assert result.exit_code == 0, result.output
    return {lease["ip"]: lease["user"] for lease in json.loads(result.output)["leases"]}


def line_at(time: datetime, text: str) -> str:
    return f"{time.isoformat()} mail {text}"


def test_a_connect_read_in_one_run_pairs_with_its_success_in_the_next(tmp_path: Path) -> None:
    site = twoline_site(tmp_path)
    first = NOW_TIME
    site.write_log(
        line_at(first - timedelta(seconds=5), "popa3d[100]: Session from 192.0.2.21"),
        line_at(first - timedelta(seconds=4), "pop3d[200]: connect from c.example (192.0.2.30)"),
        line_at(first - timedelta(seconds=3), "oldpopd[300]: Connect from 192.0.2.50"),
    )
    assert site.run("update", now=first.isoformat()).exit_code == 0
    assert leases(site, first) == {}
    saved = json.loads((site.state / "checkpoints.json").read_text())["sources"][str(site.log)]
    assert len(saved["connects"]["open"]) == 3
    second = first + timedelta(minutes=1)
    site.write_log(
        line_at(second - timedelta(seconds=5), "pop3d[200]: user `pcap': authentication failed"),
        line_at(second - timedelta(seconds=4), "popa3d[100]: Authentication passed for alice"),
        line_at(
            second - timedelta(seconds=3),
            "pop3d[200]: user `pcap' logged in with mailbox `/var/mail/pcap' (1 message)",
        ),
        line_at(second - timedelta(seconds=2), "oldpopd[300]: User carol logged in"),
        # No connect line of its own: nothing.
        line_at(second - timedelta(seconds=1), "popa3d[101]: Authentication passed for mallory"),
    )
    assert site.run("update", now=second.isoformat()).exit_code == 0
    assert leases(site, second) == {"192.0.2.21": "alice", "192.0.2.30": "pcap", "192.0.2.50": "carol"}
    assert (site.state / "relay").read_text().split() == [
        "192.0.2.21",
        "OK",
        "192.0.2.30",
        "OK",
        "192.0.2.50",
        "OK",
    ]


def test_a_session_across_a_rotation_is_granted(tmp_path: Path) -> None:
    site = twoline_site(tmp_path)
    first = NOW_TIME
    site.write_log(line_at(first - timedelta(seconds=5), "popa3d[100]: Session from 192.0.2.21"))
    assert site.run("update", now=first.isoformat()).exit_code == 0
    second = first + timedelta(minutes=1)
    # The success lands before the rotation, the run after it reads the rotated copy's tail.
    site.write_log(line_at(second - timedelta(seconds=30), "popa3d[100]: Authentication passed for alice"))
    site.log.rename(site.log.with_name("mail.log.1"))
    site.log.touch()
    site.write_log(line_at(second - timedelta(seconds=2), "vm-pop3d[7]: Connect from 192.0.2.40"))
    assert site.run("update", now=second.isoformat()).exit_code == 0
    third = second + timedelta(minutes=1)
    site.write_log(line_at(third - timedelta(seconds=2), "vm-pop3d[7]: User 'bob' logged in"))
    assert site.run("update", now=third.isoformat()).exit_code == 0
    assert leases(site, third) == {"192.0.2.21": "alice", "192.0.2.40": "bob"}


def test_a_broken_saved_state_pairs_nothing_and_the_run_goes_on(tmp_path: Path) -> None:
    site = twoline_site(tmp_path)
    site.write_log(line_at(NOW_TIME - timedelta(seconds=5), "popa3d[100]: Session from 192.0.2.21"))
    assert site.run("update").exit_code == 0
    path = site.state / "checkpoints.json"
    document = json.loads(path.read_text())
    document["sources"][str(site.log)]["connects"] = {
        "format": 1,
        "open": [["mail", "popa3d", "100", "x", 1]],
    }
    path.write_text(json.dumps(document))
    later = NOW_TIME + timedelta(minutes=1)
    site.write_log(line_at(later - timedelta(seconds=5), "popa3d[100]: Authentication passed for alice"))
    assert site.run("update", now=later.isoformat()).exit_code == 0
    assert leases(site, later) == {}


def test_check_lists_the_paired_logins(tmp_path: Path) -> None:
    site = twoline_site(tmp_path)
    site.write_log(
        line_at(NOW_TIME - timedelta(seconds=5), "popa3d[100]: Session from 192.0.2.21"),
        line_at(NOW_TIME - timedelta(seconds=4), "popa3d[100]: Authentication passed for alice"),
        line_at(NOW_TIME - timedelta(seconds=3), "popa3d[101]: Authentication passed for mallory"),
    )
    result = site.run("check", str(site.log))
    assert result.exit_code == 0, result.output
    assert "popa3d alice 192.0.2.21" in result.output
    assert "mallory" not in result.output
    assert (
        "not granted, no connect line of the same process before it (two-line rules): 1 login line"
        in result.output
    )
    assert "would grant: 192.0.2.21" in result.output


# -- mailutils' session ID ---------------------------------------------------------------


def test_gnu_pop3d_pairs_the_listeners_connect_with_the_childs_login_by_session_id() -> None:
    assert logins(
        f"{stamp(30)} mail pop3d[400]: 2B6KsgFP Connect from 192.0.2.31",
        f"{stamp(30)} mail pop3d[400]: 2B6KsgFQ Connect from 192.0.2.32",
        f"{stamp(29)} mail pop3d[402]: 2B6KsgFQ user `bob': authentication failed",
        f"{stamp(29)} mail pop3d[401]: 2B6KsgFP user `alice' logged in with mailbox `/var/mail/alice' (2 messages)",
        f"{stamp(28)} mail pop3d[402]: 2B6KsgFQ user `bob' logged in with mailbox `/var/mail/bob' (1 message)",
        # Its session already granted; another ID never pairs.
        f"{stamp(27)} mail pop3d[401]: 2B6KsgFP user `eve' logged in with mailbox `/var/mail/eve' (1 message)",
        f"{stamp(27)} mail pop3d[403]: 2B6KsgFZ user `eve' logged in with mailbox `/var/mail/eve' (1 message)",
    ) == [("gnu-pop3d", "alice", "192.0.2.31"), ("gnu-pop3d", "bob", "192.0.2.32")]


def test_a_login_with_a_session_id_never_pairs_by_its_pid() -> None:
    # PID 401 once served a tcpd session; a daemon's child reusing it lends nothing.
    assert (
        logins(
            f"{stamp(60)} mail pop3d[401]: connect from 192.0.2.66",
            f"{stamp(29)} mail pop3d[401]: 2B6KsgFP user `alice' logged in with mailbox `/var/mail/alice' (2 messages)",
        )
        == []
    )
    # A session that ended (`session ended for ...`) lends nothing.
    assert (
        logins(
            f"{stamp(30)} mail pop3d[400]: 2B6KsgFP Connect from 192.0.2.31",
            f"{stamp(29)} mail pop3d[401]: 2B6KsgFP session ended for no user",
            f"{stamp(28)} mail pop3d[401]: 2B6KsgFP user `alice' logged in with mailbox `/var/mail/alice' (2 messages)",
        )
        == []
    )


def test_a_session_id_survives_the_saved_state() -> None:
    rules = (BUILTIN_RULES["gnu-pop3d"],)
    parser = LineParser(rules, TimestampParser(NOW_TIME, UTC))
    parser.logins(f"{stamp(30)} mail pop3d[400]: 2B6KsgFP Connect from 192.0.2.31\n".encode())
    assert parser.pairings is not None
    state = json.loads(json.dumps(parser.pairings.to_json(NOW_TIME)))
    assert logins(
        f"{stamp(20)} mail pop3d[401]: 2B6KsgFP user `alice' logged in with mailbox `/var/mail/alice' (2 messages)",
        state=state,
    ) == [("gnu-pop3d", "alice", "192.0.2.31")]


def test_a_site_rule_may_pair_by_a_session_token() -> None:
    rule = site_rule(
        "tokpop",
        "tokpopd",
        r"\[(?P<session>\w+)\] login (?P<user>\S+)",
        connect=r"\[(?P<session>\w+)\] accepted (?P<ip>\S+)",
    )
    parser = LineParser((rule,), TimestampParser(NOW_TIME, UTC))
    found = parser.logins(
        f"{stamp(40)} mail tokpopd[1]: [s1] accepted 192.0.2.50\n"
        f"{stamp(39)} mail tokpopd[2]: [s2] login eve\n"
        f"{stamp(38)} mail tokpopd[3]: [s1] login bob\n".encode()
    )
    assert [(login.user, login.address) for login in found] == [("bob", "192.0.2.50")]


def test_whole_runs_give_interleaved_sessions_their_own_address_and_never_a_reused_or_forged_one(
    tmp_path: Path,
) -> None:
    site = twoline_site(tmp_path)
    first = NOW_TIME
    site.write_log(
        line_at(first - timedelta(seconds=9), "popa3d[100]: Session from 192.0.2.21"),
        line_at(first - timedelta(seconds=8), "popa3d[101]: connect from b.example (192.0.2.22)"),
        line_at(first - timedelta(seconds=7), "popa3d[102]: Session from 192.0.2.66"),
    )
    assert site.run("update", now=first.isoformat()).exit_code == 0
    second = first + timedelta(minutes=1)
    site.write_log(
        line_at(second - timedelta(seconds=9), "popa3d[101]: Authentication passed for bob"),
        line_at(second - timedelta(seconds=8), "popa3d[100]: Authentication passed for alice"),
        # PID 102's session ends in failure; the PID, handed out again, logs no address.
        line_at(second - timedelta(seconds=7), "popa3d[102]: Authentication failed for mallory"),
        line_at(second - timedelta(seconds=6), "popa3d[102]: Authentication passed for mallory"),
        # A success under another tag (anyone can `logger -t vm-pop3d`) pairs with nothing.
        line_at(second - timedelta(seconds=5), "popa3d[103]: Session from 192.0.2.77"),
        line_at(second - timedelta(seconds=4), "vm-pop3d[103]: User 'mallory' logged in"),
    )
    assert site.run("update", now=second.isoformat()).exit_code == 0
    assert leases(site, second) == {"192.0.2.21": "alice", "192.0.2.22": "bob"}


TOKEN_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["pid:5", "pid:6", "sid:2B6KsgFP", "sid:2B6KsgFQ"]),
        st.sampled_from(["connect", "success", "end"]),
        st.sampled_from(["5", "6", "7"]),  # the PID a tokened line is logged under
        st.integers(min_value=0, max_value=9),
        st.integers(min_value=0, max_value=400),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(TOKEN_EVENTS)
def test_no_gnu_pop3d_grant_crosses_a_pid_or_a_session_id(
    events: list[tuple[str, str, str, int, int]],
) -> None:
    """tcpd's connect lines (keyed by PID) and a daemon's session-ID lines
    (logged under any PID) interleaved: a grant's address is the last connect
    of its own key, with no end, success or connect of that key between."""
    start = NOW_TIME - timedelta(seconds=1800)
    elapsed = 0
    lines = []
    for key, kind, child, n, step in events:
        elapsed += step
        time = start + timedelta(seconds=elapsed)
        kind_of_key, value = key.split(":")
        if kind_of_key == "pid":
            pid, prefix, octet = value, "", value
        else:
            pid, prefix, octet = child, f"{value} ", "9" if value.endswith("P") else "8"
        address = f"10.{octet}.0.{n}"
        message = {
            "connect": f"connect from {address}"
            if kind_of_key == "pid"
            else f"{prefix}Connect from {address}",
            "success": f"{prefix}user `u{n}' logged in with mailbox `/var/mail/u{n}' (1 message)",
            "end": f"{prefix}session ended for no user",
        }[kind]
        lines.append((key, kind, address, time, f"{time.isoformat()} mail pop3d[{pid}]: {message}"))
    parser = LineParser((BUILTIN_RULES["gnu-pop3d"],), TimestampParser(NOW_TIME, UTC))
    for index, (key, kind, _, time, line) in enumerate(lines):
        login = parser.parse(line.encode())
        if login is None:
            continue
        assert kind == "success"
        # The lines of the same key before it; a tokened line's PID also ends that PID's
        # session, so an untokened success pairs only when no line of its PID came between.
        own = [earlier for earlier in lines[:index] if earlier[0] == key]
        assert own and own[-1][1] == "connect"
        assert login.address == own[-1][2]
        assert (time - own[-1][3]).total_seconds() <= MAX_SESSION_SECONDS


def test_another_hosts_connect_lines_take_no_room_from_this_hosts_sessions() -> None:
    flood = [
        f"{stamp(40)} other popa3d[{pid}]: Session from 198.51.100.1" for pid in range(MAX_OPEN_SESSIONS + 10)
    ]
    assert logins(
        f"{stamp(50)} mail popa3d[7]: Session from 192.0.2.21",
        *flood,
        f"{stamp(30)} mail popa3d[7]: Authentication passed for pcap",
        hosts=frozenset({"mail"}),
    ) == [("popa3d", "pcap", "192.0.2.21")]
