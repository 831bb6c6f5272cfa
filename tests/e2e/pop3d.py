"""Debian 12's own small POP3 servers in the lab: popa3d, solid-pop3d, GNU mailutils pop3d.

Each mode (a server, run standalone or from openbsd-inetd, behind tcpd or
not) gets a throwaway view of the cached Debian 12 root
(``debian_root.BOOKWORM_POP3D``) in which its package is installed with dpkg
as Debian installs it (debconf answers preseeded, the maintainer scripts
writing /etc/default and /etc/inetd.conf), and a network namespace of its
own on the lab's bridge: Debian's servers listen on port 110 of every
address, which then means that namespace's only.  The server, inetd and
whatever they fork run in a PID namespace that dies with the process the
test holds, so stopping it stops all of them.  The syslog(3) socket,
/dev/log in the view, leads to an rsyslogd run from the same root.

Users ``alice`` and ``bob`` are real system users of the root (passwd and
shadow, checked through PAM as Debian configures each server), with a mailbox
of two messages each in /var/mail.  C2 has a reverse name in the root's
/etc/hosts (tcpd and solid-pop3d then log ``NAME (ADDR)``), C3 has none.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    from tests.e2e import harness
    from tests.support import debian_root
except ImportError:  # tests/ itself on sys.path
    from support import debian_root  # type: ignore[no-redef,import-not-found,unused-ignore]

    from e2e import harness  # type: ignore[no-redef,import-not-found,unused-ignore]

USERS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}
C2_NAME = "c2.client.example"
# What Debian 12's stock /etc/rsyslog.conf writes to /var/log/syslog.  These
# servers log to daemon (popa3d; tcpd under the server's tag and PID), local0
# (solid-pop3d) and mail (GNU pop3d): that file is where all their lines meet.
SELECTOR = "*.*;auth,authpriv.none"
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def server_namespace(index: int) -> harness.Client:
    """A namespace on the lab's bridge for one server mode (10.77.0.1x)."""
    return harness.Client(
        f"exc-p{index}", f"10.77.0.{10 + index}", f"fd77::{10 + index}", f"exc-p{index}h", f"exc-p{index}n"
    )


@dataclass(frozen=True)
class Mode:
    """One way Debian runs one server."""

    name: str
    package: str  # installed in the view: popa3d, solid-pop3d or mailutils-pop3d
    preseed: str  # debconf answers, as `debconf-set-selections` reads them
    configure: str  # shell, run after the install: what a site edits
    start: str  # shell: start the server as Debian's init script or unit does
    index: int  # its server namespace


MODES = {
    mode.name: mode
    for mode in (
        # /etc/init.d/popa3d: `popa3d -D` when /etc/default/popa3d has RUN_STANDALONE=yes (the default).
        Mode("popa3d-standalone", "popa3d", "popa3d popa3d/standalone boolean true", "", "popa3d -D", 1),
        # Answer "no": postinst adds `pop3 stream tcp nowait root /usr/sbin/tcpd /usr/sbin/popa3d`.
        Mode("popa3d-inetd-tcpd", "popa3d", "popa3d popa3d/standalone boolean false", "", "inetd", 2),
        # A site's inetd line without tcpd.
        Mode(
            "popa3d-inetd",
            "popa3d",
            "popa3d popa3d/standalone boolean false",
            r"sed -i 's|/usr/sbin/tcpd\t/usr/sbin/popa3d|/usr/sbin/popa3d\tpopa3d|' /etc/inetd.conf",
            "inetd",
            3,
        ),
        # solid-pop3d's default: postinst adds `pop3 stream tcp nowait root.mail /usr/sbin/tcpd /usr/sbin/solid-pop3d`.
        Mode(
            "solid-pop3d-inetd-tcpd",
            "solid-pop3d",
            "solid-pop3d solid-pop3d/run_mode select inetd",
            "",
            "inetd",
            4,
        ),
        # RUN_MODE="daemon": /etc/init.d/solid-pop3d starts it with no options.
        Mode(
            "solid-pop3d-standalone",
            "solid-pop3d",
            "solid-pop3d solid-pop3d/run_mode select daemon",
            "",
            "solid-pop3d",
            5,
        ),
        # mailutils-pop3d.service: `pop3d --daemon`.
        Mode("gnu-pop3d-standalone", "mailutils-pop3d", "", "", "pop3d --daemon", 6),
        # Debian adds no inetd line for it: a site's, the way Debian's other servers' lines read.
        Mode(
            "gnu-pop3d-inetd-tcpd",
            "mailutils-pop3d",
            "",
            r"printf 'pop3\tstream\ttcp\tnowait\troot\t/usr/sbin/tcpd\t/usr/sbin/pop3d -i\n' >> /etc/inetd.conf",
            "inetd",
            7,
        ),
    )
}

_SETUP = r"""
set -e
ln -sf "$1" /dev/log
echo "{c2v4} {c2name}" >> /etc/hosts
echo "{c2v6} {c2name}" >> /etc/hosts
for user in {users}; do
    useradd --create-home --shell /bin/sh "$user"
    printf 'From sender@example.org Mon Nov 30 10:00:00 2026\nSubject: one\n\nbody\n\n' > /var/mail/$user
    printf 'From sender@example.org Mon Nov 30 10:00:01 2026\nSubject: two\n\nbody\n\n' >> /var/mail/$user
    chown "$user:mail" /var/mail/$user
    chmod 0660 /var/mail/$user
done
printf '%s\n' {passwords} | chpasswd
if [ "{package}" != mailutils-pop3d ]; then
    dpkg --remove mailutils-pop3d >/dev/null
    echo "{preseed}" | debconf-set-selections
    dpkg --install {debs}/{package}_*.deb >/dev/null
fi
{configure}
"""


class ServerMode:
    """A mode running: its view, its rsyslogd (``log``), its server."""

    def __init__(self, mode: Mode, root: Path, directory: Path, shared: Path) -> None:
        self.mode = mode
        self.namespace = server_namespace(mode.index)
        self.directory = directory
        self.view = debian_root.RootView(root, directory / "root", shared)
        self.rsyslog = harness.Rsyslog(directory / "rsyslog", self.view, selector=SELECTOR)
        self.output = directory / "server.out"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.rsyslog.mail_log

    @property
    def address(self) -> str:
        return self.namespace.v4

    def _in_view(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": _PATH, "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
        return harness.run(
            self.view.command(["/bin/sh", "-c", script, "setup", *args]), env=env, timeout=60.0
        )

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.view.start()
        self.rsyslog.start()
        mode = self.mode
        self._in_view(
            _SETUP.format(
                c2v4=harness.CLIENT2.v4,
                c2v6=harness.CLIENT2.v6,
                c2name=C2_NAME,
                users=" ".join(USERS),
                passwords=" ".join(f"{user}:{password}" for user, password in USERS.items()),
                package=mode.package,
                preseed=mode.preseed,
                debs=debian_root.DEBS_INSIDE,
                configure=mode.configure,
            ),
            str(self.rsyslog.socket),
        )
        # The PID namespace's init is the shell; when it dies every process
        # in the namespace (daemon, inetd, its children) dies with it.
        script = f"{mode.start}\nexec sleep infinity\n"
        command = [
            harness.binary("ip"),
            "netns",
            "exec",
            self.namespace.netns,
            *self.view.command(["unshare", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c", script]),
        ]
        env = {"PATH": _PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise harness.HarnessError(
                    f"{mode.name} exited {proc.returncode}:\n{harness.tail(self.output)}"
                )
            return _listens_on_110(proc.pid)

        harness.wait_until(f"{mode.name} to listen on port 110", ready, timeout=15.0)

    def stop(self) -> None:
        # unshare --fork ignores SIGTERM while it waits for its child: SIGKILL,
        # on which --kill-child kills the namespace's init, and so all of it.
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        harness.stop_popen(self.proc, self.mode.name)
        self.rsyslog.stop()
        self.view.stop()

    def version(self) -> str:
        return self._in_view(f"dpkg-query -W -f '${{Version}}' {self.mode.package}").stdout


def _listens_on_110(pid: int) -> bool:
    """Whether the network namespace of ``pid`` has a socket listening on port 110.

    Read from /proc, as harness.listening does, so waiting sends no traffic.
    """
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            return False
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(":006E"):
                return True
    return False


# A POP3 client driven line by line from the test, so that two clients'
# commands can interleave: each line on stdin is sent, the reply printed.
_SESSION_CODE = r"""
import socket, sys
conn = socket.create_connection((sys.argv[1], 110), timeout=20)
replies = conn.makefile("rb")
def reply():
    print(replies.readline().decode("latin-1").rstrip("\r\n"), flush=True)
reply()
for line in sys.stdin:
    try:
        conn.sendall(line.rstrip("\n").encode() + b"\r\n")
        reply()
    except OSError:  # the server closed the session: an empty reply
        print("", flush=True)
"""


class Session:
    """One POP3 connection from a client namespace, command by command."""

    def __init__(self, client: harness.Client, server: str) -> None:
        self.proc = subprocess.Popen(
            [
                harness.binary("ip"),
                "netns",
                "exec",
                client.netns,
                sys.executable,
                "-c",
                _SESSION_CODE,
                server,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.greeting = self._reply()

    def _reply(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line and self.proc.poll() is not None:
            assert self.proc.stderr is not None
            raise harness.HarnessError(f"POP3 client exited: {self.proc.stderr.read().strip()}")
        return line.rstrip("\n")

    def send(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def login(self, user: str, password: str) -> bool:
        self.send(f"USER {user}")
        return self.send(f"PASS {password}").startswith("+OK")

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("QUIT")
        except (OSError, harness.HarnessError):
            pass
        finally:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
