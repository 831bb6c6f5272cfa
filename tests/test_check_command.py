"""`exactcron check LOGFILE`: the rule tester, with its exact output. It touches no state."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from exactcron.cli import FORGEABLE_WARNING, main
from exactcron.commands.check import check_log, looks_like_login
from exactcron.rules.builtin import BUILTIN_RULES
from exactcron.rules.parser import MAX_LINE_BYTES
from exactcron.timestamps import TimestampParser, parse_instant
from tests.support.clock import NOW
from tests.support.lines import dovecot_login
from tests.support.runner import invoke

LOG = """\
Nov 25 17:50:10 mail dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=1
Nov 25 17:51:10 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 2 secs): user=<mallory>, method=PLAIN, rip=192.0.2.66, lip=192.0.2.1
Nov 25 17:52:10 mail imapd-ssl: LOGIN, user=bob, ip=[::ffff:192.0.2.20], port=[4242], protocol=IMAP
Nov 25 17:53:10 mail mypopd[9]: user carol logged in from 192.0.2.30
Nov 25 16:00:00 mail dovecot: imap-login: Login: user=<dave>, method=PLAIN, rip=192.0.2.40, lip=192.0.2.1
Nov 25 17:54:10 mail dovecot: imap-login: Login: user=<web>, method=PLAIN, rip=127.0.0.1, lip=192.0.2.1
"""


def run(*args: str, config: Path | None = None, input: bytes | None = None) -> tuple[int, str]:
    options = ["--config", str(config)] if config else ["--config", "/nonexistent/exactcron.toml"]
    result = invoke(
        main, [*options, "--now", NOW, "check", *args], input=input, env={"TZ": "UTC"}, catch_exceptions=False
    )
    return result.exit_code, result.output


def write_config(tmp_path: Path, log: Path, server: str, extra: str = "") -> Path:
    config = tmp_path / "exactcron.toml"
    config.write_text(
        f"""\
state_dir = "{tmp_path / "state"}"
timeout = "30m"
ignore = ["127.0.0.0/8"]
{extra}
[[source]]
path = "{log}"
server = {server}
timezone = "UTC"
hosts = ["*"]

[[map]]
mta = "exim"
path = "{tmp_path / "state" / "relay"}"
""",
        encoding="utf-8",
    )
    config.chmod(0o644)
    return config


def test_check_reports_per_rule_counts_unmatched_logins_and_why_not_granted(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    # Without a configuration, the default `hosts`: this machine's own name.
    log.write_text(LOG.replace(" mail ", f" {socket.gethostname()} "), encoding="utf-8")
    code, output = run(str(log), "--server", "dovecot,courier")
    assert code == 0
    assert output == (
        "2026-11-25T17:50:10+00:00 dovecot alice 192.0.2.10\n"
        "2026-11-25T17:52:10+00:00 courier bob 192.0.2.20\n"
        "2026-11-25T16:00:00+00:00 dovecot dave 192.0.2.40\n"
        "2026-11-25T17:54:10+00:00 dovecot web 127.0.0.1\n"
        "rule dovecot: 3 lines matched\n"
        "rule courier: 1 line matched\n"
        "read 6 lines, 4 logins; 1 line looked like a login but matched no rule\n"
        f"  line 4: Nov 25 17:53:10 {socket.gethostname()} mypopd[9]: user carol logged in from 192.0.2.30\n"
        "not granted, older than the timeout: 192.0.2.40\n"
        "not granted, in ignore: 127.0.0.1\n"
        "would grant: 192.0.2.10 192.0.2.20\n"
    )


def test_check_with_the_configured_rules_and_a_site_rule(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LOG, encoding="utf-8")
    site = "[rule.mypopd]\nprogram = \"mypopd\"\nmatch = 'user (?P<user>\\S+) logged in from (?P<ip>\\S+)$'\n"
    config = write_config(tmp_path, log, '["dovecot", "mypopd"]', site)
    code, output = run(str(log), config=config)
    assert code == 0
    assert output == (
        f"warning: {log}: {FORGEABLE_WARNING}\n"
        "2026-11-25T17:50:10+00:00 dovecot alice 192.0.2.10\n"
        "2026-11-25T17:53:10+00:00 mypopd carol 192.0.2.30\n"
        "2026-11-25T16:00:00+00:00 dovecot dave 192.0.2.40\n"
        "2026-11-25T17:54:10+00:00 dovecot web 127.0.0.1\n"
        "rule dovecot: 3 lines matched\n"
        "rule mypopd: 1 line matched\n"
        "read 6 lines, 4 logins; 1 line looked like a login but matched no rule\n"
        "  line 3: Nov 25 17:52:10 mail imapd-ssl: LOGIN, user=bob, ip=[::ffff:192.0.2.20], port=[4242], protocol=IMAP\n"
        "not granted, older than the timeout: 192.0.2.40\n"
        "not granted, in ignore: 127.0.0.1\n"
        "would grant: 192.0.2.10 192.0.2.30\n"
    )
    assert not (tmp_path / "state").exists()


def test_check_reads_stdin_and_escapes_hostile_bytes() -> None:
    line = b"Nov 25 17:50:10 mail x: \x1b[31mLogin ok 192.0.2.9\xff\n"
    code, output = run("-", "--server", "cyrus", input=line)
    assert code == 0
    assert output == (
        "rule cyrus: 0 lines matched\n"
        "read 1 line, 0 logins; 1 line looked like a login but matched no rule\n"
        "  line 1: Nov 25 17:50:10 mail x: \\x1b[31mLogin ok 192.0.2.9\\xff\n"
        "would grant: nothing\n"
    )


def test_check_counts_over_long_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    user = "a" * MAX_LINE_BYTES
    log.write_text(
        f"Nov 25 17:50:10 mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, rip=192.0.2.10, "
        "lip=192.0.2.1\n",
        encoding="utf-8",
    )
    code, output = run(str(log), "--server", "dovecot")
    assert code == 0
    assert output == (
        "rule dovecot: 0 lines matched\n"
        "read 1 line, 0 logins; 0 lines looked like a login but matched no rule\n"
        "skipped 1 line longer than 8192 bytes\n"
        "would grant: nothing\n"
    )


def test_an_unknown_server_is_a_usage_error(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(LOG, encoding="utf-8")
    code, output = run(str(log), "--server", "dovecot", "--server", "nosuchd")
    assert code == 2
    assert "unknown rule 'nosuchd'" in output


def test_failures_and_logouts_do_not_count_as_unmatched_logins() -> None:
    assert not looks_like_login(b"Nov 25 17:50:10 mail imapd: LOGIN FAILED, user=a, ip=[::ffff:192.0.2.1]")
    assert not looks_like_login(b"Nov 25 17:50:10 mail dovecot: imap(a): Disconnected: Logged out in=1")
    assert not looks_like_login(b"Nov 25 17:50:10 mail cyrus/imap[1]: badlogin: h [192.0.2.1] plain")
    assert not looks_like_login(b"Nov 25 17:50:10 mail imapd[1]: Login user=a host=nowhere")
    assert looks_like_login(b"Nov 25 17:50:10 mail imapd[1]: Login user=a host=x [2001:db8::1]")


def test_check_log_is_pure_and_counts_every_rule() -> None:
    now = parse_instant(NOW)
    report = check_log(
        LOG.encode().splitlines(keepends=True),
        (BUILTIN_RULES["dovecot"], BUILTIN_RULES["uw-imap"]),
        TimestampParser(now, now.tzinfo),  # type: ignore[arg-type]
        timeout=timedelta(minutes=30),
        ignore=(),
    )
    assert report.matched == {"dovecot": 3, "uw-imap": 0}
    assert report.looked_like_logins == 2
    assert report.granted == ["127.0.0.1", "192.0.2.10"]
    assert report.too_old == ["192.0.2.40"]


def test_check_flags_a_rule_that_matches_failure_lines(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov 25 17:50:10 mail mypopd[9]: user carol logged in from 192.0.2.30\n"
        "Nov 25 17:51:10 mail mypopd[9]: user mallory login failed from 192.0.2.66\n"
        "Nov 25 17:52:10 mail mypopd[9]: user failed logged in from 192.0.2.31\n"
        "Nov 25 17:53:10 mail mypopd[9]: user eve login denied (invalid password) from 192.0.2.67\n",
        encoding="utf-8",
    )
    # A careless site rule: it takes any line with `user U ... from ADDR`.
    site = "[rule.mypopd]\nprogram = \"mypopd\"\nmatch = 'user (?P<user>\\S+) .* from (?P<ip>\\S+)$'\n"
    code, output = run(str(log), config=write_config(tmp_path, log, '["mypopd"]', site))
    assert code == 0
    assert output == (
        f"warning: {log}: {FORGEABLE_WARNING}\n"
        "2026-11-25T17:50:10+00:00 mypopd carol 192.0.2.30\n"
        "2026-11-25T17:51:10+00:00 mypopd mallory 192.0.2.66\n"
        "2026-11-25T17:52:10+00:00 mypopd failed 192.0.2.31\n"
        "2026-11-25T17:53:10+00:00 mypopd eve 192.0.2.67\n"
        "rule mypopd: 4 lines matched\n"
        "  warning: 2 lines of them speak of failure; a rule must match successful logins only\n"
        "  line 2: Nov 25 17:51:10 mail mypopd[9]: user mallory login failed from 192.0.2.66\n"
        "  line 4: Nov 25 17:53:10 mail mypopd[9]: user eve login denied (invalid password) from 192.0.2.67\n"
        "read 4 lines, 4 logins; 0 lines looked like a login but matched no rule\n"
        "would grant: 192.0.2.30 192.0.2.31 192.0.2.66 192.0.2.67\n"
    )


def test_no_built_in_rule_matches_a_line_that_speaks_of_failure() -> None:
    corpus = Path(__file__).parent / "data" / "corpus"
    now = parse_instant(NOW)
    lines = [
        line
        for path in sorted(corpus.glob("*/*.log"))
        for line in path.read_bytes().splitlines(keepends=True)
    ]
    report = check_log(
        lines,
        tuple(BUILTIN_RULES.values()),
        TimestampParser(now, now.tzinfo),  # type: ignore[arg-type]
        timeout=timedelta(minutes=30),
        ignore=(),
        listed=None,
    )
    assert report.login_count > 40
    assert {name: summary.failure_examples for name, summary in report.summaries.items()} == {
        name: [] for name in BUILTIN_RULES
    }


def test_check_says_how_many_quoted_lines_it_left_out() -> None:
    lines = "".join(
        f"Nov 25 17:50:{second:02d} mail x[1]: user{second} logged in from 192.0.2.{second}\n"
        for second in range(8)
    )
    code, output = run("-", "--server", "dovecot", input=lines.encode())
    assert code == 0
    assert output == (
        "rule dovecot: 0 lines matched\n"
        "read 8 lines, 0 logins; 8 lines looked like a login but matched no rule\n"
        "  line 1: Nov 25 17:50:00 mail x[1]: user0 logged in from 192.0.2.0\n"
        "  line 2: Nov 25 17:50:01 mail x[1]: user1 logged in from 192.0.2.1\n"
        "  line 3: Nov 25 17:50:02 mail x[1]: user2 logged in from 192.0.2.2\n"
        "  line 4: Nov 25 17:50:03 mail x[1]: user3 logged in from 192.0.2.3\n"
        "  line 5: Nov 25 17:50:04 mail x[1]: user4 logged in from 192.0.2.4\n"
        "  and 3 more\n"
        "would grant: nothing\n"
    )


def _big_log(count: int) -> bytes:
    return "".join(
        f"Nov 25 17:{30 + number}:00 {socket.gethostname()} dovecot: imap-login: Logged in: user=<u{number}>, method=PLAIN, "
        f"rip=192.0.2.{number}, lip=198.51.100.1, mpid={number}, TLS, session=<s{number}>\n"
        for number in range(1, count + 1)
    ).encode()


def _listed(count: int) -> tuple[str, str]:
    """The first `count` logins of the big log as check lists them, and their addresses."""
    logins = "".join(
        f"2026-11-25T17:{30 + number}:00+00:00 dovecot u{number} 192.0.2.{number}\n"
        for number in range(1, count + 1)
    )
    return logins, " ".join(f"192.0.2.{number}" for number in range(1, count + 1))


def test_check_sums_up_a_big_log_per_rule() -> None:
    code, output = run("-", "--server", "dovecot,cyrus", input=_big_log(25))
    logins, addresses = _listed(20)
    assert code == 0
    assert output == (
        f"{logins}"
        "and 5 more logins (--all lists every one)\n"
        "rule dovecot: 25 lines matched, 25 addresses, 25 users, "
        "2026-11-25T17:31:00+00:00 to 2026-11-25T17:55:00+00:00\n"
        "rule cyrus: 0 lines matched\n"
        "read 25 lines, 25 logins; 0 lines looked like a login but matched no rule\n"
        f"would grant: {addresses} and 5 more\n"
    )


def test_check_all_lists_every_login_and_address() -> None:
    code, output = run("-", "--server", "dovecot", "--all", input=_big_log(25))
    logins, addresses = _listed(25)
    assert code == 0
    assert output == (
        f"{logins}"
        "rule dovecot: 25 lines matched\n"
        "read 25 lines, 25 logins; 0 lines looked like a login but matched no rule\n"
        f"would grant: {addresses}\n"
    )


def test_check_says_why_lines_of_other_hosts_and_special_addresses_grant_nothing(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    here = socket.gethostname()
    log.write_text(
        f"Nov 25 17:50:10 {here} dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1\n"
        f"Nov 25 17:50:11 {here} dovecot: pop3-login: Login: user=<b>, method=PLAIN, rip=224.0.0.1, lip=192.0.2.1\n"
        "Nov 25 17:50:12 elsewhere dovecot: pop3-login: Login: user=<c>, method=PLAIN, rip=192.0.2.12, lip=192.0.2.1\n",
        encoding="utf-8",
    )
    code, output = run(str(log), "--server", "dovecot")
    assert code == 0
    assert output.endswith(
        "never granted (unspecified, broadcast, multicast, link-local): 224.0.0.1\n"
        "not granted, from a host not in `hosts`: 1 login line\n"
        "would grant: 192.0.2.10\n"
    )


def test_check_reads_a_compressed_rotated_log(tmp_path: Path) -> None:
    import gzip

    log = tmp_path / "mail.log.2.gz"
    with gzip.open(log, "wt") as stream:
        stream.write(
            f"2026-11-25T17:50:13+00:00 {socket.gethostname()} dovecot: pop3-login: Login: user=<alice>, method=PLAIN, "
            "rip=192.0.2.44, lip=192.0.2.1, mpid=1, session=<s>\n"
        )
    code, output = run("--server", "dovecot", str(log))
    assert code == 0
    assert output.splitlines()[-1] == "would grant: 192.0.2.44"


# Measures the peak memory of one `check -` reading a line of SIZE bytes with no
# newline, then a login: the only child of this process, so RUSAGE_CHILDREN is its.
_PEAK_OF_CHECK = """
import resource, subprocess, sys
size = int(sys.argv[1])
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
chunk = b"x" * (1 << 20)
for _ in range(size // len(chunk)):
    child.stdin.write(chunk)
child.stdin.write(b"\\n" + sys.stdin.buffer.read())
child.stdin.close()
output = child.stdout.read()
code = child.wait()
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.stderr.write(output.decode())
"""


def test_check_keeps_memory_bounded_on_a_line_with_no_end() -> None:
    size = 64 << 20
    command = [sys.executable, "-m", "exactcron", "--now", "2026-11-25T18:00:00+00:00"]
    command += ["check", "-", "--server", "dovecot"]
    measured = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_CHECK, str(size), *command],
        # A line of this host's (check's `hosts` without a configuration).
        input=dovecot_login("192.0.2.10").replace(" mail ", f" {socket.gethostname()} ", 1) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        check=True,
    )
    code, peak_kib = map(int, measured.stdout.split())
    assert code == 0
    # Python and the rules take some 30 MB; a copy of the line would be 64 MB more.
    assert peak_kib < 60 * 1024, f"peak RSS {peak_kib} KiB for a {size}-byte line"
    assert "skipped 1 line longer than 8192 bytes\n" in measured.stderr
    assert "would grant: 192.0.2.10\n" in measured.stderr


def test_server_overrides_the_rules_only_the_sources_timezone_and_hosts_still_apply(tmp_path: Path) -> None:
    """A log gathered on a central host: `--server` keeps the configuration's `hosts` and `timezone`."""
    log = tmp_path / "mail.log"
    log.write_text(
        "Nov 25 18:50:10 imap1 dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1\n"
        "Nov 25 18:51:10 elsewhere dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.11, lip=192.0.2.1\n",
        encoding="utf-8",
    )
    config = write_config(tmp_path, log, '"courier"')
    config.write_text(
        config.read_text()
        .replace('timezone = "UTC"', 'timezone = "Europe/Berlin"')
        .replace('hosts = ["*"]', 'hosts = ["imap1"]')
    )
    code, output = run(str(log), "--server", "dovecot", config=config)
    assert code == 0
    assert output == (
        f"warning: {log}: {FORGEABLE_WARNING}\n"
        "2026-11-25T17:50:10+00:00 dovecot alice 192.0.2.10\n"
        "rule dovecot: 1 line matched\n"
        "read 2 lines, 1 login; 1 line looked like a login but matched no rule\n"
        "  line 2: Nov 25 18:51:10 elsewhere dovecot: pop3-login: Login: user=<bob>, method=PLAIN, rip=192.0.2.11, "
        "lip=192.0.2.1\n"
        "not granted, from a host not in `hosts`: 1 login line\n"
        "would grant: 192.0.2.10\n"
    )
