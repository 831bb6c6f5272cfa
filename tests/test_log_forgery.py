"""Forgery attempts against every set-up the docs recommend (docs/security.md), with the real tools.

A private rsyslogd (its own socket, UDP port on loopback, pid file and
files) writes the mail log; `logger`, run as the unprivileged user `nobody`
through runuser, plays the local attacker; a UDP datagram plays another host
(a central log host, or a spoofed sender); systemd-journal-remote writes a
journal whose entries come from another machine. A plain syslog-fed file
can be forged by anyone, and `check` and `status` say so; with rsyslog's
trusted sender uid, a server-written file nobody else can write, the
journal's fields and the host field, the forgery grants nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exactcron.cli import FORGEABLE_WARNING
from tests.support.maps import postmap_query
from tests.support.tools import require_root, require_tool

FORGED = "imap-login: Login: user=<x>, method=PLAIN, rip=203.0.113.66, lip=192.0.2.1, mpid=1, session=<a>"
GENUINE = "imap-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.44, lip=192.0.2.1, mpid=2, session=<b>"
# What docs/security.md tells rsyslog to write: each line, then the sender's uid as imuxsock saw it.
TEMPLATE = (
    'template(name="exactcron" type="string" string="%TIMESTAMP:::date-rfc3339% %HOSTNAME% '
    '%syslogtag%%msg:::sp-if-no-1st-sp%%msg:::drop-last-lf% @[uid=%$!uid% pid=%$!pid%]\\n")'
)


def root_required() -> None:
    require_root("to run logger as another user")


class Rsyslog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "log.sock"
        self.plain = directory / "plain.log"
        self.trusted = directory / "trusted.log"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (directory / "work").mkdir()
        config = directory / "rsyslog.conf"
        config.write_text(
            f"""\
global(workDirectory="{directory / "work"}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{self.socket}" Annotate="on" ParseTrusted="on" CreatePath="on")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{self.port}")
{TEMPLATE}
mail.* action(type="omfile" file="{self.plain}" template="RSYSLOG_FileFormat")
mail.* action(type="omfile" file="{self.trusted}" template="exactcron")
"""
        )
        self.process = subprocess.Popen(
            [require_tool("rsyslogd"), "-n", "-f", str(config), "-i", str(directory / "rsyslogd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: self.socket.exists(), "rsyslogd's socket")
        self.socket.chmod(0o666)  # as /dev/log: every local user may log

    def logger(self, user: str | None, message: str, tag: str = "dovecot") -> None:
        command = [require_tool("logger"), "-u", str(self.socket), "-p", "mail.info", "-t", tag, message]
        if user is not None:
            command = [require_tool("runuser"), "-u", user, "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def from_network(self, host: str, message: str, tag: str = "dovecot") -> None:
        stamp = datetime.now(UTC).strftime("%b %d %H:%M:%S").replace(" 0", "  ", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(f"<22>{stamp} {host} {tag}: {message}".encode(), ("127.0.0.1", self.port))

    def wait_for_lines(self, count: int) -> None:
        for log in (self.plain, self.trusted):
            wait_for(lambda log=log: log.exists() and log.read_text().count("\n") >= count, f"{count} lines")  # type: ignore[misc]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def rsyslog() -> Iterator[Rsyslog]:
    root_required()
    require_tool("postmap")
    # Under /tmp, open to every user: `nobody` must reach the socket.
    directory = Path(tempfile.mkdtemp(prefix="exct-trust-"))
    directory.chmod(0o755)
    server = None
    try:
        server = Rsyslog(directory)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory)


def configure(directory: Path, source: str) -> Path:
    """A site in `directory` (created) reading one source into a hash map."""
    directory.mkdir(exist_ok=True)
    config = directory / "exactcron.toml"
    config.write_text(
        f'state_dir = "{directory / "state"}"\n[[source]]\n{source}\n'
        f'[[map]]\nmta = "postfix"\npath = "{directory / "state" / "relay"}"\ntype = "hash"\n'
    )
    config.chmod(0o644)
    return config


def exactcron(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "exactcron", "--config", str(config), *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())


def granted(config: Path) -> set[str]:
    result = exactcron(config, "update")
    assert result.returncode == 0, result.stderr
    relay = config.parent / "state" / "relay"
    found = set()
    for address in ("203.0.113.66", "192.0.2.44"):
        lookup = postmap_query(relay, address)
        if lookup.returncode == 0:
            found.add(address)
    return found


def test_a_plain_syslog_file_is_forged_by_any_user_and_check_and_status_say_so(rsyslog: Rsyslog) -> None:
    rsyslog.logger("nobody", FORGED)
    rsyslog.wait_for_lines(1)
    config = configure(rsyslog.directory / "site", f'path = "{rsyslog.plain}"\nserver = "dovecot"')
    # What 0.1 did with the production set-up the README gave then, and still does: it cannot tell.
    assert granted(config) == {"203.0.113.66"}
    checked = exactcron(config, "check")
    assert f"warning: {rsyslog.plain}: {FORGEABLE_WARNING}\n" in checked.stdout
    assert f"  trust: {FORGEABLE_WARNING}\n" in exactcron(config, "status").stdout
    (source,) = json.loads(exactcron(config, "status", "--json").stdout)["sources"]
    assert source["forgeable"] is True


def test_rsyslogs_trusted_sender_uid_refuses_a_line_logged_by_another_user(rsyslog: Rsyslog) -> None:
    rsyslog.logger("nobody", FORGED)
    # Imitating rsyslog's own suffix gains nothing: rsyslog's comes last.
    rsyslog.logger("nobody", FORGED + " @[uid=0 pid=1]")
    rsyslog.logger(None, GENUINE)  # Dovecot's log process runs as root
    rsyslog.wait_for_lines(3)
    source = f'path = "{rsyslog.trusted}"\nserver = "dovecot"\nsyslog_senders = ["root"]'
    config = configure(rsyslog.directory / "site", source)
    assert granted(config) == {"192.0.2.44"}
    checked = exactcron(config, "check")
    assert checked.returncode == 0 and "warning" not in checked.stdout
    (source,) = json.loads(exactcron(config, "status", "--json").stdout)["sources"]
    assert source["forgeable"] is False


def test_lines_from_another_host_grant_nothing_unless_it_is_listed(rsyslog: Rsyslog) -> None:
    rsyslog.from_network("elsewhere", FORGED)
    rsyslog.logger(None, GENUINE)
    rsyslog.wait_for_lines(2)
    assert f" elsewhere dovecot: {FORGED}" in rsyslog.plain.read_text()
    config = configure(rsyslog.directory / "default", f'path = "{rsyslog.plain}"\nserver = "dovecot"')
    assert granted(config) == {"192.0.2.44"}  # this machine's own lines only
    # A network line carries no sender uid: refused there whatever its host.
    trusted = configure(
        rsyslog.directory / "trusted",
        f'path = "{rsyslog.trusted}"\nserver = "dovecot"\nsyslog_senders = ["root"]\nhosts = ["*"]',
    )
    assert granted(trusted) == {"192.0.2.44"}
    listed = configure(
        rsyslog.directory / "listed", f'path = "{rsyslog.plain}"\nserver = "dovecot"\nhosts = ["elsewhere"]'
    )
    assert granted(listed) == {"203.0.113.66"}


@pytest.fixture
def server_log() -> Iterator[Path]:
    """A log file as Dovecot's `log_path` writes it, owned by the server's user."""
    root_required()
    require_tool("postmap")
    directory = Path(tempfile.mkdtemp(prefix="exct-trust-"))
    try:
        directory.chmod(0o755)
        logs = directory / "dovecot"
        logs.mkdir(mode=0o755)
        log = logs / "dovecot.log"
        stamp = datetime.now(UTC).strftime("%b %d %H:%M:%S")
        log.write_text(f"{stamp} {GENUINE.replace('Login:', 'Info: Login:')}\n")
        log.chmod(0o640)
        yield log
    finally:
        shutil.rmtree(directory)


def _configure_root_written(server_log: Path, path: Path | None = None, more: str = "") -> Path:
    """A site reading the Dovecot log at `path` (the server log itself unless told), written by root."""
    return configure(
        server_log.parent.parent / "site",
        f'path = "{path or server_log}"\nserver = "dovecot"\ntimezone = "UTC"\nwritten_by = "root"{more}',
    )


def _forge_as_a_group_member(server_log: Path, *stamps: str) -> None:
    """The log made writable by a group with a member other than root, who appends a
    forged line stamped at each of `stamps`, in turn."""
    os.chown(server_log, -1, pwd.getpwnam("nobody").pw_gid)
    server_log.chmod(0o660)
    _as_nobody("; ".join(f"echo '{stamp} {FORGED}' >> {server_log}" for stamp in stamps))


def test_a_server_written_log_nobody_else_can_write_cannot_be_forged(server_log: Path) -> None:
    config = _configure_root_written(server_log)
    attempt = subprocess.run(
        [require_tool("runuser"), "-u", "nobody", "--", "sh", "-c", f"echo '{FORGED}' >> {server_log}"],
        capture_output=True,
        text=True,
    )
    assert attempt.returncode != 0 and "Permission denied" in attempt.stderr
    assert granted(config) == {"192.0.2.44"}
    checked = exactcron(config, "check")
    assert checked.returncode == 0 and "warning" not in checked.stdout


@pytest.mark.parametrize(
    "loosen, culprit",
    [
        (lambda log: log.chmod(0o666), "every user"),
        (lambda log: log.parent.chmod(0o1777), "every user"),
        (lambda log: os.chown(log, pwd.getpwnam("nobody").pw_uid, -1), "its owner nobody"),
    ],
)
def test_a_server_written_log_others_can_write_is_refused(
    server_log: Path, loosen: Callable[[Path], None], culprit: str
) -> None:
    config = _configure_root_written(server_log)
    loosen(server_log)
    result = exactcron(config, "update")
    assert result.returncode == 78
    (line,) = result.stderr.splitlines()
    assert f"can be written by {culprit}, not only by root, so its lines could be forged" in line


def _forgeable_olddir(log: Path) -> str:
    archive = log.parent.parent / "archive"
    archive.mkdir(mode=0o777)
    archive.chmod(0o777)
    return f'\nolddir = "{archive}"'


def _symlink_into_an_open_directory(log: Path) -> str:
    open_directory = log.parent.parent / "open"
    open_directory.mkdir()
    open_directory.chmod(0o777)
    target = open_directory / "dovecot.log"
    log.rename(target)
    log.symlink_to(target)
    return ""


def _directory_above_owned_by_another_user(log: Path) -> str:
    above = log.parent.parent / "srv"
    (above / "mail").mkdir(parents=True)
    log.parent.rename(above / "mail" / "logs")
    log.parent.symlink_to(above / "mail" / "logs")
    os.chown(above, pwd.getpwnam("nobody").pw_uid, -1)
    return ""


@pytest.mark.parametrize(
    "loosen", [_forgeable_olddir, _symlink_into_an_open_directory, _directory_above_owned_by_another_user]
)
def test_a_server_written_log_reached_through_a_place_others_can_write_is_refused(
    server_log: Path, loosen: Callable[[Path], str]
) -> None:
    more = loosen(server_log)
    config = _configure_root_written(server_log, more=more)
    result = exactcron(config, "update")
    assert result.returncode == 78, result.stderr
    (line,) = result.stderr.splitlines()
    assert "not only by root, so its lines could be forged" in line


JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")


def test_journal_entries_from_another_machine_grant_nothing_unless_it_is_listed(tmp_path: Path) -> None:
    if not JOURNAL_REMOTE.exists():
        if os.environ.get("CI"):
            pytest.fail("systemd-journal-remote is not installed")
        pytest.skip("systemd-journal-remote is not installed")
    require_tool("postmap")
    now = datetime.now(UTC)
    blocks = []
    for number, (host, message) in enumerate(
        [("elsewhere", FORGED), (socket.gethostname(), GENUINE)], start=1
    ):
        microseconds = int(now.timestamp() * 1_000_000) - 60_000_000 + number
        blocks.append(
            f"__REALTIME_TIMESTAMP={microseconds}\n__MONOTONIC_TIMESTAMP={number}\n"
            f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME={host}\n_TRANSPORT=syslog\n"
            f"_SYSTEMD_UNIT=dovecot.service\nSYSLOG_IDENTIFIER=dovecot\nMESSAGE={message}\n\n"
        )
    journal = tmp_path / "journal"
    journal.mkdir()
    export = tmp_path / "entries.export"
    export.write_text("".join(blocks))
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={journal / 'remote.journal'}", str(export)],
        check=True,
        capture_output=True,
    )
    source = f'journal = "dovecot.service"\njournal_directory = "{journal}"\nserver = "dovecot"'
    assert granted(configure(tmp_path / "default", source)) == {"192.0.2.44"}
    listed = configure(tmp_path / "listed", source + '\nhosts = ["elsewhere"]')
    assert granted(listed) == {"203.0.113.66"}
    assert json.loads(exactcron(listed, "show", "--json").stdout)["leases"][0]["user"] == "x"


def _lookup(config: Path, address: str) -> bool:
    relay = config.parent / "state" / "relay"
    found = postmap_query(relay, address)
    return found.returncode == 0


def _as_nobody(script: str) -> None:
    subprocess.run([require_tool("runuser"), "-u", "nobody", "--", "sh", "-c", script], check=True)


def test_lines_forged_while_a_log_was_open_to_others_never_grant_once_it_is_mended(server_log: Path) -> None:
    config = _configure_root_written(server_log)
    server_log.write_text(f"2026-11-25T17:59:00+00:00 {GENUINE}\n")
    assert exactcron(config, "--now", "2026-11-25T18:00:00+00:00", "update").returncode == 0
    assert _lookup(config, "192.0.2.44")
    # Made writable by a group with a member other than root; that member forges
    # a line stamped in the future and one stamped a moment before the next run.
    _forge_as_a_group_member(server_log, "2030-01-01T00:00:00+00:00", "2026-11-25T18:39:30+00:00")
    refused = exactcron(config, "--now", "2026-11-25T18:40:00+00:00", "update")
    assert refused.returncode == 78, refused.stderr
    assert "the members of group" in refused.stderr
    # The refusing run still drops what ended (17:59 + 30m).
    assert not _lookup(config, "192.0.2.44")
    _as_nobody(f"echo '2026-11-25T18:40:30+00:00 {FORGED}' >> {server_log}")
    # The administrator mends the permissions.
    os.chown(server_log, 0, 0)
    server_log.chmod(0o640)
    mended = exactcron(config, "--now", "2026-11-25T18:41:00+00:00", "update")
    assert mended.returncode == 0, mended.stderr
    assert not _lookup(config, "203.0.113.66")
    assert "written while `written_by` refused it" in mended.stderr
    # Genuine lines from now on grant; the forged ones never, whatever the clock says.
    with server_log.open("a") as log:
        log.write(f"2026-11-25T18:41:30+00:00 {GENUINE}\n")
    assert exactcron(config, "--now", "2026-11-25T18:42:00+00:00", "update").returncode == 0
    assert _lookup(config, "192.0.2.44")
    assert not _lookup(config, "203.0.113.66")
    later = exactcron(config, "--now", "2030-01-01T00:00:30+00:00", "update")
    assert later.returncode == 0, later.stderr
    assert not _lookup(config, "203.0.113.66")


def test_rotated_copies_beside_a_symlinked_log_in_a_place_others_own_are_refused(server_log: Path) -> None:
    # `path` names pub/dovecot.log, a symlink to the root-owned log; pub is another user's.
    public = server_log.parent.parent / "pub"
    public.mkdir(mode=0o755)
    (public / "dovecot.log").symlink_to(server_log)
    os.chown(public, pwd.getpwnam("nobody").pw_uid, -1)
    _as_nobody(f"echo '{datetime.now(UTC).strftime('%b %d %H:%M:%S')} {FORGED}' > {public / 'dovecot.log.1'}")
    config = _configure_root_written(server_log, public / "dovecot.log")
    result = exactcron(config, "update")
    assert result.returncode == 78, result.stderr
    (line,) = result.stderr.splitlines()
    assert f"{public} can be written by its owner nobody" in line
    assert not _lookup(config, "203.0.113.66")


def test_a_rotated_copy_others_can_write_is_refused(server_log: Path) -> None:
    rotated = server_log.parent / "dovecot.log.1"
    rotated.write_text("")
    os.chown(rotated, pwd.getpwnam("nobody").pw_uid, -1)
    _as_nobody(f"echo '{datetime.now(UTC).strftime('%b %d %H:%M:%S')} {FORGED}' >> {rotated}")
    config = _configure_root_written(server_log)
    result = exactcron(config, "update")
    assert result.returncode == 78, result.stderr
    assert f"{rotated} can be written by its owner nobody" in result.stderr
    assert not _lookup(config, "203.0.113.66")


OTHER = GENUINE.replace("rip=192.0.2.44", "rip=192.0.2.55").replace("<alice>", "<bob>")


def _refuse_with_forged_lines(server_log: Path) -> Path:
    """A site whose `written_by` log was made writable by a group, forged into
    (lines stamped in the window of later runs), and refused at 18:40."""
    config = _configure_root_written(server_log)
    server_log.write_text(f"2026-11-25T17:59:00+00:00 {GENUINE}\n")
    assert exactcron(config, "--now", "2026-11-25T18:00:00+00:00", "update").returncode == 0
    _forge_as_a_group_member(server_log, "2026-11-25T18:39:30+00:00", "2026-11-25T18:45:00+00:00")
    refused = exactcron(config, "--now", "2026-11-25T18:40:00+00:00", "update")
    assert refused.returncode == 78, refused.stderr
    return config


def _mend(server_log: Path) -> None:
    os.chown(server_log, 0, 0)
    server_log.chmod(0o640)


def _break(config: Path, name: str) -> None:
    (config.parent / "state" / name).write_text("{broken")


@pytest.mark.parametrize("rotation", ["none", "rotated", "rotated and compressed"])
def test_a_lease_file_rebuild_never_grants_what_was_skipped_after_a_refusal(
    server_log: Path, rotation: str
) -> None:
    config = _refuse_with_forged_lines(server_log)
    _mend(server_log)
    mended = exactcron(config, "--now", "2026-11-25T18:41:00+00:00", "update")
    assert mended.returncode == 0, mended.stderr
    with server_log.open("a") as log:
        log.write(f"2026-11-25T18:41:30+00:00 {GENUINE}\n")
    assert exactcron(config, "--now", "2026-11-25T18:42:00+00:00", "update").returncode == 0
    if rotation != "none":
        rotated = server_log.with_name("dovecot.log.1")
        server_log.rename(rotated)
        server_log.write_text(f"2026-11-25T18:43:00+00:00 {OTHER}\n")
        server_log.chmod(0o640)
        if rotation == "rotated and compressed":
            subprocess.run(["gzip", str(rotated)], check=True)
    # The lease file is lost: the next update rebuilds the leases from the logs.
    _break(config, "leases.json")
    rebuilt = exactcron(config, "--now", "2026-11-25T18:50:00+00:00", "update")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "leases.json" in rebuilt.stderr
    # What was logged after the mend grants again; what was skipped, never.
    assert _lookup(config, "192.0.2.44")
    assert _lookup(config, "192.0.2.55") == (rotation != "none")
    assert not _lookup(config, "203.0.113.66")
    # Nor a second rebuild, once the first has saved its checkpoints.
    _break(config, "leases.json")
    again = exactcron(config, "--now", "2026-11-25T18:51:00+00:00", "update")
    assert again.returncode == 0, again.stderr
    assert _lookup(config, "192.0.2.44")
    assert not _lookup(config, "203.0.113.66")


@pytest.mark.parametrize("broken", ["checkpoints.json", "trust.json"])
@pytest.mark.parametrize("when", ["while refused", "after the mend"])
def test_a_refusal_outlives_a_broken_state_file(server_log: Path, broken: str, when: str) -> None:
    config = _refuse_with_forged_lines(server_log)
    if when == "after the mend":
        _mend(server_log)
        assert exactcron(config, "--now", "2026-11-25T18:41:00+00:00", "update").returncode == 0
    _break(config, broken)
    _mend(server_log)
    with server_log.open("a") as log:
        log.write(f"2026-11-25T18:46:30+00:00 {OTHER}\n")
    run = exactcron(config, "--now", "2026-11-25T18:47:00+00:00", "update")
    assert run.returncode == 0, run.stderr
    assert f"{broken} is not valid JSON" in run.stderr
    assert not _lookup(config, "203.0.113.66")
    if when == "after the mend":
        # Only what was skipped stays unread: a login logged since grants.
        assert _lookup(config, "192.0.2.55")
    # Both records hold the refusal again, each for the other's next loss.
    trust = json.loads((config.parent / "state" / "trust.json").read_text())
    checkpoints = json.loads((config.parent / "state" / "checkpoints.json").read_text())
    assert trust["sources"][str(server_log)]["trusted_from"]
    assert checkpoints["sources"][str(server_log)]["trusted_from"]
