"""Real servers for the end-to-end test: namespaces, rsyslogd, Dovecot, Postfix.

Everything here runs the Debian packages' own binaries as root, on addresses
that only exist inside this machine: a bridge in the root namespace carries the
server addresses 10.77.0.1 and fd77::1, and each client lives in a network
namespace of its own (``exc-c2``, ``exc-c3``) behind a veth pair, so that
Dovecot and Postfix see distinct, real client addresses.  Nothing has a
default route; no traffic can leave the machine.

Every ``start()`` waits, in a loop bounded in count and time, until the server
really serves; every ``stop()`` ends the processes it started by their pid and
is safe to call twice or after a failed start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from filelock import FileLock

SERVER_V4 = "10.77.0.1"
SERVER_V6 = "fd77::1"
BRIDGE = "exc-br0"
USER = "alice"
PASSWORD = "secret"
# An unprivileged uid/gid that Debian always has; Dovecot refuses uid 0 for mail.
MAIL_UID = 65534
MAIL_GID = 65534

REQUIRED_BINARIES = (
    "ip",
    "unshare",
    "mount",
    "dovecot",
    "rsyslogd",
    "postfix",
    "postconf",
    "postmap",
)

# Binaries live in sbin; cron and CI shells do not always have it on PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

T = TypeVar("T")


class HarnessError(RuntimeError):
    """A server or the network could not be set up; the message says why."""


@dataclass(frozen=True)
class Client:
    """A network namespace standing for one client host."""

    netns: str
    v4: str
    v6: str
    host_if: str  # veth end in the root namespace, enslaved to the bridge
    ns_if: str  # veth end inside the namespace


CLIENT2 = Client("exc-c2", "10.77.0.2", "fd77::2", "exc-c2h", "exc-c2n")
CLIENT3 = Client("exc-c3", "10.77.0.3", "fd77::3", "exc-c3h", "exc-c3n")
CLIENTS = (CLIENT2, CLIENT3)


# --------------------------------------------------------------------------
# small tools


def which(name: str) -> str | None:
    """Find a binary, sbin directories included."""
    return shutil.which(name, path=_SEARCH_PATH)


def binary(name: str) -> str:
    found = which(name)
    if found is None:
        raise HarnessError(f"required binary not found: {name}")
    return found


def environment_problems() -> list[str]:
    """Why this machine cannot run the test; empty when it can."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("needs root (network namespaces, mounts, servers on port 25)")
    missing = [name for name in REQUIRED_BINARIES if which(name) is None]
    if missing:
        problems.append(
            "missing binaries: "
            + ", ".join(missing)
            + " (apt-get install postfix dovecot-pop3d dovecot-imapd rsyslog"
            " iproute2 util-linux mount)"
        )
    return problems


def wait_until(
    what: str,
    check: Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy.

    Bounded both by the deadline and by a number of attempts, so a clock that
    misbehaves cannot make it spin forever.
    """
    deadline = time.monotonic() + timeout
    attempts = int(timeout / interval) + 2
    for _ in range(attempts):
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:g}s waiting for {what}")


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, output captured; raise with it on failure."""
    argv = [os.fspath(a) for a in args]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(argv)}: no exit within {timeout:g}s") from exc
    if check and done.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv)} exited {done.returncode}\n"
            f"stdout: {done.stdout.strip()}\nstderr: {done.stderr.strip()}"
        )
    return done


def tail(path: Path, lines: int = 30) -> str:
    """The end of a log file, for error messages; never raises."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pid(pid: int, what: str, *, timeout: float = 10.0) -> None:
    """SIGTERM, wait (bounded), then SIGKILL: stop exactly this process."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    try:
        wait_until(f"{what} (pid {pid}) to exit", lambda: not pid_alive(pid), timeout=timeout)
    except HarnessError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(f"{what} (pid {pid}) to die", lambda: not pid_alive(pid), timeout=5.0)


def stop_popen(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    """Stop a child we started, by its pid, and reap it."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired as exc:
                raise HarnessError(f"{what} (pid {proc.pid}) survived SIGKILL") from exc


def wait_for_next_second() -> None:
    """Return once the wall clock has entered a later whole second.

    For logs stamped with whole seconds: an event after this call is stamped
    strictly later than anything that happened before it.
    """
    start = int(time.time())
    wait_until("the next second", lambda: int(time.time()) > start, timeout=2.0, interval=0.01)


def skip_or_fail(problems: list[str]) -> None:
    """Skip a test whose servers are missing; under CI (which installs everything
    and runs as root) fail instead: a gap there is a broken bootstrap, which must
    not pass silently as a skip."""
    if problems:
        import pytest

        reason = "end-to-end test cannot run: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@contextlib.contextmanager
def lab_workdir() -> Iterator[Path]:
    """A work directory of the lab, the machine's lab lock held while it is in use."""
    with machine_lock():
        path = make_workdir()
        try:
            yield path
        finally:
            remove_workdir(path)


def make_workdir() -> Path:
    """A fresh directory the servers' unprivileged users can traverse.

    pytest's tmp_path sits under a 0700 directory that ``postfix`` and
    ``dovenull`` could not enter, so the servers get a directory of their own.
    """
    path = Path(tempfile.mkdtemp(prefix="exc-e2e-"))
    path.chmod(0o755)
    return path


def remove_workdir(path: Path) -> None:
    if os.environ.get("EXC_E2E_KEEP"):
        print(f"keeping {path} (EXC_E2E_KEEP is set)", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def listening(address: str, port: int) -> bool:
    """Whether some socket in this network namespace listens on address:port.

    Read from /proc rather than probed by connecting, so that waiting for a
    server sends it no traffic and leaves no line in its log.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    wanted = socket.inet_pton(family, address)
    with open(table, encoding="ascii") as handle:
        rows = handle.read().splitlines()[1:]
    for row in rows:
        fields = row.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A: TCP_LISTEN
            continue
        addr_hex, port_hex = fields[1].split(":")
        if int(port_hex, 16) != port:
            continue
        raw = bytes.fromhex(addr_hex)
        # The kernel prints each 32-bit word in host byte order.
        if sys.byteorder == "little":
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        if raw == wanted:
            return True
    return False


class Place(Protocol):
    """Where a server's programs run: this machine, or a Debian root (tests/support/debian_root.py)."""

    def binary(self, name: str) -> str: ...

    def command(self, argv: Sequence[str]) -> list[str]: ...


class ThisMachine:
    """The programs installed on this machine, run as they are."""

    def binary(self, name: str) -> str:
        return binary(name)

    def command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


HERE = ThisMachine()


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    """Hold the machine's bridge, namespaces and server ports for one run.

    Two runs at once (two checkouts on one machine) would otherwise tear
    down each other's network: Network.start() clears what it finds.
    """
    lock_dir = Path("/run/lock")
    lock_dir.mkdir(parents=True, exist_ok=True)  # a bare chroot or container may lack it
    with FileLock(str(lock_dir / "exactcron-e2e.lock"), timeout=600):
        yield


# --------------------------------------------------------------------------
# network namespaces


def _port_forwarding(state_file: Path) -> bool:
    # 3 is BR_STATE_FORWARDING: frames pass from then on.
    return state_file.read_text().strip() == "3"


class Network:
    """The bridge with the server addresses and one namespace per client."""

    def __init__(self, clients: Sequence[Client] = CLIENTS) -> None:
        self.clients = tuple(clients)
        self._ip = binary("ip")

    def _ip_run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self._ip, *args], check=check)

    def start(self) -> None:
        # A run that was killed may have left its namespaces behind.
        self.stop()
        ip = self._ip_run
        ip("link", "add", "name", BRIDGE, "type", "bridge", "forward_delay", "0")
        ip("addr", "add", f"{SERVER_V4}/24", "dev", BRIDGE)
        # nodad: usable at once instead of "tentative" for a second or more.
        ip("addr", "add", f"{SERVER_V6}/64", "dev", BRIDGE, "nodad")
        ip("link", "set", BRIDGE, "up")
        for client in self.clients:
            ip("netns", "add", client.netns)
            ip("link", "add", client.host_if, "type", "veth", "peer", "name", client.ns_if)
            ip("link", "set", client.ns_if, "netns", client.netns)
            ip("link", "set", client.host_if, "master", BRIDGE)
            ip("link", "set", client.host_if, "up")
            inside = ("-n", client.netns)
            ip(*inside, "link", "set", "lo", "up")
            ip(*inside, "addr", "add", f"{client.v4}/24", "dev", client.ns_if)
            ip(*inside, "addr", "add", f"{client.v6}/64", "dev", client.ns_if, "nodad")
            ip(*inside, "link", "set", client.ns_if, "up")
        for client in self.clients:
            state = Path(f"/sys/class/net/{client.host_if}/brport/state")
            wait_until(
                f"bridge port {client.host_if} to forward",
                functools.partial(_port_forwarding, state),
                timeout=10.0,
            )

    def stop(self) -> None:
        """Remove everything start() makes; quiet about what is already gone."""
        existing = self._ip_run("netns", "list", check=False).stdout.split()
        for client in self.clients:
            if client.netns in existing:
                # Deleting the namespace destroys its veth end and so the pair.
                self._ip_run("netns", "del", client.netns, check=False)
            if Path(f"/sys/class/net/{client.host_if}").exists():
                self._ip_run("link", "del", client.host_if, check=False)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            self._ip_run("link", "del", BRIDGE, check=False)
        left = [c.netns for c in self.clients if Path(f"/run/netns/{c.netns}").exists()]
        if left or Path(f"/sys/class/net/{BRIDGE}").exists():
            raise HarnessError(f"could not remove namespaces {left} or bridge {BRIDGE}")


# Runs inside a client namespace as `python3 -c CLIENT_CODE ACTION ...` and
# prints one JSON object; kept to the standard library so any python3 works.
CLIENT_CODE = r"""
import imaplib, json, poplib, smtplib, sys

action, host, *rest = sys.argv[1:]
out = {}
if action == "pop3":
    user, password = rest
    box = poplib.POP3(host, 110, timeout=10)
    try:
        box.user(user)
        try:
            box.pass_(password)
            out = {"ok": True}
        except poplib.error_proto as exc:
            out = {"ok": False, "reply": exc.args[0].decode("utf-8", "replace")}
    finally:
        box.quit()
elif action == "imap":
    user, password = rest
    box = imaplib.IMAP4(host, 143, timeout=10)
    try:
        box.login(user, password)
        out = {"ok": True}
    except imaplib.IMAP4.error as exc:
        out = {"ok": False, "reply": str(exc)}
    finally:
        box.logout()
elif action == "relay":
    (recipient,) = rest
    with smtplib.SMTP(host, 25, timeout=10, local_hostname="client.exc-e2e.test") as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("probe@client.exc-e2e.test")
        if code == 250:
            code, reply = smtp.rcpt(recipient)
        smtp.rset()
    out = {"code": code, "reply": reply.decode("utf-8", "replace")}
elif action == "relay_auth":
    user, password, recipient = rest
    with smtplib.SMTP(host, 587, timeout=10, local_hostname="client.exc-e2e.test") as smtp:
        smtp.ehlo()
        smtp.login(user, password)
        code, reply = smtp.mail("probe@client.exc-e2e.test")
        if code == 250:
            code, reply = smtp.rcpt(recipient)
        smtp.rset()
    out = {"code": code, "reply": reply.decode("utf-8", "replace")}
else:
    raise SystemExit("unknown action " + action)
print(json.dumps(out))
"""


def client_run(client: Client, action: str, *args: str) -> dict[str, object]:
    """Run one client action inside the client's namespace; its JSON result."""
    done = run(
        [binary("ip"), "netns", "exec", client.netns, sys.executable, "-c", CLIENT_CODE, action, *args],
        timeout=30.0,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def login(client: Client, protocol: str, server: str, password: str = PASSWORD) -> bool:
    """Log in as alice over pop3 or imap; True when the server accepted."""
    return bool(client_run(client, protocol, server, USER, password)["ok"])


def relay_with_auth(client: Client, server: str, recipient: str = "x@outside.example") -> tuple[int, str]:
    """The reply to RCPT TO:<recipient> on the submission port, after AUTH PLAIN as alice."""
    result = client_run(client, "relay_auth", server, USER, PASSWORD, recipient)
    code = result["code"]
    assert isinstance(code, int)
    return code, str(result["reply"])


def relay_probe(client: Client, server: str, recipient: str = "x@outside.example") -> tuple[int, str]:
    """The SMTP reply to RCPT TO:<recipient> for a foreign domain."""
    result = client_run(client, "relay", server, recipient)
    code = result["code"]
    assert isinstance(code, int)
    return code, str(result["reply"])


# --------------------------------------------------------------------------
# rsyslogd


class Rsyslog:
    """A private rsyslogd: its own socket, mail.* into its own file.

    The output uses RSYSLOG_FileFormat, the RFC 3339 template that Debian 12's
    and 13's stock configurations write /var/log/mail.log with.
    """

    def __init__(self, directory: Path, place: Place = HERE, selector: str = "mail.*") -> None:
        """``selector``: the facilities routed into ``mail_log``, as a site's rsyslog.conf names them."""
        self.directory = directory
        self.place = place
        self.selector = selector
        self.socket = directory / "log.sock"
        self.mail_log = directory / "mail.log"
        self.conf = directory / "rsyslog.conf"
        self.pidfile = directory / "rsyslogd.pid"
        self.output = directory / "rsyslogd.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.directory / "work").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f"""\
global(workDirectory="{self.directory / "work"}")
# SysSock.Use=off: leave /dev/log alone; listen on our own socket only.
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.socket}" CreatePath="on")
{self.selector} action(type="omfile" file="{self.mail_log}" template="RSYSLOG_FileFormat")
"""
        )
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                self.place.command(
                    [self.place.binary("rsyslogd"), "-n", "-f", str(self.conf), "-i", str(self.pidfile)]
                ),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc
        try:
            wait_until(
                "rsyslogd's socket",
                lambda: self._alive_or_raise(proc) and self.socket.exists(),
                timeout=10.0,
            )
            # The socket exists before the output action is ready; a marker
            # that makes it through to the file proves the whole path works.
            marker = f"exc-e2e-ready-{os.getpid()}-{time.monotonic_ns()}"
            self.send(f"<22>exc-e2e-harness: {marker}")  # 22 = mail.info

            def arrived() -> bool:
                self._alive_or_raise(proc)
                return self.mail_log.exists() and marker in self.mail_log.read_text()

            wait_until("rsyslogd to write a test message", arrived, timeout=10.0)
        except BaseException:
            self.stop()
            raise

    def _alive_or_raise(self, proc: subprocess.Popen[bytes]) -> bool:
        if proc.poll() is not None:
            raise HarnessError(f"rsyslogd exited {proc.returncode}:\n{tail(self.output)}")
        return True

    def send(self, message: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), str(self.socket))

    def stop(self) -> None:
        stop_popen(self.proc, "rsyslogd")


# --------------------------------------------------------------------------
# Dovecot

# Dovecot logs to syslog through glibc's syslog(3), whose socket is the
# compiled-in /dev/log: no Dovecot setting and no environment variable moves
# it.  Instead Dovecot gets a mount namespace of its own in which /dev is an
# overlay (the real /dev below, a tmpfs on top) holding a /dev/log symlink to
# the private rsyslogd's socket.  The root namespace's /dev/log, and any
# system syslog daemon behind it, is never touched; the overlay vanishes with
# the namespace when Dovecot exits.
_DEVLOG_WRAPPER = r"""
set -e
scratch=$1; target=$2; shift 2
mount -t tmpfs -o mode=0755 exc-e2e-dev "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay -o "lowerdir=/dev,upperdir=$scratch/upper,workdir=$scratch/work" exc-e2e-dev /dev
rm -f /dev/log
ln -s "$target" /dev/log
exec "$@"
"""


def dovecot_version(place: Place = HERE) -> tuple[int, int]:
    """Major and minor version of the Dovecot at ``place``: (2, 3), (2, 4)..."""
    shown = run(place.command([place.binary("dovecot"), "--version"])).stdout
    found = re.match(r"\s*(\d+)\.(\d+)", shown)
    if found is None:
        raise HarnessError(f"dovecot --version printed {shown!r}")
    return int(found[1]), int(found[2])


# The lines in which 2.3 and 2.4 configurations differ; 2.4 refuses a 2.3
# file ("The first setting must be dovecot_config_version").
_DOVECOT_23 = """\
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {users}
}}
userdb {{
  driver = passwd-file
  args = {users}
}}
"""
_DOVECOT_24 = """\
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
auth_allow_cleartext = yes
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {{
  passwd_file_path = {users}
}}
userdb passwd-file {{
  passwd_file_path = {users}
}}
"""
# The same in both.
_DOVECOT_COMMON = """\
base_dir = {base_dir}
state_dir = {state_dir}
protocols = pop3 imap
listen = {v4}, {v6}
ssl = no
auth_mechanisms = plain login
# The failed login of the scenario should not cost the default 2 s.
auth_failure_delay = 0
default_login_user = dovenull
default_internal_user = dovecot
log_path = {log_path}
syslog_facility = mail
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


# The socket Postfix's smtpd asks to authenticate a client (SMTP AUTH).
_DOVECOT_AUTH = """\
service auth {{
  unix_listener {path} {{
    mode = 0666
  }}
}}
"""


class Dovecot:
    """A private Dovecot: pop3 and imap on the server addresses, user alice.

    ``syslog_socket`` set: logs through syslog to that socket (see above).
    Otherwise Dovecot writes its own format to ``log_path``.  ``place`` says
    whose Dovecot it is; its configuration is written for that Dovecot's
    version.
    """

    def __init__(
        self,
        directory: Path,
        *,
        syslog_socket: Path | None = None,
        place: Place = HERE,
        auth_socket: Path | None = None,
    ) -> None:
        """`auth_socket`: where Dovecot's auth service listens for Postfix's SASL
        (`smtpd_sasl_type = dovecot`); Dovecot 2.3's syntax."""
        self.auth_socket = auth_socket
        self.directory = directory
        self.syslog_socket = syslog_socket
        self.place = place
        self.conf = directory / "dovecot.conf"
        self.base_dir = directory / "run"
        self.log_path = directory / "dovecot.log"
        self.output = directory / "dovecot.out"
        self.users = directory / "users"
        self.proc: subprocess.Popen[bytes] | None = None
        self.version: tuple[int, int] | None = None

    def _write_config(self) -> None:
        home = self.directory / "home" / USER
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, MAIL_UID, MAIL_GID)
        home.chmod(0o700)
        (self.directory / "state").mkdir(exist_ok=True)
        # {PLAIN}: the scheme in the password itself, read alike by 2.3 and 2.4.
        self.users.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{MAIL_UID}:{MAIL_GID}::{home}::\n")
        self.users.chmod(0o644)
        self.version = dovecot_version(self.place)
        # The version lines first: 2.4 wants dovecot_config_version before all.
        specific = _DOVECOT_24 if self.version >= (2, 4) else _DOVECOT_23
        self.conf.write_text(
            specific.format(users=self.users)
            + _DOVECOT_COMMON.format(
                base_dir=self.base_dir,
                state_dir=self.directory / "state",
                v4=SERVER_V4,
                v6=SERVER_V6,
                log_path="syslog" if self.syslog_socket is not None else self.log_path,
            )
            + (_DOVECOT_AUTH.format(path=self.auth_socket) if self.auth_socket is not None else "")
        )

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_config()
        place = self.place
        # -F: stay in the foreground, so the pid we hold is the master's.
        command = [place.binary("dovecot"), "-F", "-c", str(self.conf)]
        if self.syslog_socket is not None:
            scratch = self.directory / "devoverlay"
            scratch.mkdir(exist_ok=True)
            # unshare execs the shell, which execs dovecot: still one pid.
            command = [
                place.binary("unshare"), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", _DEVLOG_WRAPPER, "exc-e2e-dovecot",
                str(scratch), str(self.syslog_socket), *command,
            ]  # fmt: skip
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                place.command(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc
        endpoints = [(a, p) for a in (SERVER_V4, SERVER_V6) for p in (110, 143)]

        def ready() -> bool:
            if proc.poll() is not None:
                raise HarnessError(
                    f"dovecot exited {proc.returncode}:\n{tail(self.output)}\n{tail(self.log_path)}"
                )
            return all(listening(a, p) for a, p in endpoints)

        try:
            wait_until("dovecot to listen on pop3 and imap", ready, timeout=15.0)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # Dovecot's master takes its children down on SIGTERM.
        stop_popen(self.proc, "dovecot")


# --------------------------------------------------------------------------
# Postfix

_MASTER_CF = """\
# chroot n everywhere: the private queue has none of the files a chroot needs.
{v4}:smtp    inet  n - n - - smtpd
[{v6}]:smtp  inet  n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
local      unix  - n n - - local
virtual    unix  - n n - - virtual
lmtp       unix  - - n - - lmtp
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A private Postfix instance whose relay permission is the access map.

    ``map_path`` is where exactcron writes its map; the instance consults it
    as ``check_client_access TYPE:map_path`` between permit_mynetworks and
    reject_unauth_destination, the hook real-servers.md recommends.
    """

    def __init__(
        self,
        directory: Path,
        map_path: Path,
        map_type: str = "hash",
        addresses: tuple[str, str] = (SERVER_V4, SERVER_V6),
        client_access: str | None = None,
        sasl_path: Path | None = None,
    ) -> None:
        """`addresses`: the IPv4 and IPv6 address smtpd listens on; `client_access`:
        the table `check_client_access` consults (default `map_type:map_path`);
        `sasl_path`: a Dovecot auth socket, for a submission listener (port 587,
        `postfix/submission/smtpd`) that relays for SMTP AUTH only."""
        self.sasl_path = sasl_path
        self.addresses = addresses
        self.client_access = client_access or f"{map_type}:{map_path}"
        self.directory = directory
        self.config_dir = directory / "config"
        self.queue_dir = directory / "queue"
        self.data_dir = directory / "data"
        self.maillog = directory / "postfix.log"
        self.map_path = map_path
        self.map_type = map_type
        self.master_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment in which postmap/postconf use this instance's main.cf."""
        return {**os.environ, "MAIL_CONFIG": str(self.config_dir)}

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        (self.config_dir / "main.cf").write_text(
            f"""\
compatibility_level = 3.6
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
maillog_file = {self.maillog}
maillog_file_prefixes = {self.directory}
myhostname = relay.exc-e2e.test
mydomain = exc-e2e.test
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = {self.addresses[0]}, [{self.addresses[1]}]
inet_protocols = all
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, check_client_access {self.client_access}, reject_unauth_destination
# discard:, not error:, so that an accepted relay reads 250 at RCPT.
default_transport = discard:
relay_transport = discard:
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
"""
        )
        submission = ""
        if self.sasl_path is not None:
            options = (
                "-o syslog_name=postfix/submission -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_type=dovecot "
                f"-o smtpd_sasl_path={self.sasl_path} "
                "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
            )
            submission = "".join(
                f"{listen}:submission inet n - n - - smtpd {options}\n"
                for listen in (self.addresses[0], f"[{self.addresses[1]}]")
            )
        (self.config_dir / "master.cf").write_text(
            _MASTER_CF.format(v4=self.addresses[0], v6=self.addresses[1]) + submission
        )

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        self._write_config()
        if not self.map_path.exists():
            # smtpd exits at once on a missing table; until exactcron writes
            # the real map, an empty one stands in (nobody may relay).
            self.map_path.parent.mkdir(parents=True, exist_ok=True)
            self.map_path.write_text("")
            if self.map_type != "texthash":
                run([binary("postmap"), f"{self.map_type}:{self.map_path}"], env=self.env)
        done = run([binary("postfix"), "-c", str(self.config_dir), "start"], check=False, timeout=60.0)
        if done.returncode != 0:
            raise HarnessError(
                f"postfix start exited {done.returncode}: {done.stderr.strip()}\n{tail(self.maillog)}"
            )
        try:
            self.master_pid = wait_until("postfix master.pid", self._read_master_pid, timeout=15.0)
            for address in self.addresses:
                wait_until(
                    f"smtpd on [{address}]:25 to greet",
                    functools.partial(self._greets, address),
                    timeout=20.0,
                    interval=0.1,
                )
        except BaseException:
            self.stop()
            raise

    def _greets(self, address: str) -> bool:
        """One connection from the root namespace: did smtpd say 220?

        A listening socket is not enough: master owns it, and an smtpd that
        cannot open its tables dies per connection, so only a banner counts.
        """
        pid = self.master_pid
        if pid is not None and not pid_alive(pid):
            raise HarnessError(f"postfix master exited:\n{tail(self.maillog)}")
        try:
            with socket.create_connection((address, 25), timeout=2.0) as sock:
                sock.settimeout(2.0)
                banner = sock.recv(512)
                sock.sendall(b"QUIT\r\n")
        except OSError:
            return False
        return banner.startswith(b"220")

    def stop(self) -> None:
        pid = self.master_pid or self._read_master_pid()
        if pid is None or not pid_alive(pid):
            return
        # `postfix stop` signals the master, which stops its children; the
        # pid-based stop then waits for it and kills it if it lingers.
        run([binary("postfix"), "-c", str(self.config_dir), "stop"], check=False, timeout=30.0)
        stop_pid(pid, "postfix master", timeout=15.0)


# --------------------------------------------------------------------------
# reading the mail log


class MailLog:
    """Counts Dovecot's lines in a log, to wait until a login has been logged.

    The servers log asynchronously (Dovecot's log process, then rsyslogd), so
    a client being told "OK" does not mean the line is on disk yet.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[str]:
        try:
            return self.path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def logins(self, address: str) -> int:
        """Successful logins from ``address``: 2.3 writes ``Login:``, 2.4 ``Logged in:``."""
        needle = f"rip={address},"
        return sum(
            1
            for line in self.lines()
            if ("Login: user=<" in line or "Logged in: user=<" in line) and needle in line
        )

    def mentions(self, address: str) -> int:
        needle = f"rip={address},"
        return sum(1 for line in self.lines() if needle in line)

    def wait_logins(self, address: str, count: int) -> None:
        wait_until(
            f"{count} logins from {address} in {self.path}",
            lambda: self.logins(address) >= count,
            timeout=10.0,
        )

    def wait_mentions(self, address: str, count: int) -> None:
        wait_until(
            f"{count} lines about {address} in {self.path}",
            lambda: self.mentions(address) >= count,
            timeout=10.0,
        )


class Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def started(server: Startable) -> Iterator[None]:
    """Start a server; stop it on leaving, whatever happened in between, and when
    its start fails partway (a bridge, a namespace and its mount, a process may
    already be there). The start's own error is the one raised."""
    try:
        server.start()
    except BaseException as error:
        try:
            server.stop()
        except Exception as cleanup:  # the start's error is the one to see
            error.add_note(f"stopping what the failed start left also failed: {cleanup!r}")
        raise
    try:
        yield
    finally:
        server.stop()
