"""End-to-end: Debian 12's own popa3d, solid-pop3d and GNU mailutils pop3d, run as Debian runs them.

Each mode (tests/e2e/pop3d.py) is the server's package installed by dpkg in a
throwaway view of a cached Debian 12 root, configured by its own maintainer
scripts and debconf answers, started the way its init script, systemd unit
or inetd line starts it, in a network namespace of its own, logging through
syslog(3) to rsyslogd.  rsyslogd writes what Debian 12's stock
/etc/rsyslog.conf writes to /var/log/syslog (``*.*;auth,authpriv.none``):
the servers log to ``daemon`` (popa3d, and tcpd under the server's tag),
``local0`` (solid-pop3d) and ``mail`` (GNU pop3d), so that is where all of
their lines meet; exactcron reads that file as cron runs it.

For each mode, from two client namespaces (C2 with a reverse name, C3
without): a good login, a wrong password and an unknown user at once, then
``update``: exactly the good login's address is granted, for its user, as
``show``, the real ``postmap -q`` and a real Postfix (RCPT to a foreign
domain: 250 or 554) tell.  Then two clients interleaved
(C2 connects, C3 connects, C3 logs in as alice, C2 as bob): each address
gets its own user.  Then a wrong password and the right one in one session:
granted exactly when the server let the second try in (GNU pop3d does).
A mode that logs no client address (popa3d from inetd
without tcpd, GNU pop3d standalone) is unsupported: it grants nothing.

Needs root, iproute2, rsyslog, Postfix's postmap and debootstrap (Debian's
archive, once, to build the root: about 40 s).  Without them it skips,
unless CI is set: then it fails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from tests.e2e import harness, pop3d
    from tests.support import debian_root
    from tests.support.maps import postmap_value
except ImportError:  # tests/ is no package: pytest put tests/ itself on sys.path
    from e2e import harness, pop3d  # type: ignore[no-redef,import-not-found,unused-ignore]
    from support import debian_root  # type: ignore[no-redef,import-not-found,unused-ignore]
    from support.maps import postmap_value  # type: ignore[no-redef,import-not-found,unused-ignore]

REPO = Path(__file__).resolve().parent.parent
C2 = harness.CLIENT2
C3 = harness.CLIENT3
ALICE, BOB = "alice", "bob"


@dataclass(frozen=True)
class Expected:
    rule: str  # the built-in rule the source names
    ends: str  # the line each session ends with, whatever its outcome
    supported: bool  # False: the mode logs no client address


_POPA3D = r"popa3d\[\d+\]: (?:\d+ \(\d+\) deleted, \d+ \(\d+\) left|Authentication failed for )"
_SOLID = r"solid-pop3d\[\d+\]: (?:session ended for user |authentication failed)"
_GNU = r"pop3d\[\d+\]: session ended for "
EXPECTED = {
    "popa3d-standalone": Expected("popa3d", _POPA3D, True),
    "popa3d-inetd-tcpd": Expected("popa3d", _POPA3D, True),
    "popa3d-inetd": Expected("popa3d", _POPA3D, False),
    "solid-pop3d-inetd-tcpd": Expected("solid-pop3d", _SOLID, True),
    "solid-pop3d-standalone": Expected("solid-pop3d", _SOLID, True),
    "gnu-pop3d-standalone": Expected("gnu-pop3d", _GNU, False),
    "gnu-pop3d-inetd-tcpd": Expected("gnu-pop3d", _GNU, True),
}
assert set(EXPECTED) == set(pop3d.MODES)
DEBIAN_12_VERSIONS = {"popa3d": "1.0.3-1.1", "solid-pop3d": "0.15-31", "mailutils-pop3d": "1:3.15-4"}


@pytest.fixture(scope="module")
def root() -> Path:
    harness.skip_or_fail(harness.environment_problems() + debian_root.build_problems())
    return debian_root.cached_root(debian_root.BOOKWORM_POP3D)


@pytest.fixture(scope="module")
def workdir(root: Path) -> Iterator[Path]:
    with harness.lab_workdir() as path:
        yield path


@pytest.fixture(scope="module")
def network(workdir: Path) -> Iterator[None]:
    servers = [pop3d.server_namespace(mode.index) for mode in pop3d.MODES.values()]
    with harness.started(harness.Network([C2, C3, *servers])):
        yield


@pytest.fixture(scope="module")
def postfix(network: None, workdir: Path) -> Iterator[harness.Postfix]:
    """One real Postfix for every mode, relaying for the map each mode's
    exactcron rewrites whole (the modes run one after the other)."""
    instance = harness.Postfix(workdir / "postfix", workdir / "maps" / "relay", "hash")
    with harness.started(instance):
        yield instance


@pytest.fixture(scope="module", params=sorted(pop3d.MODES))
def server(
    request: pytest.FixtureRequest, root: Path, workdir: Path, network: None
) -> Iterator[pop3d.ServerMode]:
    """One mode, started once for the module."""
    mode = pop3d.ServerMode(pop3d.MODES[request.param], root, workdir / request.param, workdir)
    with harness.started(mode):
        yield mode


@dataclass
class Exactcron:
    config: Path
    postfix: harness.Postfix

    def __call__(self, *args: str) -> str:
        argv = [sys.executable, "-m", "exactcron", "--config", str(self.config), *args]
        done = subprocess.run(
            argv,
            cwd=REPO,
            env=self.postfix.env,  # postmap reads the private instance's main.cf
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}"
        return done.stdout

    def leases(self) -> dict[str, str | None]:
        shown = json.loads(self("show", "--json"))
        return {lease["ip"]: lease["user"] for lease in shown["leases"]}

    def relays(self, address: str) -> bool:
        """What smtpd's check_client_access finds: Postfix's own postmap -q."""
        return postmap_value(self.postfix.map_path, address) == "OK"

    def relay_reply(self, client: harness.Client) -> int:
        """The real smtpd's reply to RCPT TO a foreign domain from ``client``: 250 or 554."""
        code, reply = harness.relay_probe(client, harness.SERVER_V4)
        assert code in (250, 554), f"{code} {reply}\n{harness.tail(self.postfix.maillog, 8)}"
        return code


def exactcron_for(server: pop3d.ServerMode, rule: str, postfix: harness.Postfix) -> Exactcron:
    case = server.directory / "exactcron"
    case.mkdir()
    config = case / "exactcron.toml"
    config.write_text(
        f"""\
state_dir = "{case / "state"}"
timeout = "30m"

[[source]]
path = "{server.log}"
server = "{rule}"

[[map]]
mta = "postfix"
path = "{postfix.map_path}"
type = "hash"
"""
    )
    return Exactcron(config, postfix)


def wait_for_sessions(server: pop3d.ServerMode, pattern: str, count: int) -> None:
    """Until ``count`` sessions have ended in the log: the server and rsyslogd write after the client is done."""
    ended = re.compile(pattern)

    def logged() -> bool:
        text = server.log.read_text(errors="replace") if server.log.exists() else ""
        return sum(1 for line in text.splitlines() if ended.search(line)) >= count

    harness.wait_until(f"{count} sessions ended in {server.log}", logged, timeout=20.0)


def test_pop3_logins_grant_their_own_address_and_user(
    server: pop3d.ServerMode, postfix: harness.Postfix
) -> None:
    expected = EXPECTED[server.mode.name]
    # Debian 12's own package, the version the docs and the corpus name. (One
    # test per mode: under xdist a mode is then started on one worker only.)
    assert server.version() == DEBIAN_12_VERSIONS[server.mode.package]
    exactcron = exactcron_for(server, expected.rule, postfix)
    address = server.address

    # A good login from C2; from C3 a wrong password and an unknown user, all at once.
    good, wrong, unknown = (pop3d.Session(c, address) for c in (C2, C3, C3))
    try:
        assert good.login(ALICE, pop3d.USERS[ALICE])
        assert not wrong.login(ALICE, "not-her-password")
        assert not unknown.login("nosuchuser", "whatever")
    finally:
        for session in (good, wrong, unknown):
            session.close()
    wait_for_sessions(server, expected.ends, 3)
    exactcron("update")
    if expected.supported:
        assert exactcron.leases() == {C2.v4: ALICE}, harness.tail(server.log)
        assert exactcron.relays(C2.v4)
    else:
        assert exactcron.leases() == {}, harness.tail(server.log)
        assert C2.v4 not in server.log.read_text(), "this mode logs the address: it could be supported"
    assert not exactcron.relays(C3.v4)
    # The real Postfix agrees: the logged-in address relays, the other does not.
    assert (exactcron.relay_reply(C2), exactcron.relay_reply(C3)) == (250 if expected.supported else 554, 554)

    # Interleaved: connects C2 then C3, logins C3 (alice) then C2 (bob).
    exactcron("flush", C2.v4)
    first, second = pop3d.Session(C2, address), pop3d.Session(C3, address)
    try:
        assert second.login(ALICE, pop3d.USERS[ALICE])
        assert first.login(BOB, pop3d.USERS[BOB])
    finally:
        first.close()
        second.close()
    wait_for_sessions(server, expected.ends, 5)
    exactcron("update")
    if expected.supported:
        assert exactcron.leases() == {C2.v4: BOB, C3.v4: ALICE}, harness.tail(server.log)
        assert exactcron.relays(C2.v4) and exactcron.relays(C3.v4)
    else:
        assert exactcron.leases() == {}, harness.tail(server.log)
        assert not exactcron.relays(C2.v4) and not exactcron.relays(C3.v4)

    # A wrong password, then the right one in the same session: GNU pop3d
    # keeps the session open and lets the second try in, popa3d and
    # solid-pop3d close it. Granted exactly when the server said +OK.
    exactcron("flush", C2.v4)
    exactcron("flush", C3.v4)
    retry = pop3d.Session(C3, address)
    try:
        assert not retry.login(BOB, "not-his-password")
        accepted = retry.login(BOB, pop3d.USERS[BOB])
    finally:
        retry.close()
    wait_for_sessions(server, expected.ends, 6)
    exactcron("update")
    assert accepted == (server.mode.package == "mailutils-pop3d"), "the server's behaviour changed"
    granted = {C3.v4: BOB} if accepted and expected.supported else {}
    assert exactcron.leases() == granted, harness.tail(server.log)
    assert exactcron.relays(C3.v4) == bool(granted)
