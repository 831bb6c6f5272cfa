"""What the monitoring adds to a quiet run (nothing new in the log), the cron job's usual case.

    python3 benchmarks/quiet_run.py [--runs 200] [--base DIR] [--instructions]

Times `exactcron update` as cron runs it (a fresh process each time) on a
10-line log with two leases: without metrics_file and log_file, with
metrics_file, and with both; with --base, also the code in DIR (a checkout
or `git archive` of an older version) on the plain configuration; and a bare
`python3 -c pass`, the floor every run pays. The runs are interleaved, so
that the machine's load falls on all alike. Prints the median and the
10th-90th percentile of each, and the median CPU time (user + system), which
follows the machine's load much less than the wall time, also as a multiple
of `python3 -c pass`'s; with --instructions, each one's instruction count
under valgrind, which follows nothing but the code.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
NOW = "2026-11-25T18:00:00+00:00"
LINE = (
    "2026-11-25T17:50:{second:02d}.000000+00:00 mail dovecot: imap-login: Login: user=<u{n}>, method=PLAIN, "
    "rip=192.0.2.{n}, lip=198.51.100.1, mpid=1{n}, TLS, session=<abc{n}>\n"
)


def site(root: Path, extra: str) -> Path:
    root.mkdir()
    log = root / "mail.log"
    log.write_text("".join(LINE.format(second=n, n=n % 2 + 10) for n in range(10)))
    config = root / "exactcron.toml"
    config.write_text(
        f'state_dir = "{root / "state"}"\n{extra}\n'
        f'[[source]]\npath = "{log}"\nserver = "dovecot"\ntimezone = "UTC"\nhosts = ["mail"]\n'
        f'[[map]]\nmta = "postfix"\npath = "{root / "state" / "relay"}"\ntype = "hash"\n'
    )
    return config


def _environment(code: Path) -> dict[str, str]:
    environment = {**os.environ, "PYTHONPATH": str(code)}
    # As installed: from the bytecode compiled once, not recompiled each run.
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


def command(code: Path, config: Path) -> tuple[list[str], dict[str, str]]:
    environment = _environment(code)
    return [sys.executable, "-m", "exactcron", "--config", str(config), "--now", NOW, "update"], environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--base", type=Path, help="older code to compare with (holds exactcron/)")
    parser.add_argument(
        "--instructions", action="store_true", help="also count each one's instructions (needs valgrind)"
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="exactcron-quiet-") as directory:
        root = Path(directory)
        cases = {
            "plain": command(REPOSITORY, site(root / "plain", "")),
            "metrics_file": command(
                REPOSITORY, site(root / "metrics", f'metrics_file = "{root / "m.prom"}"')
            ),
            "metrics_file + log_file": command(
                REPOSITORY,
                site(root / "both", f'metrics_file = "{root / "b.prom"}"\nlog_file = "{root / "b.log"}"'),
            ),
        }
        if options.base:
            cases["plain, --base code"] = command(options.base, site(root / "base", ""))
        # What every cron run pays before exactcron's first line: the goal is at most 4 x (3 x) its CPU.
        cases["python3 -c pass"] = ([sys.executable, "-c", "pass"], _environment(REPOSITORY))
        # Run from the temporary directory: `-m exactcron` looks in the working
        # directory first, so a run from a checkout would time that checkout's code.
        for arguments, environment in cases.values():
            subprocess.run(arguments, env=environment, cwd=root, check=True)  # the first, full run
        times: dict[str, list[float]] = {name: [] for name in cases}
        cpu_times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(options.runs):
            for name, (arguments, environment) in cases.items():
                start, cpu_start = time.perf_counter(), _children_cpu()
                subprocess.run(arguments, env=environment, cwd=root, check=True)
                times[name].append(time.perf_counter() - start)
                cpu_times[name].append(_children_cpu() - cpu_start)
        print(f"quiet update, {options.runs} runs each, interleaved")
        python_cpu = statistics.median(cpu_times["python3 -c pass"])
        for name, samples in times.items():
            deciles = statistics.quantiles(samples, n=10)
            cpu = statistics.median(cpu_times[name])
            print(
                f"  {name:<26} median {statistics.median(samples) * 1000:6.1f} ms"
                f"   p10-p90 {deciles[0] * 1000:6.1f}-{deciles[-1] * 1000:6.1f} ms"
                f"   CPU median {cpu * 1000:6.1f} ms ({cpu / python_cpu:.2f} x python3 -c pass)"
            )
        if options.instructions:
            print("instructions (valgrind --tool=cachegrind --cache-sim=no), one run each:")
            for name, (arguments, environment) in cases.items():
                count = _instructions(arguments, environment, root)
                print(f"  {name:<26} {count / 1e6:8.1f} M")


def _instructions(arguments: list[str], environment: dict[str, str], directory: Path) -> int:
    """Instructions executed by one run (and its children), as cachegrind counts them."""
    with tempfile.TemporaryDirectory() as temporary:
        report = Path(temporary) / "report"
        subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                "--cache-sim=no",
                "--trace-children=yes",
                f"--log-file={report}",
                "--cachegrind-out-file=/dev/null",
                *arguments,
            ],
            env=environment,
            cwd=directory,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        found = re.findall(r"I\s+refs:\s+([\d,]+)", report.read_text())
    return sum(int(each.replace(",", "")) for each in found)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
