"""End-to-end: with `hold_while_connected`, a real IMAP session holds its relay, and its logout ends it.

A client in its namespace logs in to the real Dovecot (this machine's 2.3,
and Debian 13's 2.4; through rsyslogd and to Dovecot's own log file) and
stays connected; exactcron runs as cron would, with `--now` well past the
login's own `timeout`, and the real Postfix still lets that address relay.
The client logs out; exactcron reads the mail process's disconnect line, and
the relay ends `timeout` after the last run that saw the session open.

Runs under the machine lock of tests/e2e/harness.py, with the fixtures of
tests/test_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

from tests.test_e2e import (  # noqa: F401 -- fixtures, used by name
    C2,
    V4,
    Exactcron,
    assert_denied,
    assert_relays,
    debian13_root,
    exactcron,
    harness,
    mail_log,
    network,
    postfix,
    workdir,
)

# Logs in over IMAP, says so, and logs out once its stdin closes.
HOLDING_CLIENT = r"""
import imaplib, sys
box = imaplib.IMAP4(sys.argv[1], 143, timeout=30)
box.login(sys.argv[2], sys.argv[3])
print("in", flush=True)
sys.stdin.read()
box.logout()
print("out", flush=True)
"""


def ended_sessions(log: harness.MailLog) -> int:
    return sum(
        1
        for line in log.lines()
        if f"imap({harness.USER})<" in line and ("Disconnected" in line or "Logged out" in line)
    )


def test_an_imap_session_holds_its_relay_until_it_logs_out(
    mail_log: harness.MailLog,  # noqa: F811
    postfix: harness.Postfix,  # noqa: F811
    exactcron: Exactcron,  # noqa: F811
) -> None:
    text = exactcron.config.read_text()
    exactcron.config.write_text(
        text.replace('server = "dovecot"\n', 'server = "dovecot"\nhold_while_connected = true\n')
    )
    harness.wait_for_next_second()
    logged_in_at = datetime.now().astimezone()
    client = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            C2.netns,
            sys.executable,
            "-c",
            HOLDING_CLIENT,
            V4,
            harness.USER,
            harness.PASSWORD,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdout.readline() == "in\n"
        mail_log.wait_logins(C2.v4, 1)
        exactcron("update")
        assert_relays(C2, V4, postfix)
        # Still connected 20 and 40 minutes on: each run holds the lease for 30 more.
        exactcron("update", now=logged_in_at + timedelta(minutes=20))
        exactcron("update", now=logged_in_at + timedelta(minutes=40))
        assert_relays(C2, V4, postfix)
    finally:
        assert client.stdin is not None
        client.stdin.close()
        client.wait(timeout=30)
    assert client.returncode == 0
    harness.wait_until("the session's disconnect line", lambda: ended_sessions(mail_log) >= 1, timeout=10.0)
    # The disconnect is read: the lease ends 30 minutes after the last run that held it (40 + 30).
    exactcron("update", now=logged_in_at + timedelta(minutes=41))
    exactcron("update", now=logged_in_at + timedelta(minutes=60))
    assert_relays(C2, V4, postfix)
    exactcron("update", now=logged_in_at + timedelta(minutes=71))
    assert_denied(C2, V4, postfix)
