"""What `update --follow` costs in CPU per minute, beside a plain run's.

    python3 benchmarks/follow.py [--seconds 35] [--repeat 1] [--base DIR]

Four measurements in one run, on the machine's real clock, each a fresh
`python -m exactcron` process as cron starts it:

- a plain run on a quiet log (nothing new: cron's usual minute), and a plain
  run over a minute of a busy log (6,000 lines, 1 % Dovecot logins from 200
  addresses), start-up included;
- an idle follow over a journal source (its folder holding another unit's
  entry), beside a plain run over it (where systemd-journal-remote is
  installed to write the journal file);
- an idle follow (nothing written) and a busy follow (the same log written
  while it follows: 100 lines a second, 1 % logins), measured from a second
  after the follower's own run is done to half a second before its end (so
  the run itself, counted in the plain rows, is left out), and scaled to a
  minute. The default of 35 s holds the idle step a follower takes every
  30 s (follow.IDLE_STEP_SECONDS). The follower's CPU is its own (/proc/PID/schedstat, in ns) and its
  children's (postmap; /proc/PID/stat, in clock ticks).

The follow rows are printed as ratios to the plain run of the same log. With
--base DIR (a checkout of an older version), its follows are measured too.
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import maillog

REPOSITORY = Path(__file__).resolve().parent.parent
LINES_PER_SECOND = 100
LOGIN_EVERY = 100
CLIENTS = 200
TICK = os.sysconf("SC_CLK_TCK")


def site(root: Path) -> Path:
    root.mkdir()
    (root / "mail.log").touch()
    config = root / "exactcron.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\ntimeout = "30m"\n'
        f'[[source]]\npath = "{root / "mail.log"}"\nserver = "dovecot"\nhosts = ["mail"]\n'
        f'[[map]]\nmta = "postfix"\npath = "{root / "state" / "relay"}"\ntype = "hash"\n'
    )
    return config


class Writer:
    """Lines of a busy mail log, stamped now: LINES_PER_SECOND, one in LOGIN_EVERY a Dovecot login."""

    def __init__(self, log: Path, seed: int) -> None:
        self.log = log
        self.rng = random.Random(seed)
        clients = maillog.client_addresses(CLIENTS)
        self.clients = clients
        self.pool = [
            body
            for body in maillog.body_pool(seed, clients, [f"user{n}" for n in range(CLIENTS)])
            if "Login: user=<" not in body and "LOGIN, user=" not in body
        ]
        self.count = 0

    def line(self, moment: datetime) -> str:
        self.count += 1
        if self.count % LOGIN_EVERY == 0:
            address = self.rng.choice(self.clients)
            return maillog.login_line(moment, address, f"user{self.clients.index(address)}", self.rng)
        return f"{maillog.stamp(moment)} mail {self.rng.choice(self.pool)}\n"

    def minute(self) -> None:
        """A minute's lines at once, stamped over the last minute."""
        end = datetime.now(UTC)
        lines = LINES_PER_SECOND * 60
        with self.log.open("a") as stream:
            stream.writelines(
                self.line(end - timedelta(seconds=60) + timedelta(seconds=60) * n / lines)
                for n in range(lines)
            )

    def run(self, stop: threading.Event) -> None:
        """LINES_PER_SECOND, a line every 1/LINES_PER_SECOND s, each written (flushed) alone, as syslog does."""
        start = time.monotonic()
        written = 0
        with self.log.open("a") as stream:
            while not stop.is_set():
                due = int((time.monotonic() - start) * LINES_PER_SECOND)
                while written < due:
                    stream.write(self.line(datetime.now(UTC)))
                    stream.flush()
                    written += 1
                time.sleep(1 / LINES_PER_SECOND)


def process_cpu(pid: int) -> float:
    """Seconds of CPU of `pid` itself (ns exact), of its children it waited for
    (ticks) and of those still running (a journalctl --follow; ns exact)."""
    own = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    children = (int(fields[13]) + int(fields[14])) / TICK  # cutime, cstime
    running = 0.0
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        # One that ended meanwhile is counted once waited for.
        with contextlib.suppress(OSError):
            running += int(Path(f"/proc/{child}/schedstat").read_text().split()[0]) / 1e9
    return own + children + running


JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")


def journal_site(root: Path) -> Path:
    """A journal source over a folder holding one entry of another unit (written by journal-remote)."""
    root.mkdir()
    journal = root / "journal"
    journal.mkdir()
    export = root / "entry.export"
    export.write_text(
        f"__REALTIME_TIMESTAMP={time.time_ns() // 1000}\n__MONOTONIC_TIMESTAMP=1\n"
        f"_BOOT_ID={'0123456789abcdef' * 2}\n_HOSTNAME=mail\n_SYSTEMD_UNIT=cron.service\n"
        "SYSLOG_IDENTIFIER=cron\nMESSAGE=hello\n\n"
    )
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={journal / 'system.journal'}", str(export)],
        check=True,
        capture_output=True,
    )
    config = root / "exactcron.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\ntimeout = "30m"\n'
        f'[[source]]\njournal = ["dovecot.service"]\njournal_directory = "{journal}"\nserver = "dovecot"\n'
        f'hosts = ["mail"]\n[[map]]\nmta = "postfix"\npath = "{root / "state" / "relay"}"\ntype = "hash"\n'
    )
    return config


def command(config: Path, code: Path, *arguments: str) -> tuple[list[str], dict[str, str]]:
    """The command and its environment, the code from `code` (run from the site's folder:
    `python -m` puts the working directory first on the path)."""
    return (
        [sys.executable, "-m", "exactcron", "--config", str(config), *arguments],
        {**os.environ, "PYTHONPATH": str(code)},
    )


def plain_run(config: Path, code: Path) -> float:
    """CPU of one `update`, start-up and children included."""
    arguments, environment = command(config, code, "update")
    process = subprocess.Popen(arguments, env=environment, cwd=config.parent)
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"update failed: {status}")
    return usage.ru_utime + usage.ru_stime


def follow(
    config: Path, code: Path, seconds: float, during: Callable[[threading.Event], None] | None
) -> float:
    """CPU per minute of following, the follower's own run left out."""
    arguments, environment = command(config, code, "update", "--follow-for", f"{seconds}s")
    follower_file = config.parent / "state" / "follower"
    follower_file.unlink(missing_ok=True)
    stop = threading.Event()
    writer = threading.Thread(target=during, args=(stop,)) if during else None
    if writer:
        writer.start()
    started = time.monotonic()
    process = subprocess.Popen(arguments, env=environment, cwd=config.parent)
    try:
        while not follower_file.exists() and process.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        first = process_cpu(process.pid)
        measured_from = time.monotonic()
        time.sleep(max(0.0, started + seconds - 0.5 - time.monotonic()))
        last = process_cpu(process.pid)
        span = time.monotonic() - measured_from
    finally:
        stop.set()
        if writer:
            writer.join()
        process.wait()
    if process.returncode != 0:
        raise SystemExit(f"update --follow-for failed: {process.returncode}")
    return (last - first) * 60.0 / span


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=35.0, help="how long each follow lasts (scaled to a minute)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--base", type=Path, help="an older checkout: its follows too")
    options = parser.parse_args()
    if options.seconds < 3:
        parser.error("--seconds: at least 3")
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="exactcron-follow-") as name:
        root = Path(name)
        for repeat in range(options.repeat):
            quiet = site(root / f"quiet{repeat}")
            plain_run(quiet, REPOSITORY)  # the first run: the state begins
            rows.setdefault("plain run, quiet log", []).append(plain_run(quiet, REPOSITORY))
            rows.setdefault("follow, idle log (per minute)", []).append(
                follow(quiet, REPOSITORY, options.seconds, None)
            )
            if options.base is not None:
                rows.setdefault("follow, idle log, --base (per minute)", []).append(
                    follow(quiet, options.base, options.seconds, None)
                )
            if JOURNAL_REMOTE.exists():
                journal = journal_site(root / f"journal{repeat}")
                plain_run(journal, REPOSITORY)
                rows.setdefault("plain run, quiet journal", []).append(plain_run(journal, REPOSITORY))
                rows.setdefault("follow, idle journal (per minute)", []).append(
                    follow(journal, REPOSITORY, options.seconds, None)
                )
                if options.base is not None:
                    rows.setdefault("follow, idle journal, --base (per minute)", []).append(
                        follow(journal, options.base, options.seconds, None)
                    )
            busy = site(root / f"busy{repeat}")
            writer = Writer(busy.parent / "mail.log", seed=repeat)
            plain_run(busy, REPOSITORY)
            writer.minute()
            rows.setdefault("plain run, a minute of busy log", []).append(plain_run(busy, REPOSITORY))
            rows.setdefault("follow, busy log (per minute)", []).append(
                follow(busy, REPOSITORY, options.seconds, writer.run)
            )
            if options.base is not None:
                rows.setdefault("follow, busy log, --base (per minute)", []).append(
                    follow(busy, options.base, options.seconds, writer.run)
                )
    median = {label: statistics.median(values) for label, values in rows.items()}
    quiet_run = median["plain run, quiet log"]
    journal_run = median.get("plain run, quiet journal", 0.0)
    busy_run = median["plain run, a minute of busy log"]
    print(
        f"CPU seconds, median of {options.repeat}; follows of {options.seconds:g} s scaled to a minute;"
        f" busy: {LINES_PER_SECOND} lines/s, 1 in {LOGIN_EVERY} a login"
    )
    print(f"{'measurement':44} {'CPU s':>8} {'ratio':>24}")
    for label, value in median.items():
        if label.startswith("follow, idle journal"):
            ratio = f"{value / journal_run:.3f} x plain journal run"
        elif label.startswith("follow, idle"):
            ratio = f"{value / quiet_run:.3f} x plain quiet run"
        elif label.startswith("follow, busy"):
            ratio = f"{value / busy_run:.3f} x plain busy run"
        else:
            ratio = ""
        print(f"{label:44} {value:8.4f} {ratio:>24}")


if __name__ == "__main__":
    main()
