"""Every line of every corpus file is a test case.

The corpus (tests/data/corpus/, copied from ../shared/corpus with its
SOURCES.md files) holds real log lines from public sources. A success line
grants exactly its own address; every other line grants nothing. All
built-in rules are on at once, so a line of one server that another
server's rule would take is caught too.

- peers/: the SOURCES.md tables say what each line is. `ok` and `ok-local`
  grant their address (the rule reads a local login like any other; keeping
  it out is the job of `ignore`), except a Dovecot login whose rip equals
  its lip (webmail on the server itself), which grants nothing. `ok-bare` lines have no syslog prefix, so
  they grant nothing as they stand and their address once a stamp and host
  are put before them. `ok-invalid-ip`, `fail`, `other`, `other-soap` grant
  nothing. zimbra.log is read by no rule (Zimbra's mailbox.log is not
  syslog), so its lines grant nothing either.
- lograptor/: dovecot.log holds six successes (SOURCES.md: four imap-login,
  two pop3-login), listed below; the other files hold none.
- fail2ban/: failed logins and rejections only, with `# failJSON` notes on
  the lines fail2ban must catch: no line grants anything.
- annotated/: each line carries its verdict above it, fail2ban-style:
  `# grants: ADDRESS` or `# grants: nothing (why)`, under the `# source:`
  it came from. `# prefix: TEXT` marks a line its source quoted without
  the stamp (and tag) in front: as quoted it grants nothing, with TEXT and
  a space before it, it grants what its note says. A file named
  `*.sessions.log` holds servers that log the address and the login on two
  lines (two-line rules): its lines are read in order by one parser, from
  the last `# source:` note on, and a line's verdict is what it grants
  after the lines above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest

from exactcron.model import Login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME

CORPUS = Path(__file__).parent / "data" / "corpus"
ZONE = UTC
GRANTING_KINDS = {"ok", "ok-local"}
KNOWN_KINDS = GRANTING_KINDS | {"ok-bare", "ok-invalid-ip", "fail", "other", "other-soap"}
# A stamp and host (and the tag, where the source left it out too) for the
# message-only (`ok-bare`) lines.
BARE_PREFIX = {"courier.log": "Nov 25 17:50:10 mail ", "cyrus.log": "Nov 25 17:50:10 mail imaps[4242]: "}

LOGRAPTOR_DOVECOT_SUCCESSES = {
    2: "192.168.0.1",
    3: "10.0.0.2",
    4: "192.168.190.12",
    6: "192.168.41.96",
    15: "192.168.19.178",
    17: "192.168.19.178",
}


@dataclass(frozen=True)
class Case:
    file: str
    number: int
    line: bytes
    kind: str
    address: str | None  # what the line grants; None: nothing
    # Read before it by the same parser (a `*.sessions.log` file's lines above it).
    before: tuple[bytes, ...] = ()


def _peer_table() -> dict[tuple[str, int], tuple[str, str]]:
    """(file, line) -> (kind, first word of the address column) from peers/SOURCES.md."""
    table: dict[tuple[str, int], tuple[str, str]] = {}
    current = None
    for text in (CORPUS / "peers" / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## (\S+\.log) ", text)
        if heading:
            current = heading.group(1)
            continue
        row = re.match(r"\| (\d+) \| ([a-z-]+) \| ([^|]*) \|", text)
        if row and current:
            address_column = row.group(3).strip()
            table[(current, int(row.group(1)))] = (row.group(2), address_column.split(" ")[0])
    return table


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _cases() -> list[Case]:
    cases = []
    table = _peer_table()
    for path in sorted((CORPUS / "peers").glob("*.log")):
        for number, line in enumerate(_lines(path), start=1):
            kind, address = table[(path.name, number)]
            assert kind in KNOWN_KINDS, f"{path.name}:{number}: unknown kind {kind}"
            grants = kind in GRANTING_KINDS and path.name != "zimbra.log"
            if kind == "ok-local" and path.name == "dovecot.log":
                grants = False  # rip == lip
            cases.append(Case(f"peers/{path.name}", number, line, kind, address if grants else None))
            if kind == "ok-bare":
                cases.append(
                    Case(
                        f"peers/{path.name}+stamp",
                        number,
                        BARE_PREFIX[path.name].encode() + line,
                        kind,
                        address,
                    )
                )
    for path in sorted((CORPUS / "lograptor").glob("*.log")):
        for number, line in enumerate(_lines(path), start=1):
            address = LOGRAPTOR_DOVECOT_SUCCESSES.get(number) if path.name == "dovecot.log" else None
            cases.append(Case(f"lograptor/{path.name}", number, line, "ok" if address else "other", address))
    for path in sorted((CORPUS / "fail2ban").glob("*.log")):
        for number, line in enumerate(_lines(path), start=1):
            cases.append(Case(f"fail2ban/{path.name}", number, line, "fail", None))
    for path in sorted((CORPUS / "annotated").glob("*.log")):
        cases.extend(_annotated_cases(path))
    return cases


def _annotated_cases(path: Path) -> list[Case]:
    cases = []
    source = grants = prefix = None
    sessions = path.name.endswith(".sessions.log")
    before: list[bytes] = []
    for number, line in enumerate(_lines(path), start=1):
        text = line.decode("utf-8")
        if text.startswith("# "):
            key, _, value = text[2:].partition(": ")
            assert key in ("source", "grants", "prefix"), f"{path.name}:{number}: unknown note {key}"
            if key == "source":
                source = value
                before = []
            elif key == "grants":
                grants = value
            else:
                prefix = value
            continue
        assert source and grants, f"{path.name}:{number}: a line without its source or verdict"
        address = None if grants.startswith("nothing") else grants
        kind = "ok" if address else "other"
        name = f"annotated/{path.name}"
        if sessions:
            assert prefix is None, f"{path.name}:{number}: a sessions file holds whole lines"
            cases.append(Case(name, number, line, kind, address, tuple(before)))
            before.append(line)
        elif prefix is None:
            cases.append(Case(name, number, line, kind, address))
        else:
            cases.append(Case(name, number, line, "ok-bare", None))
            cases.append(Case(f"{name}+prefix", number, f"{prefix} ".encode() + line, kind, address))
        grants = prefix = None  # every line carries its own verdict
    return cases


CASES = _cases()


def _parse(line: bytes, before: tuple[bytes, ...] = ()) -> Login | None:
    parser = LineParser(tuple(BUILTIN_RULES.values()), TimestampParser(NOW_TIME, ZONE))
    for earlier in before:
        parser.parse(earlier)
    return parser.parse(line)


@pytest.mark.parametrize("case", CASES, ids=[f"{case.file}:{case.number}" for case in CASES])
def test_corpus_line_grants_exactly_its_own_address(case: Case) -> None:
    login = _parse(case.line, case.before)
    granted = login.address if login else None
    assert granted == case.address, f"{case.kind} line: {case.line!r}"


def test_the_corpus_holds_what_its_sources_say() -> None:
    """A guard against a truncated copy: the counts SOURCES.md gives."""
    peers = {path.name: len(_lines(path)) for path in (CORPUS / "peers").glob("*.log")}
    assert peers == {
        "dovecot.log": 19,
        "courier.log": 22,
        "cyrus.log": 16,
        "uw-imap.log": 40,
        "qpopper.log": 5,
        "perdition.log": 2,
        "teapop.log": 1,
        "zimbra.log": 7,
        "misc.log": 5,
    }
    granting = [case for case in CASES if case.address is not None]
    # 12 of them in annotated/pop3d.sessions.log, 6 in solid-pop3d.log, 3 in vpopmail.log, 1 in vm-pop3d.log
    assert len(granting) == 85


@pytest.mark.parametrize(
    ("file", "server"),
    [
        ("peers/dovecot.log", "dovecot"),
        ("peers/courier.log", "courier"),
        ("peers/cyrus.log", "cyrus"),
        ("peers/uw-imap.log", "uw-imap"),
        ("peers/qpopper.log", "qpopper"),
        ("peers/teapop.log", "teapop"),
        ("lograptor/dovecot.log", "dovecot"),
    ],
)
def test_each_success_is_read_by_its_own_servers_rule(file: str, server: str) -> None:
    for case in CASES:
        if case.file == file and case.address is not None:
            login = _parse(case.line)
            assert login is not None and login.server == server


def test_misc_servers_are_read_by_their_rules() -> None:
    logins = [_parse(case.line) for case in CASES if case.file == "peers/misc.log" and case.address]
    assert [(login.server, login.user) for login in logins if login] == [
        ("gnu-pop3d", "shirwah"),
        ("qpopper", "tbarney"),
    ]
