"""The Debian package, as an administrator meets it.

Built from debian/ with `dpkg-buildpackage`, checked by lintian, then
installed with dpkg into a Debian 12 root of the test's own (tests/support/debian_root.py):
the cron line runs `update` as cron would, an upgrade keeps state and a
changed conffile, and purge leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.debian_root import debian_environment, remove_root, run_in_root, unpack_root
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parent.parent
UPGRADE_VERSION_SUFFIX = "+upgrade1"
CONFIG = "/etc/exactcron/exactcron.toml"
MAIL_LOG = "/var/log/mail.log"
STATE = "/var/lib/exactcron"
# Written by the test or by dpkg's own bookkeeping; everything else must be
# as it was before the package came.
NOT_COMPARED = (
    "/proc",
    "/tmp",
    "/run",
    "/var/lib/dpkg",
    "/var/log/dpkg.log",
    "/var/cache/debconf",
    MAIL_LOG,
)
ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow")


def _require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root; this test chroots into a Debian root")
        pytest.skip("needs root to debootstrap and chroot")


@dataclass(frozen=True)
class Build:
    deb: Path
    changes: Path
    version: str
    output: str  # what dpkg-buildpackage printed


def _source_copy(destination: Path) -> Path:
    """The checkout without version control, caches and generated state."""
    ignored = shutil.ignore_patterns(
        ".git", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", ".cache", ".venv", "build", "dist"
    )
    shutil.copytree(ROOT, destination, symlinks=True, ignore=ignored)
    shutil.rmtree(destination / "examples" / "state", ignore_errors=True)
    return destination


def _dpkg_buildpackage(source: Path) -> Build:
    require_tool("dpkg-buildpackage")
    result = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"],
        cwd=source,
        env=debian_environment(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = subprocess.run(
        ["dpkg-parsechangelog", "-S", "Version"],
        cwd=source,
        env=debian_environment(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deb = source.parent / f"exactcron_{version}_all.deb"
    assert deb.exists(), sorted(path.name for path in source.parent.iterdir())
    (changes,) = source.parent.glob(f"exactcron_{version}_*.changes")
    return Build(deb, changes, version, result.stdout + result.stderr)


def _with_newer_version(source: Path) -> None:
    """A newer release of the same tree: a changelog entry on top."""
    changelog = source / "debian" / "changelog"
    old = changelog.read_text()
    version = old.split("(", 1)[1].split(")", 1)[0] + UPGRADE_VERSION_SUFFIX
    trailer = next(line for line in old.splitlines() if line.startswith(" -- "))
    changelog.write_text(
        f"exactcron ({version}) unstable; urgency=medium\n\n  * A newer build, to test upgrades.\n\n{trailer}\n\n{old}"
    )


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Build, Build]:
    """The package as the checkout builds it, and a newer version of it."""
    _require_root()
    work = tmp_path_factory.mktemp("deb")
    first = _dpkg_buildpackage(_source_copy(work / "current" / "exactcron"))
    newer_source = _source_copy(work / "newer" / "exactcron")
    _with_newer_version(newer_source)
    return first, _dpkg_buildpackage(newer_source)


@pytest.fixture
def debian_root(tmp_path: Path) -> Iterator[Path]:
    _require_root()
    require_tool("unshare")
    root = unpack_root(tmp_path / "root")
    try:
        yield root
    finally:
        remove_root(root)


@pytest.fixture(scope="module")
def installed_root(builds: tuple[Build, Build], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root with the package installed, for the tests that only look."""
    require_tool("unshare")
    root = unpack_root(tmp_path_factory.mktemp("installed") / "root")
    try:
        _install(root, builds[0])
        yield root
    finally:
        remove_root(root)


def _in_root(root: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = run_in_root(root, command, check=False)
    if check:
        assert result.returncode == 0, f"{command}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def _install(root: Path, build: Build) -> None:
    shutil.copy(build.deb, root / "tmp" / build.deb.name)
    _in_root(root, "dpkg", "-i", f"/tmp/{build.deb.name}")


def _read_mail_log(root: Path) -> None:
    """Point the shipped configuration (the journal) at a syslog-fed mail log,
    as a site without a journal would: these roots run no journald."""
    config = root / CONFIG.lstrip("/")
    text = config.read_text()
    assert 'journal = "dovecot.service"\n' in text
    config.write_text(text.replace('journal = "dovecot.service"\n', f'path = "{MAIL_LOG}"\n'))


def _run_cron_line(root: Path) -> subprocess.CompletedProcess[str]:
    """The job of /etc/cron.d/exactcron, run as cron runs it: its user, its SHELL and PATH, nothing else."""
    environment: dict[str, str] = {}
    jobs = []
    for line in (root / "etc" / "cron.d" / "exactcron").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            name, value = line.split("=", 1)
            environment[name] = value
        else:
            jobs.append(line.split(None, 6))
    ((*schedule, user, command),) = jobs
    assert schedule == ["*"] * 5
    variables = [f"{name}={value}" for name, value in environment.items() if name != "MAILTO"]
    return _in_root(
        root,
        "env",
        "-i",
        *variables,
        f"HOME={STATE}",
        f"LOGNAME={user}",
        "runuser",
        "-u",
        user,
        "--",
        environment.get("SHELL", "/bin/sh"),
        "-c",
        command,
        check=False,
    )


def _write_login(root: Path, address: str, user: str = "alice", host: str | None = None) -> None:
    """A Dovecot login as Debian's rsyslog writes it, stamped now, from this host."""
    stamp = datetime.now(UTC).isoformat(timespec="microseconds")
    line = (
        f"{stamp} {host or socket.gethostname()} dovecot: imap-login: Login: user=<{user}>, method=PLAIN, "
        f"rip={address}, lip=192.0.2.1, mpid=4242, TLS, session=<k3Zq9sTtYMEKTQAC>\n"
    )
    log = root / MAIL_LOG.lstrip("/")
    with log.open("a") as stream:
        stream.write(line)
    os.chown(log, 0, 4)  # root:adm 0640, as rsyslog creates it on Debian
    log.chmod(0o640)


def _relays(root: Path, address: str) -> bool:
    result = _in_root(root, "postmap", "-q", address, f"hash:{STATE}/relay", check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.strip() == "OK"


def _manifest(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every path in the root with its mode, owner and (for small files) content."""
    seen: dict[str, tuple[int, int, int, bytes]] = {}
    for directory, subdirectories, files in os.walk(root):
        relative = "/" + os.path.relpath(directory, root).removeprefix(".").lstrip("/")
        if relative.startswith(NOT_COMPARED) and relative != "/":
            subdirectories.clear()
            continue
        for name in [*subdirectories, *files]:
            path = os.path.join(directory, name)
            inside = os.path.join(relative, name)
            if inside in NOT_COMPARED or inside in ACCOUNT_FILES or inside.rstrip("-") in ACCOUNT_FILES:
                continue
            status = os.lstat(path)
            content = b""
            if os.path.isfile(path) and not os.path.islink(path) and status.st_size < 1_000_000:
                content = Path(path).read_bytes()
            seen[inside] = (status.st_mode, status.st_uid, status.st_gid, content)
    return seen


def test_lintian_finds_no_errors(builds: tuple[Build, Build], tmp_path: Path) -> None:
    lintian = require_tool("lintian")
    current, _ = builds
    # lintian unpacks into TMPDIR: one of its own, not a shared /tmp.
    result = subprocess.run(
        [lintian, "--fail-on", "error", "--display-info", str(current.changes)],
        env=debian_environment(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.findall(r"^E: .*", result.stdout, re.MULTILINE)


def test_the_package_holds_what_the_interface_promises(builds: tuple[Build, Build]) -> None:
    current, _ = builds
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(current.deb)],
        env=debian_environment(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    paths = {line.split()[-1].removeprefix(".") for line in listing.splitlines()}
    for wanted in (
        "/usr/bin/exactcron",
        "/etc/exactcron/exactcron.toml",
        "/etc/cron.d/exactcron",
        "/etc/logrotate.d/exactcron",
        "/usr/share/man/man8/exactcron.8.gz",
        "/usr/share/man/man5/exactcron.toml.5.gz",
        "/usr/share/bash-completion/completions/exactcron",
    ):
        assert wanted in paths
    assert any(path.endswith("/systemd/system/exactcron.service") for path in paths)
    assert any(path.endswith("/systemd/system/exactcron.timer") for path in paths)
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(current.deb), "Depends", "Suggests", "Recommends"],
        env=debian_environment(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for dependency in ("python3-click", "python3-dateutil", "adduser"):
        assert dependency in fields
    # The state lock is exactcron's own (exactcron/lock.py).
    assert "filelock" not in fields
    assert "python3-psycopg" in fields


def test_the_build_warns_nothing_and_leaves_only_ignored_files(builds: tuple[Build, Build]) -> None:
    current, _ = builds
    # setuptools >= 77 deprecates `project.license` as a table, and will refuse it.
    assert "deprecated" not in current.output.lower(), current.output
    source = current.deb.parent / "exactcron"
    left = sorted(
        str(path.relative_to(source))
        for path in source.rglob("*")
        if not path.is_dir() and not (ROOT / path.relative_to(source)).exists()
    )
    assert left, "the build leaves its work files in the tree"
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input="\n".join(left),
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert sorted(set(left) - set(ignored)) == []


def test_installing_with_recommends_pulls_in_no_mta(builds: tuple[Build, Build], debian_root: Path) -> None:
    """`apt-get install ./exactcron_*.deb`, recommends included, where no MTA,
    scheduler or logrotate is installed yet (a minimal Debian): the MTA stays
    the admin's choice (cron's `Recommends: default-mta` would bring exim4)."""
    root = debian_root
    current, _ = builds
    absent = ("postfix", "cron", "cron-daemon-common", "logrotate", "systemd-sysv")
    _in_root(root, "dpkg", "--purge", "--force-depends", "--force-remove-protected", *absent)
    shutil.copy(current.deb, root / "tmp" / current.deb.name)
    # Simulated: the root holds Debian's package lists, but has no network to fetch from.
    planned = _in_root(
        root,
        "apt-get",
        "install",
        "--simulate",
        "-o",
        "APT::Install-Recommends=true",
        f"/tmp/{current.deb.name}",
    ).stdout
    installed = set(re.findall(r"^Inst (\S+)", planned, re.MULTILINE))
    providers = _in_root(root, "apt-cache", "showpkg", "mail-transport-agent").stdout
    mtas = {
        line.split()[0] for line in providers.split("Reverse Provides:", 1)[1].splitlines() if line.strip()
    }
    assert {"postfix", "exim4-daemon-light"} <= mtas
    assert installed & mtas == set(), planned
    # What the package recommends still comes: logrotate and a scheduler.
    assert {"exactcron", "logrotate"} <= installed and installed & {"systemd-sysv", "cron"}, planned


def test_install_cron_upgrade_and_purge(builds: tuple[Build, Build], debian_root: Path) -> None:
    root = debian_root
    current, newer = builds
    before = _manifest(root)
    passwd_before = (root / "etc" / "passwd").read_text()

    _install(root, current)
    groups = _in_root(root, "id", "-Gn", "exactcron").stdout.split()
    assert groups[0] == "exactcron" and "adm" in groups
    state = root / STATE.lstrip("/")
    owner = (state.stat().st_uid, state.stat().st_gid)
    assert _in_root(root, "stat", "-c", "%U:%G %a", STATE).stdout.split() == ["exactcron:exactcron", "755"]
    conffiles = _in_root(root, "dpkg-query", "-W", "-f", "${Conffiles}", "exactcron").stdout
    assert CONFIG in conffiles
    # Installing twice (dpkg -i over itself) changes nothing and fails nothing.
    _install(root, current)
    _read_mail_log(root)

    # The cron line, as cron runs it, grants a login written to the log.
    _write_login(root, "192.0.2.44")
    ran = _run_cron_line(root)
    assert ran.returncode == 0 and ran.stdout == "" and ran.stderr == "", ran
    assert _relays(root, "192.0.2.44")
    shown = _in_root(root, "runuser", "-u", "exactcron", "--", "exactcron", "show").stdout
    assert re.search(r"^192\.0\.2\.44\s+alice\s", shown, re.MULTILINE), shown
    for path in state.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == owner, path
    # check, run by root as an administrator would, finds every right the job needs in place.
    checked = _in_root(root, "exactcron", "check", check=False)
    assert (checked.returncode, checked.stderr) == (0, ""), checked

    # With systemd running the timer, the cron line stands aside.
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    _write_login(root, "192.0.2.45", user="bob")
    assert _run_cron_line(root).returncode == 0
    assert not _relays(root, "192.0.2.45")
    shutil.rmtree(root / "run" / "systemd")

    # Upgrade: a newer version keeps the site's configuration and the state.
    config = root / CONFIG.lstrip("/")
    changed = config.read_text().replace('timeout = "30m"', 'timeout = "45m"')
    assert changed != config.read_text()
    config.write_text(changed)
    leases_before = (state / "leases.json").read_bytes()
    _install(root, newer)
    assert newer.version != current.version
    version = _in_root(root, "dpkg-query", "-W", "-f", "${Version}", "exactcron").stdout
    assert version == newer.version
    assert config.read_text() == changed
    assert not list(config.parent.glob("*.dpkg-*"))
    assert (state / "leases.json").read_bytes() == leases_before
    ran = _run_cron_line(root)
    assert ran.returncode == 0, ran
    assert _relays(root, "192.0.2.44") and _relays(root, "192.0.2.45")

    # Removed, not purged: configuration and state stay, and the cron line
    # dpkg keeps (a conffile) runs nothing and mails nothing.
    _in_root(root, "dpkg", "--remove", "exactcron")
    assert config.read_text() == changed
    assert (state / "leases.json").exists()
    ran = _run_cron_line(root)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", "")

    # Purge: nothing of the package is left; the account stays, owning nothing.
    _in_root(root, "dpkg", "--purge", "exactcron")
    assert _in_root(root, "dpkg-query", "-W", "exactcron", check=False).returncode != 0
    after = _manifest(root)
    assert sorted(set(after) - set(before)) == []
    assert sorted(set(before) - set(after)) == []
    assert [path for path in before if before[path] != after[path]] == []
    added_accounts = set((root / "etc" / "passwd").read_text().splitlines()) - set(passwd_before.splitlines())
    assert [line.split(":")[0] for line in added_accounts] == ["exactcron"]
    owned = _in_root(root, "find", "/", "-xdev", "-user", "exactcron", "-not", "-path", "/proc/*").stdout
    assert owned == ""


def test_the_systemd_units_verify(installed_root: Path) -> None:
    analyze = require_tool("systemd-analyze")
    # The man pages are checked with man itself (test_packaging.py): the
    # host's man cannot see those in the root.
    result = subprocess.run(
        [analyze, "verify", "--man=no", f"--root={installed_root}", "exactcron.timer", "exactcron.service"],
        env=debian_environment(),
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_bash_completes_commands(installed_root: Path) -> None:
    script = "/usr/share/bash-completion/completions/exactcron"
    completed = _in_root(
        installed_root,
        "bash",
        "-c",
        f'source {script} && COMP_WORDS=(exactcron st) COMP_CWORD=1 && _exactcron_completion exactcron && echo "${{COMPREPLY[@]}}"',
    ).stdout.split()
    assert completed == ["status"]


def test_health_metrics_and_audit_trail_on_a_fresh_root(
    builds: tuple[Build, Build], debian_root: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    root = debian_root
    current, _ = builds
    _install(root, current)
    _read_mail_log(root)
    config = root / CONFIG.lstrip("/")
    log_file_line = 'log_file = "/var/log/exactcron/exactcron.log"\n'
    assert log_file_line in config.read_text()
    config.write_text(
        config.read_text().replace(
            log_file_line, f'{log_file_line}stale_after = "5m"\nmetrics_file = "{STATE}/exactcron.prom"\n'
        )
    )

    def status() -> subprocess.CompletedProcess[str]:
        return _in_root(root, "runuser", "-u", "exactcron", "--", "exactcron", "status", check=False)

    _write_login(root, "192.0.2.44")
    assert _run_cron_line(root).returncode == 0
    assert status().returncode == 0

    # The mail log made unreadable: the run fails, and status says so.
    (root / MAIL_LOG.lstrip("/")).chmod(0o600)
    failed = _run_cron_line(root)
    assert failed.returncode == 66 and len(failed.stderr.splitlines()) == 1, failed
    unhealthy = status()
    assert unhealthy.returncode == 1 and len(unhealthy.stderr.splitlines()) == 1, unhealthy
    (root / MAIL_LOG.lstrip("/")).chmod(0o640)
    assert _run_cron_line(root).returncode == 0
    assert status().returncode == 0

    metrics = (root / STATE.lstrip("/") / "exactcron.prom").read_text()
    families = {family.name: family for family in text_string_to_metric_families(metrics)}
    assert families["exactcron_last_run_success"].samples[0].value == 1
    assert families["exactcron_leases"].samples[0].value == 1

    for command in (("add", "198.51.100.7", "--for", "2h"), ("flush", "198.51.100.7")):
        _in_root(root, "runuser", "-u", "exactcron", "--", "exactcron", *command)
    trail = (root / "var" / "log" / "exactcron" / "exactcron.log").read_text()
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.search(rf"{stamp} grant 192\.0\.2\.44 user=alice ", trail, re.MULTILINE), trail
    assert re.search(rf"{stamp} add 198\.51\.100\.7 .*\bby=\S+", trail, re.MULTILINE), trail
    assert re.search(rf"{stamp} flush 198\.51\.100\.7\b.*\bby=\S+", trail, re.MULTILINE), trail


def _wait_for(what: str, condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:g}s waiting for {what}")
        time.sleep(1)


def _container_init(nspawn: subprocess.Popen[bytes]) -> int:
    """The PID, on the host, of the container's systemd (nspawn's child)."""
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children")
    found: list[int] = []

    def started() -> bool:
        assert nspawn.poll() is None, "systemd-nspawn exited"
        found[:] = [int(pid) for pid in children.read_text().split()]
        return bool(found)

    _wait_for("the container's init", started, 30)
    return found[0]


def test_under_systemd_the_timer_runs_update_and_cron_stands_aside(
    builds: tuple[Build, Build], debian_root: Path
) -> None:
    """The root booted with systemd as its init (systemd-nspawn), cron running
    beside it: the timer's hardened service grants a login, and cron's line
    stands aside, so every run is one of the service's."""
    nspawn_tool = require_tool("systemd-nspawn")
    nsenter = require_tool("nsenter")
    root = debian_root
    _install(root, builds[0])
    _read_mail_log(root)
    nspawn = subprocess.Popen(
        [
            nspawn_tool,
            f"--directory={root}",
            "--boot",
            "--register=no",
            "--keep-unit",
            f"--machine=exactcron-test-{os.getpid()}",
            "--console=passive",
            "--quiet",
        ],
        env=debian_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # --root and --wd: entering the mount namespace alone puts a process at
        # that namespace's root mount, which is not the container's root when
        # this test itself runs in a chroot (nspawn then moves the container
        # onto the chroot's root, not the namespace's).
        inside = [nsenter, f"--target={_container_init(nspawn)}", "--all", "--root", "--wd"]

        def run(*command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*inside, *command], env=debian_environment(), capture_output=True, text=True, check=False
            )

        _wait_for(
            "the container's boot",
            lambda: run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded"),
            90,
        )
        assert run("systemctl", "is-active", "exactcron.timer", "cron.service").stdout.split() == [
            "active",
            "active",
        ]
        _write_login(root, "192.0.2.44", host=run("hostname").stdout.strip())
        # The timer fires on the minute: at most a minute and the run's own time.
        _wait_for(
            "the timer to grant 192.0.2.44",
            lambda: run("postmap", "-q", "192.0.2.44", f"hash:{STATE}/relay").stdout.strip() == "OK",
            100,
        )

        def journal() -> str:
            return run("journalctl", "--no-pager", "-o", "cat", "-u", "exactcron.service").stdout

        # The service follows: a follower may grant before its run has
        # finished, which it does one second before the next minute.
        _wait_for("a run of the service to finish", lambda: "Finished exactcron.service" in journal(), 70)
        result = run("systemctl", "show", "--property=Result", "exactcron.service").stdout.strip()
        assert result == "Result=success", journal()
        # The trail first: every run it names has started by the time the journal is read.
        trail = (root / "var" / "log" / "exactcron" / "exactcron.log").read_text()
        service_log = journal()
        started = len(re.findall(r"^Starting exactcron\.service", service_log, re.MULTILINE))
        finished = len(re.findall(r"^Finished exactcron\.service", service_log, re.MULTILINE))
        logged = re.findall(r"exactcron\[(\d+)\]: INFO: read ", trail)
        # Each run is one of the service's (cron's would be one more each minute) ...
        assert 1 <= finished <= len(set(logged)) <= started, (service_log, trail)
        # ... and a finished one followed: its idle steps logged more than its first run.
        assert max(logged.count(pid) for pid in set(logged)) >= 2, trail
    finally:
        nspawn.terminate()  # nspawn powers the container off
        try:
            nspawn.wait(timeout=60)
        except subprocess.TimeoutExpired:
            nspawn.kill()
            nspawn.wait()
