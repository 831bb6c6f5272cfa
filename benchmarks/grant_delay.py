"""Grant delay: from a login line being written to `postmap -q ADDRESS` answering OK.

    python3 benchmarks/grant_delay.py [--logins 100] [--kinds dovecot,rsyslog,writer,journal] [--each]
                                      [--single]

exactcron runs as the shipped cron line runs it: `update --follow` started at
once and at every whole minute (tests/e2e/cron.py; no cron daemon), so the
hand-over between two minutes' followers is measured too. `--single` runs one
`update --follow-for` over the whole measurement instead: the follow alone.

Source kinds, each with a Postfix hash map and its own state:
- dovecot: the real Dovecot of the end-to-end lab (tests/e2e/harness.py; root)
  writing its own log file (log_path); a client in a network namespace logs
  in by POP3. The line's instant is when a watcher (stat and read every
  millisecond) sees it in the file. The address is flushed after each login.
- rsyslog: the same, Dovecot logging through the lab's private rsyslogd.
- writer: lines appended to a file by this script at known instants (the
  instant the write returned), a new address and user for each login.
- journal: journal entries written live by systemd-journal-remote (the
  instant the entry was handed to it), read by exactcron through journalctl
  as tests/test_journal.py does.

The map's file is watched with stat every millisecond; when it changes,
`postmap -q` asks for the address, and the instant it answers OK ends the
delay. Logins follow one another at random gaps (0 to PACING seconds after
the previous grant), so that they fall anywhere in the follower's cycle and in
the minute. Prints per kind the number of logins, the median, the 99th percentile
(nearest rank) and the maximum; then the logins written in the hand-over
window (from second 59 to second 1 of a minute, when the interface has the
old follower gone and the next minute's run is still starting) and the
figures of the others.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))

from tests.e2e import harness  # noqa: E402
from tests.e2e.cron import EachMinute  # noqa: E402
from tests.e2e.grants import Delay, LogWatch, MapWatch  # noqa: E402

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
BOOT = "0123456789abcdef0123456789abcdef"
KINDS = ("dovecot", "rsyslog", "writer", "journal")
WAIT_FOR_GRANT = 10.0  # seconds
# A random pause after each grant, longer than the follower's longest cycle
# (a journal's step each second), so that logins fall at any phase of it.
PACING = 1.5


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def granted(watch: MapWatch, address: str, written: Callable[[], float | None]) -> Delay:
    delay = watch.wait_granted(address, written, WAIT_FOR_GRANT)
    if delay is None:
        raise SystemExit(f"{address}: not granted within {WAIT_FOR_GRANT:g} s")
    return delay


def write_config(case: Path, source: str, map_path: Path) -> Path:
    config = case / "exactcron.toml"
    config.write_text(
        f'state_dir = "{case / "state"}"\ntimeout = "30m"\n[[source]]\n{source}\nserver = "dovecot"\n'
        f'[[map]]\nmta = "postfix"\npath = "{map_path}"\ntype = "hash"\n'
    )
    return config


@contextmanager
def exactcron_following(config: Path, case: Path, env: dict[str, str] | None, single: bool) -> Iterator[None]:
    base = [sys.executable, "-m", "exactcron", "--config", str(config), "update"]
    follow = ["--follow-for", "1h"] if single else ["--follow"]
    runner = EachMinute([*base, *follow], case / "runs", env=env, cwd=REPOSITORY, once=single)
    with runner:
        time.sleep(1.5)  # the first run reads the log and writes the map
        yield
    failures = runner.failures()
    if failures:
        raise SystemExit("\n".join(failures))


def flush(config: Path, address: str, env: dict[str, str] | None) -> None:
    harness.run(
        [sys.executable, "-m", "exactcron", "--config", str(config), "flush", address],
        env=env,
        cwd=REPOSITORY,
    )


def measure_lab(kind: str, logins: int, work: Path, single: bool) -> list[Delay]:
    """Real Dovecot (own log file or rsyslog), real client logins, flushed after each."""
    problems = harness.environment_problems()
    if problems:
        raise SystemExit(f"{kind}: the lab cannot run: {'; '.join(problems)}")
    addresses = [
        (harness.CLIENT2, harness.CLIENT2.v4, harness.SERVER_V4),
        (harness.CLIENT3, harness.CLIENT3.v4, harness.SERVER_V4),
        (harness.CLIENT2, harness.CLIENT2.v6, harness.SERVER_V6),
        (harness.CLIENT3, harness.CLIENT3.v6, harness.SERVER_V6),
    ]
    delays: list[Delay] = []
    with harness.machine_lock(), ExitStack() as stack:
        case = work / kind
        case.mkdir()
        stack.enter_context(harness.started(harness.Network()))
        if kind == "rsyslog":
            rsyslog = harness.Rsyslog(case / "rsyslog")
            stack.enter_context(harness.started(rsyslog))
            dovecot = harness.Dovecot(case / "dovecot", syslog_socket=rsyslog.socket)
            log = rsyslog.mail_log
        else:
            dovecot = harness.Dovecot(case / "dovecot")
            log = dovecot.log_path
        stack.enter_context(harness.started(dovecot))
        map_path = case / "relay"
        env = None  # postmap of a hash map needs no Postfix running, only this machine's main.cf
        config = write_config(case, f'path = "{log}"', map_path)
        watch = MapWatch(map_path, env)
        lines = LogWatch(log)
        flushed_at = {address: 0.0 for _, address, _ in addresses}
        with exactcron_following(config, case, env, single):
            for number in range(logins):
                client, address, server = addresses[number % len(addresses)]
                # Whole-second stamps (log_path): a login in the second of its
                # address's flush would be stamped before it, and the flush wins.
                while int(time.time()) <= int(flushed_at[address]):
                    time.sleep(0.01)
                lines.skip_to_end()
                login = threading.Thread(target=harness.login, args=(client, "pop3", server))
                login.start()
                delays.append(granted(watch, address, lines.seen(address)))
                login.join()
                flush(config, address, env)
                flushed_at[address] = time.time()
                time.sleep(random.uniform(0.0, PACING))
    return delays


def constant(instant: float) -> Callable[[], float | None]:
    """The line's instant when the writer knows it."""
    return lambda: instant


def login_message(number: int, address: str) -> str:
    return (
        f"pop3-login: Login: user=<user{number}>, method=PLAIN, rip={address}, lip=10.0.0.1, "
        f"mpid={1000 + number}, session=<s{number}>"
    )


def address_of(number: int) -> str:
    return f"198.18.{number // 250}.{number % 250 + 1}"  # benchmarking space: one new address per login


def measure_writer(logins: int, work: Path, single: bool) -> list[Delay]:
    case = work / "writer"
    case.mkdir()
    log = case / "mail.log"
    log.touch()
    map_path = case / "relay"
    config = write_config(case, f'path = "{log}"\nhosts = ["mx"]', map_path)
    watch = MapWatch(map_path, None)
    delays: list[Delay] = []
    with exactcron_following(config, case, None, single):
        for number in range(logins):
            address = address_of(number)
            stamp = datetime.now(UTC).isoformat(timespec="microseconds")
            with open(log, "ab") as out:
                out.write(f"{stamp} mx dovecot: {login_message(number, address)}\n".encode())
            delays.append(granted(watch, address, constant(time.time())))
            time.sleep(random.uniform(0.0, PACING))
    return delays


def measure_journal(logins: int, work: Path, single: bool) -> list[Delay]:
    if not JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None:
        raise SystemExit(
            "journal: needs systemd-journal-remote and journalctl (Debian systemd-journal-remote)"
        )
    case = work / "journal"
    journal = case / "journal"
    journal.mkdir(parents=True)
    map_path = case / "relay"
    remote = subprocess.Popen(
        [str(JOURNAL_REMOTE), f"--output={journal / 'remote.journal'}", "-"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert remote.stdin is not None
    config = write_config(
        case, f'journal = ["dovecot.service"]\njournal_directory = "{journal}"\nhosts = ["mx"]', map_path
    )
    watch = MapWatch(map_path, None)
    delays: list[Delay] = []

    def entry(number: int, message: str) -> bytes:
        return (
            f"__REALTIME_TIMESTAMP={int(time.time() * 1_000_000)}\n__MONOTONIC_TIMESTAMP={number + 1}\n"
            f"_BOOT_ID={BOOT}\n_HOSTNAME=mx\n_TRANSPORT=syslog\n_SYSTEMD_UNIT=dovecot.service\n"
            f"SYSLOG_IDENTIFIER=dovecot\nMESSAGE={message}\n\n"
        ).encode()

    try:
        # journalctl reads nothing until the journal file exists: one entry first.
        remote.stdin.write(entry(0, "master: Info: Dovecot starting up"))
        remote.stdin.flush()
        with exactcron_following(config, case, None, single):
            for number in range(1, logins + 1):
                address = address_of(number)
                remote.stdin.write(entry(number, login_message(number, address)))
                remote.stdin.flush()
                delays.append(granted(watch, address, constant(time.time())))
                time.sleep(random.uniform(0.0, PACING))
    finally:
        remote.stdin.close()
        remote.wait(timeout=30)
    return delays


def in_handover(delay: Delay) -> bool:
    """Written from second 59 of a minute to second 1 of the next: no follower runs from second 59
    until the next minute's run has started."""
    return delay.written % 60 >= 59.0 or delay.written % 60 < 1.0


def figures(delays: list[Delay]) -> str:
    seconds = [delay.seconds for delay in delays]
    if not seconds:
        return "n=   0"
    return (
        f"n={len(seconds):4}  median {statistics.median(seconds):.3f} s  "
        f"p99 {percentile(seconds, 0.99):.3f} s  max {max(seconds):.3f} s"
    )


def report(kind: str, delays: list[Delay]) -> str:
    p99 = percentile([delay.seconds for delay in delays], 0.99)
    text = f"{kind:8} {figures(delays)}  p99 <= 1 s: {'yes' if p99 <= 1.0 else 'NO'}"
    handover = [delay for delay in delays if in_handover(delay)]
    if handover:
        rest = [delay for delay in delays if not in_handover(delay)]
        shown = ", ".join(f":{d.written % 60:06.3f} -> {d.seconds:.3f} s" for d in handover)
        text += f"\n{'':8} written from second 59 to 1 (hand-over): {shown}"
        text += f"\n{'':8} the others: {figures(rest)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=100)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--each", action="store_true", help="also print every login's instant and delay")
    parser.add_argument(
        "--single", action="store_true", help="one --follow-for run instead of cron's each minute"
    )
    options = parser.parse_args()
    kinds = [kind for kind in options.kinds.split(",") if kind]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    work = Path(tempfile.mkdtemp(prefix="exc-delay-"))
    work.chmod(0o755)  # the lab's servers run as unprivileged users
    lines = []
    try:
        for kind in kinds:
            if kind in ("dovecot", "rsyslog"):
                delays = measure_lab(kind, options.logins, work, options.single)
            elif kind == "writer":
                delays = measure_writer(options.logins, work, options.single)
            else:
                delays = measure_journal(options.logins, work, options.single)
            if options.each:
                for delay in delays:
                    print(
                        f"{kind} written at :{delay.written % 60:06.3f} granted {delay.seconds:.3f} s later"
                    )
            lines.append(report(kind, delays))
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    driver = "one update --follow-for" if options.single else "update --follow started each whole minute"
    print(f"\ngrant delay, login line written -> postmap -q OK ({driver}; load {os.getloadavg()[0]:.2f}):")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
