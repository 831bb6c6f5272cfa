"""`exactcron report`: who relies on POP-before-SMTP, from the audit trail and Postfix's log.

Through the real CLI: leases granted by real `update` runs, then Postfix
smtpd lines (the forms Postfix writes: smtpd.c's `client=NAME[ADDR]` and
smtpd_sasl_proto.c's `, sasl_method=..., sasl_username=...`) joined to
them; a generated month (rotated, gzip-compressed) checked against a simple
reference that holds everything in memory; the join checked against the
same reference on any sequence of events and messages (hypothesis).
"""

from __future__ import annotations

import gzip
import json
import os
import pwd
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exactcron.cli import main
from exactcron.outputs.audit import line as audit_line
from exactcron.outputs.audit import utc_stamp
from exactcron.outputs.relay_report import (
    SLACK,
    AuditEvent,
    Message,
    build_report,
    parse_audit_line,
    parse_smtpd_line,
)
from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.report_month import NOW as MONTH_NOW
from tests.support.report_month import write_month_site
from tests.support.runner import invoke
from tests.support.site import Site
from tests.support.users import nobody_site, run_as, run_as_nobody

STAMP = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)


def smtpd(time: str, address: str, sasl: str | None = None, queue: str = "4B80DE08044") -> str:
    line = f"{time} mx postfix/smtpd[15802]: {queue}: client=client.example[{address}]"
    return line + (f", sasl_method=PLAIN, sasl_username={sasl}" if sasl else "")


def report(site: Site, *args: str, now: str = NOW) -> dict:
    result = site.run("report", "--json", *args, now=now)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.fixture
def privileged_site() -> Iterator[Path]:
    """The least-privilege set-up of test_privilege: `nobody` owns the state."""
    with nobody_site("exactcron-privilege-") as root:
        yield root


@pytest.fixture
def audited(site: Site) -> Site:
    text = site.config.read_text().replace(
        "timeout", f'log_file = "{site.root / "exactcron.log"}"\ntimeout', 1
    )
    site.config.write_text(text)
    return site


# -- the lines Postfix writes ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mx postfix/smtpd[1]: 4B80DE08044: client=a.example[192.0.2.44]", ("192.0.2.44", None)),
        ("mx postfix/smtpd[1]: NOQUEUE: client=unknown[192.0.2.44]", ("192.0.2.44", None)),
        (
            "raptor postfix/smtpd[15802]: 4B80DE08044: client=stegosaurus.dinos.test[192.168.4.150], "
            "sasl_method=PLAIN, sasl_username=triceratops",
            ("192.168.4.150", "triceratops"),
        ),
        (
            "mx postfix/submission/smtpd[9]: 4XYZbc0vYHz9sSt: client=a.example[2001:DB8::1]:50122, "
            "sasl_method=LOGIN, sasl_username=Alice@Example.org, sasl_sender=alice@example.org",
            ("2001:db8::1", "Alice@Example.org"),
        ),
        ("mx postfix-out/smtpd[9]: 4B8: client=a.example[::ffff:192.0.2.7]", ("192.0.2.7", None)),
        # A content filter's re-injection of a message already counted.
        (
            "mx postfix/smtpd[9]: 4B9: client=localhost[127.0.0.1], orig_queue_id=4B8, orig_client=a[192.0.2.7]",
            None,
        ),
        ("mx postfix/smtpd[9]: connect from a.example[192.0.2.7]", None),
        ("mx postfix/smtp[9]: 4B8: to=<a@example.com>, relay=b[192.0.2.9]:25, status=sent", None),
        ("mx evil[9]: 4B8: client=a.example[192.0.2.7]", None),
        (
            "mx postfix/smtpd[9]: 4B8: client=a.example[192.0.2.7], sasl_username=x, junk",
            ("192.0.2.7", "x, junk"),
        ),
        ("mx postfix/smtpd[9]: 4B8: client=a.example[not-an-address]", None),
        ("mx postfix/smtpd[9]: 4B8: client=a.example[192.0.2.7] trailing", None),
    ],
)
def test_smtpd_client_lines_are_read_as_postfix_writes_them(text: str, expected: tuple | None) -> None:
    message = parse_smtpd_line(text, STAMP)
    assert (None if message is None else (message.address, message.sasl_user)) == expected


def test_audit_lines_are_read_back_as_the_trail_writes_them() -> None:
    until = STAMP + timedelta(minutes=30)
    hostile = 'bad" user=root until=2099-01-01T00:00:00Z\nx'
    written = audit_line(
        STAMP, "grant", "192.0.2.1", user=hostile, until=utc_stamp(until), source="/var/log/m"
    )
    assert parse_audit_line(written) == AuditEvent(STAMP, "grant", "192.0.2.1", hostile, until)
    refused = "2026-11-25T17:00:00Z refuse 100.64.0.9 user=alice reason=shared source=/var/log/mail.log"
    assert parse_audit_line(refused) == AuditEvent(STAMP, "refuse", "100.64.0.9", "alice", None, "shared")
    assert parse_audit_line("2026-11-25T17:00:00Z exactcron[4242]: ERROR: cannot read log") is None
    assert parse_audit_line("2026-11-25T17:00:00Z grant 192.0.2.1 user=a until=2026-13-45T00:00:00Z") is None


# -- through the CLI, leases granted by real update runs ----------------------------


def test_a_message_relayed_through_a_lease_and_one_with_smtp_auth_are_told_apart(
    audited: Site, tmp_path: Path
) -> None:
    audited.write_log(
        dovecot_login("192.0.2.10", "alice", "2026-11-25T17:00:00+00:00"),
        dovecot_login("192.0.2.20", "bob@example.org", "2026-11-25T17:00:00+00:00"),
    )
    assert audited.run("update", now="2026-11-25T17:00:30+00:00").exit_code == 0
    assert audited.run("flush", "192.0.2.10", now="2026-11-25T17:20:00+00:00").exit_code == 0
    assert audited.run("update", now="2026-11-25T17:31:00+00:00").exit_code == 0
    postfix = tmp_path / "postfix.log"
    postfix.write_text(
        "\n".join(
            [
                # Before the run that granted it: Postfix did not relay for the lease yet.
                smtpd("2026-11-25T17:00:10+00:00", "192.0.2.10"),
                smtpd("2026-11-25T17:05:00+00:00", "192.0.2.10"),
                smtpd("2026-11-25T17:06:00+00:00", "192.0.2.10", queue="4B80DE08045"),
                # After the flush: not through the lease.
                smtpd("2026-11-25T17:21:00+00:00", "192.0.2.10"),
                # bob: one through his lease, one with SMTP AUTH from it, one with SMTP AUTH from home.
                smtpd("2026-11-25T17:10:00+00:00", "192.0.2.20"),
                smtpd("2026-11-25T17:11:00+00:00", "192.0.2.20", sasl="Bob@Example.org"),
                smtpd("2026-11-25T17:40:00+00:00", "198.51.100.9", sasl="bob@example.org"),
                # Inbound mail from elsewhere.
                smtpd("2026-11-25T17:12:00+00:00", "203.0.113.5"),
            ]
        )
        + "\n"
    )
    document = report(audited, "--mta-log", str(postfix))
    users = {user["user"]: user for user in document["users"]}
    assert [user["user"] for user in document["users"]] == ["alice", "bob@example.org"]
    assert users["alice"] | {"first": None, "last": None} == {
        "user": "alice",
        "logins": 1,
        "addresses": 1,
        "first": None,
        "last": None,
        "refused": {},
        "relayed": 2,
        "sasl_from_lease": 0,
        "sasl_messages": 0,
        "smtp_auth": False,
    }
    assert users["alice"]["first"] == "2026-11-25T17:00:30+00:00"
    assert (users["bob@example.org"]["relayed"], users["bob@example.org"]["sasl_from_lease"]) == (1, 1)
    assert (users["bob@example.org"]["sasl_messages"], users["bob@example.org"]["smtp_auth"]) == (2, True)
    assert document["totals"] | {} == {
        "users": 2,
        "logins": 2,
        "refused": 0,
        "messages": 8,
        "relayed": 3,
        "sasl_from_lease": 1,
        "sasl": 2,
    }
    table = audited.run("report", "--mta-log", str(postfix), now=NOW)
    assert table.exit_code == 0
    rows = [line.split() for line in table.output.splitlines()]
    assert rows[1][:3] == ["USER", "LOGINS", "ADDRESSES"]
    assert [row[0] for row in rows[2:4]] == ["alice", "bob@example.org"]
    assert "3 relayed through a lease" in table.output


def test_without_an_mta_log_the_trail_alone_is_reported_with_refusals(audited: Site) -> None:
    trail = audited.root / "exactcron.log"
    trail.write_text(
        audit_line(STAMP, "grant", "192.0.2.1", user="carol", until=utc_stamp(STAMP + timedelta(minutes=30)))
        + "\n"
        + audit_line(STAMP, "refuse", "100.64.0.1", user="carol", reason="shared")
        + "\n"
        + audit_line(STAMP, "refuse", "192.0.2.9", user="mallory", reason="max-addresses")
        + "\n"
        # Older than --since: not counted.
        + audit_line(
            STAMP - timedelta(days=8), "grant", "192.0.2.2", user="dave", until="2026-11-17T17:30:00Z"
        )
        + "\n"
    )
    document = report(audited, "--since", "7d")
    assert [(user["user"], user["logins"], user["refused"]) for user in document["users"]] == [
        ("carol", 1, {"shared": 1}),
        ("mallory", 0, {"max-addresses": 1}),
    ]
    assert document["users"][0]["relayed"] is None and document["mta_logs"] is None


def write_rotated_copy(log: Path, number: int, text: str) -> None:
    """`text` as logrotate leaves copy `number` of `log`: 0 the log itself, 1 plain, older ones gzipped."""
    if number == 0:
        log.write_text(text)
    elif number == 1:
        log.with_name(f"{log.name}.1").write_text(text)
    else:
        log.with_name(f"{log.name}.{number}.gz").write_bytes(gzip.compress(text.encode()))


def test_rotated_and_compressed_copies_of_both_logs_are_read_in_order(audited: Site, tmp_path: Path) -> None:
    trail = audited.root / "exactcron.log"
    day = timedelta(days=1)
    for number, when in ((2, STAMP - 2 * day), (1, STAMP - day), (0, STAMP)):
        text = audit_line(
            when, "grant", "192.0.2.1", user="erin", until=utc_stamp(when + timedelta(minutes=30))
        )
        text += "\n" + audit_line(when + timedelta(minutes=31), "expire", "192.0.2.1", user="erin") + "\n"
        write_rotated_copy(trail, number, text)
    postfix = tmp_path / "mail.log"
    for number, when in ((2, STAMP - 2 * day), (1, STAMP - day), (0, STAMP)):
        text = smtpd((when + timedelta(minutes=5)).isoformat(), "192.0.2.1") + "\n"
        text += smtpd((when + timedelta(minutes=45)).isoformat(), "192.0.2.1") + "\n"
        write_rotated_copy(postfix, number, text)
    document = report(audited, "--mta-log", str(postfix))
    assert [(user["user"], user["logins"], user["relayed"]) for user in document["users"]] == [("erin", 3, 3)]
    assert document["totals"]["messages"] == 6


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        (["--since", "soon"], 2, "--since"),
        (["--mta-log", "/nonexistent/mail.log"], 66, "cannot read log /nonexistent/mail.log"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    audited: Site, arguments: list[str], code: int, words: str
) -> None:
    result = invoke(main, ["--config", str(audited.config), "--now", NOW, "report", *arguments])
    assert result.exit_code == code
    assert words in result.output
    assert "Traceback" not in result.output


def test_without_log_file_there_is_no_trail_to_report_on(site: Site) -> None:
    result = site.run("report")
    assert result.exit_code == 78
    assert "log_file" in result.output


# -- the join, against a reference that keeps everything ---------------------------


def reference(events: list[AuditEvent], messages: list[Message], since: datetime, until: datetime) -> dict:
    """Every lease interval in memory, every message looked up among them."""
    intervals: dict[str, list[tuple[datetime, datetime, str | None]]] = {}
    open_: dict[str, list] = {}
    for event in events:
        if event.kind in ("grant", "extend"):
            current = open_.get(event.subject)
            assert event.until is not None
            if (
                current
                and current[1] >= event.time
                and current[2].casefold() == (event.user or "").casefold()
            ):
                current[1] = event.until
                continue
            if current and current[1] >= event.time:
                current[1] = event.time
            open_[event.subject] = [event.time, event.until, event.user]
            intervals.setdefault(event.subject, []).append(open_[event.subject])
        elif event.kind in ("expire", "flush") and event.subject in open_:
            current = open_.pop(event.subject)
            current[1] = max(min(current[1], event.time), current[0])
    relayed: Counter[str] = Counter()
    sasl_from_lease: Counter[str] = Counter()
    sasl: Counter[str] = Counter()
    logins: Counter[str] = Counter()
    for event in events:
        if event.kind in ("grant", "extend") and since <= event.time <= until:
            logins[(event.user or "").casefold()] += 1
    for message in messages:
        if not since <= message.time <= until:
            continue
        if message.sasl_user:
            sasl[message.sasl_user.casefold()] += 1
        held = [one for one in intervals.get(message.address, []) if one[0] <= message.time <= one[1]]
        if held:
            user = (held[-1][2] or "").casefold()
            (sasl_from_lease if message.sasl_user else relayed)[user] += 1
    return {
        "relayed": relayed,
        "sasl_from_lease": sasl_from_lease,
        "sasl": {user: sasl[user] for user in logins},
        "logins": logins,
    }


def summed(report_: object) -> dict:
    users = report_.users  # type: ignore[attr-defined]
    return {
        "relayed": Counter({u.user.casefold(): u.relayed for u in users if u.relayed}),
        "sasl_from_lease": Counter(
            {u.user.casefold(): u.sasl_from_lease for u in users if u.sasl_from_lease}
        ),
        "sasl": {u.user.casefold(): u.sasl_messages for u in users if u.logins},
        "logins": Counter({u.user.casefold(): u.logins for u in users if u.logins}),
    }


@st.composite
def timelines(draw: st.DrawFn) -> tuple[list[AuditEvent], list[Message]]:
    """Events and messages on a few addresses and users, each stream in time order,
    each message at most SLACK before the events already applied (a log slightly out of order)."""
    addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    users = ["alice", "Bob", "bob", "carol"]
    events: list[AuditEvent] = []
    messages: list[Message] = []
    clock = STAMP
    for _ in range(draw(st.integers(0, 40))):
        clock += timedelta(seconds=draw(st.integers(0, 1200)))
        kind = draw(st.sampled_from(["grant", "extend", "expire", "flush", "message", "message", "message"]))
        address = draw(st.sampled_from(addresses))
        if kind == "message":
            messages.append(Message(clock, address, draw(st.sampled_from([None, None, "alice", "BOB"]))))
        else:
            until = clock + timedelta(seconds=draw(st.integers(60, 3600)))
            events.append(AuditEvent(clock, kind, address, draw(st.sampled_from(users)), until))
    return events, messages


@given(timelines())
def test_the_streaming_join_counts_what_a_join_holding_everything_counts(
    timeline: tuple[list[AuditEvent], list[Message]],
) -> None:
    events, messages = timeline
    since, until = STAMP, STAMP + timedelta(days=2)
    got = summed(build_report(events, messages, since, until))
    expected = reference(events, messages, since, until)
    assert got["relayed"] == +expected["relayed"]
    assert got["sasl_from_lease"] == +expected["sasl_from_lease"]
    assert got["logins"] == +expected["logins"]
    assert got["sasl"] == expected["sasl"]


# -- a generated month --------------------------------------------------------------

MONTH_USERS = int(os.environ.get("EXACTCRON_REPORT_USERS", "1000"))
MONTH_LINES = int(os.environ.get("EXACTCRON_REPORT_LINES", "100000"))


@pytest.fixture(scope="session")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report-month")
    write_month_site(folder, MONTH_USERS, MONTH_LINES)
    return folder


def _read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as stream:  # type: ignore[operator]
        return stream.read().splitlines()


def _history(live: Path) -> list[Path]:
    copies = sorted(
        (path for path in live.parent.iterdir() if path.name.startswith(live.name + ".")),
        key=lambda path: int(path.name.split(".")[2]),
        reverse=True,
    )
    return [*copies, live]


_CLIENT = re.compile(
    r"(\w{3} [ \d]\d \d\d:\d\d:\d\d) mx postfix/(?:submission/)?smtpd\[\d+\]: \w+: client=[^\[]*\[([^\]]+)\](?:, sasl_method=\w+, sasl_username=(\S+))?$"
)


def test_a_generated_month_gives_the_counts_a_reference_recomputes(month: Path) -> None:
    events = [
        event
        for path in _history(month / "exactcron.log")
        for text in _read(path)
        if (event := _reference_event(text)) is not None
    ]
    messages = []
    for path in _history(month / "mail.log"):
        for text in _read(path):
            found = _CLIENT.match(text)
            if found:
                stamp = datetime.strptime(f"2026 {found.group(1)}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)
                messages.append(Message(stamp, found.group(2), found.group(3)))
    assert len(messages) == MONTH_LINES // 5
    since = MONTH_NOW - timedelta(days=30)
    expected = reference(events, messages, since, MONTH_NOW)
    result = invoke(
        main,
        [
            *("--config", str(month / "exactcron.toml"), "--now", MONTH_NOW.isoformat()),
            *("report", "--json", "--mta-log", str(month / "mail.log")),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    users = {user["user"].casefold(): user for user in document["users"]}
    assert {name: user["relayed"] for name, user in users.items() if user["relayed"]} == dict(
        +expected["relayed"]
    )
    assert {name: user["sasl_from_lease"] for name, user in users.items() if user["sasl_from_lease"]} == dict(
        +expected["sasl_from_lease"]
    )
    assert {name: user["logins"] for name, user in users.items() if user["logins"]} == dict(
        +expected["logins"]
    )
    assert {name: user["sasl_messages"] for name, user in users.items() if user["logins"]} == expected["sasl"]
    assert document["totals"]["messages"] == sum(since <= message.time <= MONTH_NOW for message in messages)
    assert document["totals"]["relayed"] == sum(expected["relayed"].values()) > MONTH_LINES // 20
    assert document["totals"]["sasl_from_lease"] == sum(expected["sasl_from_lease"].values()) > 0
    # Sorted by messages relayed through a lease, most first.
    relayed = [user["relayed"] for user in document["users"]]
    assert relayed == sorted(relayed, reverse=True)
    # Rotated and compressed copies were all read: the first login is in the oldest copy.
    assert (
        min(user["first"] for user in document["users"] if user["first"])
        < (since + timedelta(days=2)).isoformat()
    )
    assert SLACK  # the join's slack is the only state kept past a lease's end


def _reference_event(text: str) -> AuditEvent | None:
    words = text.split(" ")
    if len(words) < 3 or words[1] not in ("grant", "extend", "expire", "flush", "refuse"):
        return None
    fields = dict(word.split("=", 1) for word in words[3:] if "=" in word)
    stamp = datetime.strptime(words[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    until = (
        datetime.strptime(fields["until"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if "until" in fields
        else None
    )
    return AuditEvent(stamp, words[1], words[2], fields.get("user"), until, fields.get("reason"))


# -- started as root --------------------------------------------------------------


def test_root_reports_on_a_log_only_root_can_read_and_runs_as_the_owner_of_state_dir(
    privileged_site: Path,
) -> None:
    state = privileged_site / "state"
    config = privileged_site / "exactcron.toml"
    lines = config.read_text().splitlines()
    config.write_text("\n".join([lines[0], f'log_file = "{state / "exactcron.log"}"', *lines[1:]]) + "\n")
    trail = state / "exactcron.log"
    trail.write_text(
        audit_line(STAMP, "grant", "192.0.2.10", user="alice", until="2026-11-25T17:30:00Z") + "\n"
    )
    nobody = pwd.getpwnam("nobody")
    os.chown(trail, nobody.pw_uid, nobody.pw_gid)
    trail.chmod(0o640)
    postfix = privileged_site / "postfix.log"
    postfix.write_text(smtpd("2026-11-25T17:05:00+00:00", "192.0.2.10") + "\n")
    postfix.chmod(0o600)
    done = run_as(privileged_site, None, "report", "--json", "--mta-log", str(postfix))
    assert (done.returncode, done.stderr) == (0, "")
    assert [(user["user"], user["relayed"]) for user in json.loads(done.stdout)["users"]] == [("alice", 1)]
    # Nothing was created or written as root: the log_file the run appended to is still the owner's.
    assert {path.stat().st_uid for path in state.iterdir()} <= {nobody.pw_uid}
    # The service account itself cannot read root's log: one line, exit 66.
    refused = run_as_nobody(privileged_site, "report", "--mta-log", str(postfix))
    assert refused.returncode == 66
    assert refused.stderr.strip().splitlines() == [f"exactcron: cannot read log {postfix}: permission denied"]


# -- hostile input ------------------------------------------------------------------


@given(st.text(max_size=300))
def test_no_text_makes_either_parser_raise(text: str) -> None:
    parse_smtpd_line(text, STAMP)
    parse_audit_line(text)
    parse_smtpd_line("mx postfix/smtpd[1]: 4B: client=a[192.0.2.1]" + text, STAMP)
    parse_audit_line("2026-11-25T17:00:00Z grant 192.0.2.1 user=" + text)


def test_garbage_an_endless_line_and_a_planted_link_change_nothing_but_themselves(
    audited: Site, tmp_path: Path
) -> None:
    trail = audited.root / "exactcron.log"
    grant = audit_line(STAMP, "grant", "192.0.2.1", user="alice", until="2026-11-25T17:30:00Z")
    trail.write_bytes(
        b"\x00\xff garbage\n" + grant.encode() + b"\n" + b"2026-11-25T17:00:01Z grant " + b"x" * 100_000
    )
    postfix = tmp_path / "mail.log"
    good = smtpd("2026-11-25T17:05:00+00:00", "192.0.2.1").encode()
    postfix.write_bytes(b"\xc3\x28 \x00 client=[\n" + good + b"\n" + b"A" * 3_000_000 + b"\n" + good + b"\n")
    # A rotated name planted as a link to a file the reader must not read as a copy.
    secret = tmp_path / "secret"
    secret.write_text(smtpd("2026-11-25T17:06:00+00:00", "192.0.2.1") + "\n")
    (tmp_path / "mail.log.1").symlink_to(secret)
    result = audited.run("report", "--json", "--mta-log", str(postfix), now=NOW)
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert [(user["user"], user["relayed"]) for user in document["users"]] == [("alice", 2)]


def test_the_guards_refusals_are_reported_per_user_and_reason(audited: Site) -> None:
    audited.write_log(
        *(
            dovecot_login(f"192.0.2.{number}", "mallory", f"2026-11-25T17:{number:02d}:00+00:00")
            for number in range(1, 12)
        ),
        dovecot_login("198.51.100.1", "alice", "2026-11-25T17:11:30+00:00"),
    )
    assert audited.run("update", now="2026-11-25T17:12:00+00:00").exit_code == 0
    document = report(audited)
    assert [
        (user["user"], user["logins"], user["addresses"], user["refused"]) for user in document["users"]
    ] == [
        ("mallory", 10, 10, {"max-addresses": 1}),
        ("alice", 1, 1, {}),
    ]
    assert document["totals"]["refused"] == 1


@given(st.text(max_size=40), st.sampled_from(["grant", "extend", "refuse", "flush", "expire"]))
def test_any_user_name_the_trail_writes_is_read_back(user: str, kind: str) -> None:
    until = STAMP + timedelta(minutes=30)
    written = audit_line(STAMP, kind, "192.0.2.1", user=user, until=utc_stamp(until), reason="shared")
    assert "\n" not in written
    assert parse_audit_line(written) == AuditEvent(STAMP, kind, "192.0.2.1", user, until, "shared")
