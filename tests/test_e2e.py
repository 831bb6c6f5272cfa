"""End-to-end: real Dovecot logins open a real Postfix relay, and exactcron closes it.

Nothing is mocked.  Client hosts are network namespaces (exc-c2: 10.77.0.2 and
fd77::2, exc-c3: 10.77.0.3) talking to a real Dovecot and a real Postfix on
10.77.0.1 / fd77::1; exactcron runs as the cron job would, as a subprocess,
reading the log Dovecot really wrote and writing the access map that Postfix
really consults (``check_client_access hash:MAP`` in
``smtpd_relay_restrictions``).  The scenario proves, for Dovecot logging both
through rsyslogd (RFC 3339 stamps) and to its own ``log_path`` file, and for
both this machine's Dovecot and Debian 13's Dovecot 2.4 (``Logged in:``; run
from a cached Debian 13 root, see tests/support/debian_root.py):

* POP3 and IMAP logins let exactly that address relay (RCPT to a foreign
  domain: 250), while a failed login (wrong password) grants nothing (554);
* ``flush ADDRESS`` shuts the relay before the command returns, for IPv4 and
  for IPv6, and a lease on one address never opens another;
* a lease expires: ``--now`` 31 minutes after a login (timeout 30 minutes)
  makes ``update`` close the relay;
* ``report`` tells a message relayed through a lease (port 25, no AUTH)
  from one sent with SMTP AUTH (port 587, Dovecot as Postfix's SASL server),
  from the audit trail and Postfix's own log.

Needs root and the Debian packages postfix, dovecot-pop3d, dovecot-imapd,
rsyslog, iproute2 and debootstrap (and, once, Debian's archive to build the
root).  Without them it skips, unless CI is set: then it fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

try:
    from tests.e2e import harness
    from tests.support import debian_root
except ImportError:  # tests/ is no package: pytest put tests/ itself on sys.path
    from e2e import harness  # type: ignore[no-redef,import-not-found,unused-ignore]
    from support import debian_root  # type: ignore[no-redef,import-not-found,unused-ignore]

REPO = Path(__file__).resolve().parent.parent
C2 = harness.CLIENT2
C3 = harness.CLIENT3
V4 = harness.SERVER_V4
V6 = harness.SERVER_V6
TIMEOUT = timedelta(minutes=30)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    harness.skip_or_fail(harness.environment_problems())
    with harness.lab_workdir() as path:
        yield path


@pytest.fixture(scope="session")
def debian13_root() -> Path:
    """Debian 13's packages in a root of their own, built on first use (one to two minutes)."""
    harness.skip_or_fail(harness.environment_problems() + debian_root.build_problems())
    return debian_root.cached_root(debian_root.TRIXIE)


@pytest.fixture(scope="module")
def network(workdir: Path) -> Iterator[None]:
    with harness.started(harness.Network()):
        yield


@pytest.fixture(scope="module")
def postfix(network: None, workdir: Path) -> Iterator[harness.Postfix]:
    # Port 587 relays for SMTP AUTH through the socket of test_report_tells_...'s Dovecot.
    instance = harness.Postfix(
        workdir / "postfix", workdir / "maps" / "relay", "hash", sasl_path=workdir / "dovecot-auth"
    )
    with harness.started(instance):
        yield instance


@pytest.fixture(
    params=[
        ("this machine", "rsyslog"),
        ("this machine", "log_path"),
        ("debian13", "rsyslog"),
        ("debian13", "log_path"),
    ],
    ids=["rsyslog", "log_path", "debian13-rsyslog", "debian13-log_path"],
)
def mail_log(request: pytest.FixtureRequest, network: None, workdir: Path) -> Iterator[harness.MailLog]:
    """A fresh Dovecot (and rsyslogd) per case; the log exactcron is to read.

    ``debian13``: Debian 13's Dovecot 2.4 and rsyslogd, run from a Debian 13
    root; otherwise this machine's own.
    """
    release, logging_to = request.param
    case = workdir / request.node.callspec.id
    with ExitStack() as stack:
        place: harness.Place = harness.HERE
        if release == "debian13":
            view = debian_root.RootView(request.getfixturevalue("debian13_root"), case / "root", workdir)
            stack.enter_context(harness.started(view))
            place = view
        if logging_to == "rsyslog":
            rsyslog = harness.Rsyslog(case / "rsyslog", place)
            stack.enter_context(harness.started(rsyslog))
            dovecot = harness.Dovecot(case / "dovecot", syslog_socket=rsyslog.socket, place=place)
            log_file = rsyslog.mail_log
        else:
            dovecot = harness.Dovecot(case / "dovecot", place=place)
            log_file = dovecot.log_path
        stack.enter_context(harness.started(dovecot))
        if release == "debian13":
            # What this case is for: Debian 13's Dovecot really is 2.4.
            assert dovecot.version is not None and dovecot.version >= (2, 4), dovecot.version
        yield harness.MailLog(log_file)


@dataclass
class Exactcron:
    """The command as cron runs it: a subprocess with its own config file."""

    config: Path
    postfix: harness.Postfix

    def __call__(self, *args: str, now: datetime | None = None) -> str:
        argv = [sys.executable, "-m", "exactcron", "--config", str(self.config)]
        if now is not None:
            argv += ["--now", now.isoformat(timespec="seconds")]
        argv += args
        done = subprocess.run(
            argv,
            cwd=REPO,  # `-m exactcron` then runs this tree, installed or not
            env=self.postfix.env,  # postmap reads the private instance's main.cf
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, (
            f"{' '.join(argv[1:])} exited {done.returncode}\n"
            f"stdout: {done.stdout.strip()}\nstderr: {done.stderr.strip()}"
        )
        return done.stdout

    def leases(self) -> dict[str, str | None]:
        shown = json.loads(self("show", "--json"))
        return {lease["ip"]: lease["user"] for lease in shown["leases"]}


@pytest.fixture
def exactcron(
    request: pytest.FixtureRequest, mail_log: harness.MailLog, postfix: harness.Postfix, workdir: Path
) -> Exactcron:
    case = workdir / f"exactcron-{request.node.callspec.id}"
    case.mkdir()
    config = case / "exactcron.toml"
    config.write_text(
        f"""\
state_dir = "{case / "state"}"
timeout = "30m"

[[source]]
path = "{mail_log.path}"
server = "dovecot"

[[map]]
mta = "postfix"
path = "{postfix.map_path}"
type = "{postfix.map_type}"
"""
    )
    return Exactcron(config, postfix)


def relay_reply(client: harness.Client, server: str, postfix: harness.Postfix) -> tuple[int, str, str]:
    code, reply = harness.relay_probe(client, server)
    context = (
        f"{client.netns} -> [{server}]:25 RCPT TO:<x@outside.example> got {code} {reply}\n"
        + harness.tail(postfix.maillog, 8)
    )
    return code, reply, context


def assert_relays(client: harness.Client, server: str, postfix: harness.Postfix) -> None:
    code, _, context = relay_reply(client, server, postfix)
    assert code == 250, context


def assert_denied(client: harness.Client, server: str, postfix: harness.Postfix) -> None:
    code, reply, context = relay_reply(client, server, postfix)
    assert code == 554 and "Relay access denied" in reply, context


def test_logins_open_and_close_the_relay(
    mail_log: harness.MailLog, postfix: harness.Postfix, exactcron: Exactcron
) -> None:
    # IPv4: alice logs in from exc-c2 over POP3 and IMAP; exc-c3 gets her
    # password wrong.
    assert harness.login(C2, "pop3", V4)
    assert harness.login(C2, "imap", V4)
    assert not harness.login(C3, "pop3", V4, password="wrong")
    # Dovecot logs asynchronously: wait until the lines are on disk so that
    # update reads them (and the failed login's line too, so it is read and
    # ignored rather than simply not there yet).
    mail_log.wait_logins(C2.v4, 2)
    mail_log.wait_mentions(C3.v4, 1)

    exactcron("update")
    assert postfix.map_path.exists()
    assert exactcron.leases() == {C2.v4: harness.USER}
    assert_relays(C2, V4, postfix)
    assert_denied(C3, V4, postfix)

    exactcron("flush", C2.v4)
    assert_denied(C2, V4, postfix)

    # IPv6: the same grant and flush for fd77::2.
    assert harness.login(C2, "pop3", V6)
    assert harness.login(C2, "imap", V6)
    mail_log.wait_logins(C2.v6, 2)
    exactcron("update")
    assert exactcron.leases() == {C2.v6: harness.USER}
    assert_relays(C2, V6, postfix)
    # The flushed IPv4 address stays shut: a lease is for one address only.
    assert_denied(C2, V4, postfix)
    exactcron("flush", C2.v6)
    assert_denied(C2, V6, postfix)

    # Expiry.  Dovecot's own log_path stamps have whole seconds only; a login
    # in the same second as the flush above would be stamped before it, and
    # a flush rightly wins over such a login.  So start in a later second.
    harness.wait_for_next_second()
    logged_in_at = datetime.now().astimezone()
    assert harness.login(C2, "pop3", V4)
    mail_log.wait_logins(C2.v4, 3)
    exactcron("update")
    assert_relays(C2, V4, postfix)

    exactcron("update", now=logged_in_at + TIMEOUT + timedelta(minutes=1))
    assert_denied(C2, V4, postfix)


@pytest.fixture
def sasl_dovecot(network: None, workdir: Path) -> Iterator[harness.MailLog]:
    """This machine's Dovecot, also Postfix's SASL server (`smtpd_sasl_type = dovecot`)."""
    dovecot = harness.Dovecot(workdir / "report" / "dovecot", auth_socket=workdir / "dovecot-auth")
    with harness.started(dovecot):
        yield harness.MailLog(dovecot.log_path)


def test_report_tells_a_message_relayed_through_a_lease_from_one_sent_with_smtp_auth(
    sasl_dovecot: harness.MailLog, postfix: harness.Postfix, workdir: Path
) -> None:
    case = workdir / "report"
    config = case / "exactcron.toml"
    config.write_text(
        f"""\
state_dir = "{case / "state"}"
log_file = "{case / "exactcron.log"}"
timeout = "30m"

[[source]]
path = "{sasl_dovecot.path}"
server = "dovecot"

[[map]]
mta = "postfix"
path = "{postfix.map_path}"
type = "{postfix.map_type}"
"""
    )
    exactcron = Exactcron(config, postfix)
    # exc-c2 logs in by POP3 and relays through its lease (port 25, no AUTH);
    # exc-c3 holds no lease and relays with SMTP AUTH as alice (port 587).
    harness.wait_for_next_second()
    assert harness.login(C2, "pop3", V4)
    sasl_dovecot.wait_logins(C2.v4, 1)
    exactcron("update")
    assert_relays(C2, V4, postfix)
    code, reply = harness.relay_with_auth(C3, V4)
    assert code == 250, f"{code} {reply}\n{harness.tail(postfix.maillog, 8)}"
    assert_denied(C3, V4, postfix)  # without AUTH and without a lease: no relay
    exactcron("flush", C2.v4)

    def logged() -> bool:
        return sum(": client=" in line for line in harness.MailLog(postfix.maillog).lines()) >= 2

    harness.wait_until("Postfix's client= lines", logged, timeout=10.0)
    document = json.loads(exactcron("report", "--json", "--mta-log", str(postfix.maillog)))
    assert [
        (user["user"], user["relayed"], user["sasl_from_lease"], user["smtp_auth"])
        for user in document["users"]
    ] == [(harness.USER, 1, 0, True)], harness.tail(postfix.maillog, 12)
    # Every client= line the other tests' probes left is a message: only exc-c2's went through a lease.
    assert document["totals"]["relayed"] == 1
    assert document["totals"]["sasl"] == 1
