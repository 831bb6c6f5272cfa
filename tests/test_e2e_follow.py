"""End to end: log in by POP3, relay at once, with exactcron run as cron runs it.

Outlook's "log on to incoming mail server before sending mail" logs in by
POP3 a moment before every SMTP transaction. This test does the same from the
lab's client namespaces (tests/e2e/harness.py): one client process logs in to
the real Dovecot, quits, and starts its SMTP session with the real Postfix
SEND_AFTER seconds after the login succeeded; RCPT TO a foreign domain is the
relay decision (250 or 554 Relay access denied).

A stand-in for cron (no cron daemon) starts `exactcron update --follow` at
the test's start and again at each whole minute, as the shipped cron line
does. The TRIES tries start at the seconds of the minute in SLOTS, from 1.5
to 55.7: spread over the minute, but clear of its last second, in which the
interface leaves no follower running (each stops one second before the next
minute; a login there waits for the next minute's run, see
benchmarks/grant_delay.py and docs/performance.md). Before each try the
address must be absent from the map (postmap -q), and after it the address
is flushed, so no lease from an earlier try can help a later one. With
--follow every try must relay; with plain `update` each minute (exactcron
0.2's cron line) the same clients are refused. Both counts are printed
(`pytest -s`) for the notes.

Runs with this machine's Dovecot (2.3 on Debian 12) and Debian 13's Dovecot
2.4 from the cached root (tests/support/debian_root.py), each writing its own
log file. Needs what tests/test_e2e.py needs; skips without it, fails in CI.
"""

from __future__ import annotations

import functools
import itertools
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

try:
    from tests.e2e import harness
    from tests.e2e.cron import EachMinute
    from tests.e2e.grants import Delay, LogWatch, MapWatch
    from tests.support import debian_root
except ImportError:  # tests/ is no package: pytest put tests/ itself on sys.path
    from e2e import harness  # type: ignore[no-redef,import-not-found,unused-ignore]
    from e2e.cron import EachMinute  # type: ignore[no-redef,import-not-found,unused-ignore]
    from e2e.grants import Delay, LogWatch, MapWatch  # type: ignore[no-redef,import-not-found,unused-ignore]
    from support import debian_root  # type: ignore[no-redef,import-not-found,unused-ignore]

REPO = Path(__file__).resolve().parent.parent
TRIES = 20
# The seconds of the minute at which each try's client starts (it logs in
# about half a second later): every 2.85 s, none in the hand-over second.
SLOTS = tuple(1.5 + 2.85 * number for number in range(TRIES))
SEND_AFTER = 0.2  # seconds from the POP3 login's success to the SMTP session's start
# Each try uses the next of these (client, client address, server address):
# an address comes back only every fourth try, long after its flush.
ADDRESSES = (
    (harness.CLIENT2, harness.CLIENT2.v4, harness.SERVER_V4),
    (harness.CLIENT3, harness.CLIENT3.v4, harness.SERVER_V4),
    (harness.CLIENT2, harness.CLIENT2.v6, harness.SERVER_V6),
    (harness.CLIENT3, harness.CLIENT3.v6, harness.SERVER_V6),
)

# Runs inside a client namespace: POP3 login and QUIT, then SMTP at
# logged_in + send_after; one JSON object with the instants and the reply.
CLIENT_CODE = r"""
import json, poplib, smtplib, sys, time

host, user, password, send_after = sys.argv[1:]
box = poplib.POP3(host, 110, timeout=10)
box.user(user)
box.pass_(password)
logged_in = time.time()
box.quit()
time.sleep(max(0.0, logged_in + float(send_after) - time.time()))
connected = time.time()
with smtplib.SMTP(host, 25, timeout=10, local_hostname="client.exc-e2e.test") as smtp:
    smtp.ehlo()
    code, reply = smtp.mail("probe@client.exc-e2e.test")
    if code == 250:
        code, reply = smtp.rcpt("x@outside.example")
    answered = time.time()
    smtp.rset()
print(json.dumps({"logged_in": logged_in, "connected": connected, "answered": answered,
                  "code": code, "reply": reply.decode("utf-8", "replace")}))
"""


@dataclass(frozen=True)
class Try:
    address: str
    logged_in: float  # epoch seconds: POP3 PASS answered +OK
    connected: float  # the SMTP connection opened
    code: int  # the reply to RCPT TO (or to MAIL FROM when that failed)
    reply: str
    grant: Delay | None = None  # when the login line appeared and the map said OK, if it did

    @property
    def accepted(self) -> bool:
        return self.code == 250

    def describe(self) -> str:
        second = self.logged_in % 60
        return (
            f"{self.address} logged in at :{second:06.3f}, SMTP {self.connected - self.logged_in:.3f} s later: "
            f"{self.code} {self.reply}; "
            + (
                f"line in the log {self.grant.written - self.logged_in:+.3f} s, "
                f"map OK {self.grant.granted - self.logged_in:+.3f} s"
                if self.grant is not None
                else "never in the map"
            )
        )


def log_in_and_relay(client: harness.Client, server: str) -> Try:
    done = harness.run(
        [harness.binary("ip"), "netns", "exec", client.netns, sys.executable, "-c", CLIENT_CODE,
         server, harness.USER, harness.PASSWORD, str(SEND_AFTER)],
        timeout=30.0,
    )  # fmt: skip
    out = json.loads(done.stdout)
    address = client.v6 if ":" in server else client.v4
    return Try(address, out["logged_in"], out["connected"], out["code"], out["reply"])


def exactcron(config: Path, postfix: harness.Postfix, *args: str) -> None:
    harness.run(
        [sys.executable, "-m", "exactcron", "--config", str(config), *args], env=postfix.env, cwd=REPO
    )


def in_map(postfix: harness.Postfix, address: str) -> bool:
    found = harness.run(
        [harness.binary("postmap"), "-q", address, f"{postfix.map_type}:{postfix.map_path}"],
        check=False,
        env=postfix.env,
    )
    assert found.returncode in (0, 1), found.stderr
    return found.returncode == 0


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    harness.skip_or_fail(harness.environment_problems())
    with harness.lab_workdir() as path:
        yield path


@pytest.fixture(scope="module")
def network(workdir: Path) -> Iterator[None]:
    with harness.started(harness.Network()):
        yield


@pytest.fixture(scope="module")
def postfix(network: None, workdir: Path) -> Iterator[harness.Postfix]:
    instance = harness.Postfix(workdir / "postfix", workdir / "maps" / "relay", "hash")
    with harness.started(instance):
        yield instance


@pytest.fixture(params=["this machine", "debian13"], ids=["dovecot-here", "dovecot-2.4"])
def dovecot_log(request: pytest.FixtureRequest, network: None, workdir: Path) -> Iterator[Path]:
    """A fresh Dovecot writing its own log file (a fresh log: no login of another case in it)."""
    case = Path(tempfile.mkdtemp(prefix="dovecot-", dir=workdir))  # short: Dovecot's sockets live in it
    case.chmod(0o755)  # Dovecot's unprivileged users read the users file below it
    with ExitStack() as stack:
        place: harness.Place = harness.HERE
        if request.param == "debian13":
            harness.skip_or_fail(harness.environment_problems() + debian_root.build_problems())
            view = debian_root.RootView(debian_root.cached_root(debian_root.TRIXIE), case / "root", workdir)
            stack.enter_context(harness.started(view))
            place = view
        dovecot = harness.Dovecot(case / "dovecot", place=place)
        stack.enter_context(harness.started(dovecot))
        if request.param == "debian13":
            assert dovecot.version is not None and dovecot.version >= (2, 4), dovecot.version
        yield dovecot.log_path


def watched(log: Path, postfix: harness.Postfix, address: str, attempt: Callable[[], Try]) -> Try:
    """Run `attempt` while watching when its login line appears and when the map says OK."""
    lines = LogWatch(log)
    lines.skip_to_end()
    found: list[Delay | None] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=lambda: found.append(
            MapWatch(postfix.map_path, postfix.env).wait_granted(address, lines.seen(address), 5.0, stop)
        )
    )
    watcher.start()
    result = attempt()
    watcher.join(timeout=1.0)  # a refused try: a second more to see whether the grant came late
    stop.set()
    watcher.join()
    return replace(result, grant=found[0] if found else None)


def slots_after(after: float) -> Iterator[float]:
    """The instants (epoch seconds) of the slots after `after`, minute after minute."""
    minute = after - after % 60
    for later in itertools.count():
        for second in SLOTS:
            if minute + 60 * later + second > after:
                yield minute + 60 * later + second


def run_tries(
    dovecot_log: Path, postfix: harness.Postfix, workdir: Path, name: str, cron_args: tuple[str, ...]
) -> tuple[list[Try], EachMinute]:
    case = workdir / f"exactcron-{name}"
    case.mkdir()
    config = case / "exactcron.toml"
    config.write_text(
        f'state_dir = "{case / "state"}"\ntimeout = "30m"\n'
        f'[[source]]\npath = "{dovecot_log}"\nserver = "dovecot"\n'
        f'[[map]]\nmta = "postfix"\npath = "{postfix.map_path}"\ntype = "{postfix.map_type}"\n'
    )
    tries: list[Try] = []
    command = [sys.executable, "-m", "exactcron", "--config", str(config), "update", *cron_args]
    # cwd: `-m exactcron` runs this tree; env: postmap reads the private instance's main.cf.
    with EachMinute(command, case / "runs", env=postfix.env, cwd=REPO) as cron:
        # From a second on, so that the first run has read the (short) log.
        slots = slots_after(time.time() + 1.0)
        for number in range(TRIES):
            # A try that ran late (a loaded machine) moves the next one to a later slot, never
            # into the minute's last second.
            start = next(instant for instant in slots if instant >= time.time())
            time.sleep(max(0.0, start - time.time()))
            client, address, server = ADDRESSES[number % len(ADDRESSES)]
            assert not in_map(postfix, address), f"try {number}: {address} still leased from an earlier try"
            tries.append(
                watched(dovecot_log, postfix, address, functools.partial(log_in_and_relay, client, server))
            )
            # Flushed at once: the next try on this address starts with no lease.
            exactcron(config, postfix, "flush", address)
    assert not cron.failures(), cron.failures()
    for attempt in tries:  # the client did what Outlook does: SMTP at once
        assert attempt.connected - attempt.logged_in <= SEND_AFTER + 0.1, attempt.describe()
    return tries, cron


def summary(name: str, tries: list[Try]) -> str:
    accepted = sum(attempt.accepted for attempt in tries)
    offsets = sorted(round(attempt.logged_in % 60) for attempt in tries)
    return (
        f"{name}: {accepted} of {len(tries)} relays accepted, {len(tries) - accepted} refused "
        f"(SMTP {SEND_AFTER} s after the POP3 login; logins at seconds {offsets} of the minute)"
    )


def test_follow_relays_every_client_that_logs_in_and_sends_at_once(
    request: pytest.FixtureRequest, dovecot_log: Path, postfix: harness.Postfix, workdir: Path
) -> None:
    tries, _ = run_tries(dovecot_log, postfix, workdir, request.node.callspec.id + "-follow", ("--follow",))
    print("\n" + summary(f"update --follow each minute, {request.node.callspec.id}", tries))
    print("\n".join(t.describe() for t in tries))
    refused = [attempt.describe() for attempt in tries if not attempt.accepted]
    assert not refused, "\n".join(refused) + "\n" + harness.tail(postfix.maillog, 10)


def test_plain_update_each_minute_refuses_a_client_that_sends_at_once(
    request: pytest.FixtureRequest, dovecot_log: Path, postfix: harness.Postfix, workdir: Path
) -> None:
    tries, cron = run_tries(dovecot_log, postfix, workdir, request.node.callspec.id + "-plain", ())
    print("\n" + summary(f"plain update each minute, {request.node.callspec.id}", tries))
    assert len(cron.runs) >= 2  # cron really ran it: at the start and at a whole minute
    refused = [attempt for attempt in tries if not attempt.accepted]
    assert refused, "every try relayed without --follow"
    assert all(attempt.code == 554 and "Relay access denied" in attempt.reply for attempt in refused)
