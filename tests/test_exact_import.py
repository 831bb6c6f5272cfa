"""`import-exact`: an Exact installation's configuration carried over, and the result passes `check`.

The samples follow Exact 1.41's distribution: exact.conf.in as its
configure script fills it in (user mail, --with-server, --with-db), its
exact-servers.conf stanzas, and the 1.2x layout with `match` in exact.conf.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clock import NOW
from tests.support.tools import require_tool


def exact_conf(root: Path, server: str = "uw-imap", authtype: str = "db") -> str:
    """Exact 1.41's exact.conf.in, filled in as `./configure --with-db` does (paths under `root`)."""
    return f"""\
##
## exact.conf -- EXACT daemon configuration file
##
user\t\t\tmail
group\t\t\tmail
pidfile\t\t\t{root}/run/exact/exact.pid
maillog\t\t\t{root}/log/mail.log
serverdefs      {root}/etc/exact-servers.conf
server          {server}
authtype        {authtype}
authfile\t\t{root}/state/exact/relay
authtemp\t\t{root}/state/exact/relay.tmp
dumpfile\t\t{root}/state/exact/dump
timeout\t\t\t1800
flush\t\t\t300
suspicious\t\t120
logging\t\t\tsyslog
logfile\t\t\t{root}/log/exact/exact.log
"""


# Stanzas as exact-servers.conf has them: a dropped group, then user and
# address in `order`; a site's own server added at the end.
EXACT_SERVERS = r"""# servers.conf
# these are the servers supported by exact

<server uw-imap>
    order username,address
    match (Login|Auth|Authenticated) user=([^ ]*).*\[([^ ]*)\]
</server>

<server cyrus>
    order address,username
    match (login):.*\[([0-9\.]*)\] ([^ ]*) .*
</server>

<server mypopd>
    order address,username
    match (OK) from \[([[:digit:].]+)\] user=([^ ]+)$
</server>
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for directory in ("etc", "log", "state/exact", "run/exact"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "log" / "mail.log").touch()
    (tmp_path / "etc" / "exact-servers.conf").write_text(EXACT_SERVERS)
    return tmp_path


def exactcron(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exactcron", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "TZ": "UTC"},
    )


def convert(root: Path, conf: str, *more: str) -> subprocess.CompletedProcess[str]:
    (root / "etc" / "exact.conf").write_text(conf)
    return exactcron(
        "import-exact", "--state-dir", str(root / "exactcron"), str(root / "etc" / "exact.conf"), *more
    )


def checked(root: Path, toml: str) -> subprocess.CompletedProcess[str]:
    config = root / "exactcron.toml"
    config.write_text(toml)
    return exactcron("--config", str(config), "check")


def test_a_stock_exact_installation_becomes_a_config_that_passes_check(root: Path) -> None:
    require_tool("postmap")
    result = convert(root, exact_conf(root))
    assert result.returncode == 0, result.stderr
    conf = root / "etc" / "exact.conf"
    servers = root / "etc" / "exact-servers.conf"
    assert result.stdout == (
        f"# exactcron.toml converted by `exactcron import-exact` from Exact's {conf} and {servers}.\n"
        "# Check it with `exactcron check`, and each rule with `exactcron check LOG --server NAME`.\n"
        "\n"
        f'state_dir = "{root}/exactcron"\n'
        'timeout = "30m"\n'
        "\n"
        "# Exact: user mail: exactcron runs as the owner of state_dir (the cron job's user, exactcron).\n"
        "# Exact: group mail: the cron job's user reads the log through its groups (adm on Debian).\n"
        f"# Exact: pidfile {root}/run/exact/exact.pid: exactcron is no daemon: cron (or the systemd timer) "
        "runs `exactcron update` every minute.\n"
        f"# Exact: serverdefs {servers}: its stanzas are converted below.\n"
        f"# Exact: authtemp {root}/state/exact/relay.tmp: every map is written under a temporary name beside "
        "it and renamed.\n"
        f"# Exact: dumpfile {root}/state/exact/dump: `exactcron show` (or `show --json`) lists the leases.\n"
        "# Exact: flush 300: every update drops the expired leases.\n"
        "# Exact: suspicious 120: a rotated log is found by its inode and the fingerprint of its first bytes.\n"
        "# Exact: logging syslog: errors go to stderr (cron mails them) and to log_file when set.\n"
        f"# Exact: logfile {root}/log/exact/exact.log: set log_file (below) for a record of every run and an "
        "audit trail.\n"
        "\n"
        "[[source]]\n"
        f'path = "{root}/log/mail.log"\n'
        'server = "uw-imap"\n'
        "\n"
        "# Exact: authtype db: a Berkeley DB relay file, read by Postfix (hash:) or Exim (net-dbm;).\n"
        '# exactcron writes the text and has postmap build it; for Exim, set mta = "exim" and\n'
        "# name the file in a host list (hostlist relay_from_hosts = <; 127.0.0.1 ; FILE).\n"
        "[[map]]\n"
        'mta = "postfix"\n'
        f'path = "{root}/state/exact/relay"\n'
        'type = "hash"\n'
        "\n"
        "# Exact: <server uw-imap>: exactcron's built-in rule uw-imap reads every\n"
        "# form this server logs (anchored, with its syslog tag); Exact's match was:\n"
        "#   (Login|Auth|Authenticated) user=([^ ]*).*\\[([^ ]*)\\]\n"
        "\n"
        "# Exact: <server cyrus>: exactcron's built-in rule cyrus reads every\n"
        "# form this server logs (anchored, with its syslog tag); Exact's match was:\n"
        "#   (login):.*\\[([0-9\\.]*)\\] ([^ ]*) .*\n"
        "\n"
        "# Exact: <server mypopd> (order address,username):\n"
        "#   match (OK) from \\[([[:digit:].]+)\\] user=([^ ]+)$\n"
        "# Exact searched the whole line; this rule matches the message after the tag mypopd[PID]:\n"
        "# check that tag against your log (`exactcron check LOG --server mypopd`).\n"
        "[rule.mypopd]\n"
        'program = "mypopd"\n'
        "match = '(?:.*?)(?:OK) from \\[(?P<ip>[0-9.]+)\\] user=(?P<user>[^ ]+)$(?:.*)'\n"
    )
    assert result.stderr == (
        f"exactcron: warning: {conf}:4: user has no equivalent: exactcron runs as the owner of state_dir "
        "(the cron job's user, exactcron)\n"
        f"exactcron: warning: {conf}:5: group has no equivalent: the cron job's user reads the log through "
        "its groups (adm on Debian)\n"
        f"exactcron: warning: {conf}:6: pidfile has no equivalent: exactcron is no daemon: cron (or the "
        "systemd timer) runs `exactcron update` every minute\n"
        f"exactcron: warning: {conf}:13: dumpfile has no equivalent: `exactcron show` (or `show --json`) "
        "lists the leases\n"
        f"exactcron: warning: {conf}:16: suspicious has no equivalent: a rotated log is found by its inode "
        "and the fingerprint of its first bytes\n"
        f"exactcron: warning: {conf}:17: logging has no equivalent: errors go to stderr (cron mails them) "
        "and to log_file when set\n"
        f"exactcron: warning: {servers}:14: <server mypopd> became [rule.mypopd] with program = 'mypopd': "
        "Exact never named the syslog tag; check that the server logs under it\n"
        f"exactcron: warning: {conf}: authtype db: written as a Postfix hash map (postmap builds "
        f'{root}/state/exact/relay.db); an Exim net-dbm; lookup needs mta = "exim" and a host list file '
        "instead\n"
    )
    check = checked(root, result.stdout)
    assert (check.returncode, check.stderr) == (0, "")


def test_a_site_stanza_grants_what_exact_granted(root: Path) -> None:
    require_tool("postmap")
    result = convert(root, exact_conf(root, server="mypopd", authtype="text"))
    assert result.returncode == 0, result.stderr
    assert 'server = "mypopd"\n' in result.stdout
    assert '[[map]]\nmta = "exim"\n' in result.stdout
    assert checked(root, result.stdout).returncode == 0
    # This machine's lines: a source counts only its own host's by default.
    lines = (
        "Nov 25 17:50:00 mx1 mypopd[12]: OK from [192.0.2.7] user=alice\n"
        "Nov 25 17:50:01 mx1 mypopd[12]: FAILED from [192.0.2.66] user=mallory\n"
        "Nov 25 17:50:02 mx1 otherd[13]: OK from [192.0.2.99] user=mallory\n"  # not the server's tag
    ).replace(" mx1 ", f" {socket.gethostname()} ")
    found = exactcron("--config", str(root / "exactcron.toml"), "--now", NOW, "check", "-", stdin=lines)
    assert found.returncode == 0, found.stderr
    assert "2026-11-25T17:50:00+00:00 mypopd alice 192.0.2.7\n" in found.stdout
    assert found.stdout.endswith("would grant: 192.0.2.7\n")


def test_the_servers_file_can_be_given_instead_of_serverdefs(root: Path) -> None:
    require_tool("postmap")
    other = root / "servers.conf"
    other.write_text("<server mine>\n  match (ok) ([a-z]+) ([0-9.]+)$\n</server>\n")
    result = convert(root, exact_conf(root, server="mine"), str(other))
    assert result.returncode == 0, result.stderr
    assert (
        "[rule.mine]\nprogram = \"mine\"\nmatch = '(?:.*?)(?:ok) (?P<user>[a-z]+) (?P<ip>[0-9.]+)$(?:.*)'\n"
        in (result.stdout)
    )
    assert checked(root, result.stdout).returncode == 0


def test_exact_1_2_with_its_basic_regular_expression_in_exact_conf(root: Path) -> None:
    require_tool("postmap")
    conf = (
        f"user mail\nmaillog {root}/log/mail.log\n"
        "match\t\t\t\\(Login\\|Authenticated\\) user=\\([^ ]*\\) host=\\([^ ]*\\)\n"
        f"authfile {root}/state/exact/relay\ntimeout 900\n"
    )
    result = convert(root, conf)
    assert result.returncode == 0, result.stderr
    assert 'timeout = "15m"\n' in result.stdout
    assert 'server = "exact-match"\n' in result.stdout
    assert (
        "match = '(?:.*?)(?:Login|Authenticated) user=(?P<user>[^ ]*) host=(?P<ip>[^ ]*)(?:.*)'\n"
    ) in result.stdout
    assert checked(root, result.stdout).returncode == 0


def test_a_server_with_no_stanza_is_a_config_error(root: Path) -> None:
    result = convert(root, exact_conf(root, server="nosuchpopd"))
    assert (result.returncode, result.stdout) == (78, "")
    assert result.stderr == (
        f"exactcron: {root}/etc/exact.conf: server 'nosuchpopd' is neither a built-in rule nor a stanza of "
        f"{root}/etc/exact-servers.conf\n"
    )


def test_a_broken_stanza_names_its_line(root: Path) -> None:
    (root / "etc" / "exact-servers.conf").write_text("<server x>\n  matchh (a)(b)(c)\n</server>\n")
    result = convert(root, exact_conf(root))
    assert result.returncode == 78
    assert result.stderr == (
        f"exactcron: {root}/etc/exact-servers.conf:2: expected <server NAME>, order, match or </server>\n"
    )
