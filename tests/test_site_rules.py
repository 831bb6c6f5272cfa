"""Site rules ([rule.NAME]) as fast and as safe as the built-in ones.

A site rule gets the needle a built-in rule has (the longest literal every
match holds, or the `needle` it is given), so lines without it are never
parsed. The pattern is matched in time linear in the line; what no linear
engine can do (backreferences, lookaround) is refused at load.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactcron.cli import main
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import LineParser
from exactcron.rules.rule import Rule
from exactcron.rules.site import site_rule
from exactcron.timestamps import TimestampParser
from tests.support.clock import NOW_TIME
from tests.support.runner import invoke

STAMP = "2026-11-25T17:50:10.250000+00:00 mail"


def _run_check(tmp_path: Path, rule: str, log: str) -> tuple[int, str]:
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[source]]\npath = "{tmp_path / "mail.log"}"\n'
        f'server = "mypopd"\ntimezone = "UTC"\nhosts = ["*"]\n[[map]]\nmta = "exim"\npath = "{tmp_path / "relay"}"\n\n'
        f"[rule.mypopd]\n{rule}\n",
        encoding="utf-8",
    )
    (tmp_path / "mail.log").write_text(log, encoding="utf-8")
    result = invoke(
        main,
        ["--config", str(config), "--now", NOW_TIME.isoformat(), "check", str(tmp_path / "mail.log")],
        catch_exceptions=False,
    )
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("match", "prefix"),
    [
        # Nested quantifiers made re backtrack without end; the linear engine takes them.
        (r"(?P<user>(\w+\s?)*) from (?P<ip>\S+)", ""),
        (r"OK (?:(?P<user>a+)+) from (?P<ip>\S+)", "OK "),
        (r"OK user=(?P<user>(?:[a-z]|\d+)*) from (?P<ip>\S+)", "OK user="),
    ],
)
def test_a_pattern_re_would_backtrack_on_is_matched_in_linear_time(
    tmp_path: Path, match: str, prefix: str
) -> None:
    hostile = prefix + "a" * 8000 + "!"  # the line within MAX_LINE_BYTES
    log = f"{STAMP} mypopd[7]: {hostile} from x\n{STAMP} mypopd[7]: {prefix}aaa from 192.0.2.5\n"
    code, output = _run_check(tmp_path, f"program = \"mypopd\"\nmatch = '{match}'", log)
    assert code == 0, output
    assert output.endswith("would grant: 192.0.2.5\n")


@pytest.mark.parametrize(
    ("match", "says"),
    [
        (r"OK user=(?P<user>\S+) (?P=user) from (?P<ip>\S+)", "backreference"),
        (r"OK user=(?P<user>\S+)(?= ) from (?P<ip>\S+)", "lookahead"),
        (r"OK user=(?>(?P<user>\S+)) from (?P<ip>\S+)", "atomic group"),
    ],
)
def test_what_no_linear_engine_can_match_exits_78(tmp_path: Path, match: str, says: str) -> None:
    code, output = _run_check(tmp_path, f"program = \"mypopd\"\nmatch = '{match}'", "")
    assert code == 78
    assert "rule.mypopd: match uses" in output
    assert says in output


@pytest.mark.parametrize(
    "match",
    [
        r"(?i)ok user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]",
        r"(?i:ok) (?i:USER)=(?P<user>\S+) from \[(?P<ip>[^]]+)\]",
        # Verbose: spaces and comments in the pattern are not text.
        r"(?xi) ok \  user= (?P<user>\S+)  \ from \ \[ (?P<ip>[^]]+) \]  # the address",
    ],
)
def test_a_site_rule_that_ignores_case_is_loaded_and_grants(tmp_path: Path, match: str) -> None:
    """A configuration with (?i) exited 78 after an upgrade, and granted nothing."""
    log = (
        f"{STAMP} mypopd[7]: Ok User=ann from [192.0.2.5]\n"
        f"{STAMP} mypopd[7]: ok user=bob from [192.0.2.6]\n"
        f"{STAMP} mypopd[7]: OK USER=eve from [192.0.2.7] and more\n"
    )
    code, output = _run_check(tmp_path, f"program = \"mypopd\"\nmatch = '{match}'", log)
    assert code == 0, output
    assert output.endswith("would grant: 192.0.2.5 192.0.2.6\n"), output


def test_a_bounded_repeat_around_a_quantifier_is_accepted(tmp_path: Path) -> None:
    match = r"OK user=(?P<user>\S+) from (?P<ip>(?:\d{1,3}\.){3}\d{1,3})"
    code, output = _run_check(
        tmp_path,
        f"program = \"mypopd\"\nmatch = '{match}'",
        f"{STAMP} mypopd[7]: OK user=ann from 192.0.2.5\n",
    )
    assert code == 0, output
    assert output.endswith("would grant: 192.0.2.5\n")


def test_a_site_rule_searches_for_its_longest_literal() -> None:
    rule = site_rule("mypopd", "mypopd", r"OK user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]$")
    assert rule.needles == (b"OK user=",)


def test_a_site_rule_with_no_literal_reads_every_line() -> None:
    rule = site_rule("mypopd", "mypopd", r"(?P<user>\S+) (?P<ip>\S+)")
    parser = LineParser((rule,), TimestampParser(NOW_TIME, UTC))
    login = parser.parse(f"{STAMP} mypopd[7]: ann 192.0.2.5".encode())
    assert login is not None and login.address == "192.0.2.5"


def test_the_needle_key_replaces_the_derived_literal(tmp_path: Path) -> None:
    log = f"{STAMP} mypopd[7]: GOOD user=ann from 192.0.2.5\n{STAMP} mypopd[7]: OK user=bob from 192.0.2.6\n"
    rule = "program = \"mypopd\"\nmatch = '(?:OK|GOOD) user=(?P<user>\\S+) from (?P<ip>\\S+)'\n"
    code, output = _run_check(tmp_path, rule, log)
    assert code == 0 and output.endswith("would grant: 192.0.2.5 192.0.2.6\n"), output
    # Told that every success holds `GOOD user=`, the rule never looks at other lines.
    code, output = _run_check(tmp_path, rule + 'needle = "GOOD user="\n', log)
    assert code == 0 and output.endswith("would grant: 192.0.2.5\n"), output


@pytest.mark.parametrize(
    "match",
    [
        # ASCII classes only: matched on the raw bytes.
        r"OK user=(?P<user>[^ ]+) from \[(?P<ip>[0-9a-f.:]+)\]",
        # \S is Unicode's over text: matched on the decoded line.
        r"OK user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]",
    ],
)
def test_a_site_rule_reads_the_same_whether_matched_on_bytes_or_text(match: str) -> None:
    parser = LineParser((site_rule("mypopd", "mypopd", match),), TimestampParser(NOW_TIME, UTC))
    login = parser.parse(f"{STAMP} mypopd[7]: OK user=jürgen from [2001:db8::5]".encode())
    assert login is not None
    assert (login.user, login.address) == ("jürgen", "2001:db8::5")
    assert login.time == datetime(2026, 11, 25, 17, 50, 10, 250000, tzinfo=UTC)
    assert parser.parse(f"{STAMP} mypopd[7]: OK user=eve from [2001:db8::5] extra".encode()) is None
    assert parser.parse(f"{STAMP} otherd[7]: OK user=ann from [192.0.2.5]".encode()) is None
    assert parser.parse(b"2026-13-25T17:50:10+00:00 mail mypopd[7]: OK user=ann from [192.0.2.5]") is None


REALISTIC = r"OK user=(?P<user>.*) from .*\[(?P<ip>[^]]+)\]"


def test_a_realistic_rule_grants_and_a_hostile_line_does_not_stop_the_run(tmp_path: Path) -> None:
    """re took 9.5 s on this one line; a log of such lines held the lock for hours."""
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[[source]]\npath = "{tmp_path / "mail.log"}"\n'
        f'server = "mypopd"\ntimezone = "UTC"\nhosts = ["*"]\n'
        f'[[map]]\nmta = "exim"\npath = "{tmp_path / "relay"}"\n\n'
        f"[rule.mypopd]\nprogram = \"mypopd\"\nmatch = '{REALISTIC}'\n",
        encoding="utf-8",
    )
    head = f"{STAMP} mypopd[7]: "
    hostile = head + "OK user=" + " from [x" * ((8192 - len(head) - 9) // 8)
    assert len(hostile.encode()) <= 8192  # longer lines are skipped unread
    lines = [hostile] * 40 + [head + "OK user=ann from mail.example [192.0.2.5]"]
    (tmp_path / "mail.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "exactcron", "--config", str(config), "--now", NOW_TIME.isoformat(), "update"],
        capture_output=True,
        text=True,
        timeout=120,  # re took over 6 minutes on these lines: a hang fails, not blocks
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "relay").read_text() == "192.0.2.5\n"


# -- a site rule beside a built-in rule on the same source ------------------------

_BESIDE_LINES = [
    f"{STAMP} dovecot[9]: imap-login: Login: user=<ann>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    f"{STAMP} dovecot[9]: pop3-login: Logged in: user=<bob>, method=PLAIN, rip=192.0.2.11, lip=192.0.2.1",
    f"{STAMP} mypopd[7]: OK user=carl from [192.0.2.12]",
    f"{STAMP} mypopd[7]: OK user=Login: from [192.0.2.13]",  # both kinds of needle on one line
    f"{STAMP} postfix/smtpd[3]: connect from OK user=x [192.0.2.14]",  # a needle, no login
    f"{STAMP} postfix/smtpd[3]: Logged in: nobody",
    f"{STAMP} cron[1]: nothing to see",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_BESIDE_LINES), max_size=12), st.booleans())
def test_a_block_with_needles_of_several_rules_reads_as_its_lines_one_by_one(
    lines: list[str], last_line_ends: bool
) -> None:
    """Needles that begin alike are one search, others searched apart: whichever
    finds a line first, each login line is read once, in log order."""
    rules = (
        BUILTIN_RULES["dovecot"],
        site_rule("mypopd", "mypopd", r"OK user=(?P<user>\S+) from \[(?P<ip>[^]]+)\]$"),
    )
    block = "\n".join(lines) + ("\n" if last_line_ends and lines else "")
    one_by_one = [login for line in lines if (login := _parser(rules).parse(line.encode())) is not None]
    assert _parser(rules).logins(block.encode()) == one_by_one


def _parser(rules: tuple[Rule, ...]) -> LineParser:
    return LineParser(rules, TimestampParser(NOW_TIME, UTC))
