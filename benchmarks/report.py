"""`exactcron report` on a generated month at full size.

    python3 benchmarks/report.py [--repeat 3] [--rebuild] [--users 10000] [--lines 1000000]

Writes the month of tests/support/report_month.py into benchmarks/.cache/
(10,000 users, 1,000,000 Postfix lines, rotated daily and gzip-compressed,
and the audit trail, rotated weekly), then runs `exactcron report --json
--mta-log mail.log` as an administrator would (a fresh process each time)
and prints the median wall and CPU time, the rate and the peak resident
memory (GNU time), against the same report on a tenth of the lines: a
bounded memory shows as the same peak. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from run import CACHE, ENVIRONMENT, REPOSITORY, Sample, measure

sys.path.insert(0, str(REPOSITORY))

from tests.support.report_month import NOW, write_month_site


def month(users: int, lines: int, rebuild: bool) -> Path:
    folder = CACHE / f"report-{users}-{lines}"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    if not (folder / "exactcron.toml").exists():
        write_month_site(folder, users, lines)
    return folder


def command(folder: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "exactcron",
        *("--config", str(folder / "exactcron.toml"), "--now", NOW.isoformat()),
        *("report", "--json", "--mta-log", str(folder / "mail.log")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=1_000_000)
    options = parser.parse_args(argv)
    rows = []
    for users, lines in ((options.users // 10, options.lines // 10), (options.users, options.lines)):
        folder = month(users, lines, options.rebuild)
        samples: list[Sample] = [measure(command(folder)) for _ in range(options.repeat)]
        document = json.loads(subprocess.run(command(folder), capture_output=True, env=ENVIRONMENT).stdout)
        wall = statistics.median(sample.seconds for sample in samples)
        cpu = statistics.median(sample.cpu_seconds or 0.0 for sample in samples)
        peaks = [sample.max_rss_kib for sample in samples if sample.max_rss_kib is not None]
        peak = f"{max(peaks) / 1024:.0f} MB" if peaks else "n/a"
        totals = document["totals"]
        rows.append(
            (
                f"report, {users:,} users, {lines:,} Postfix lines over 30 days",
                f"{wall:.2f} s",
                f"{cpu:.2f} s",
                f"{lines / cpu / 1000:.0f} k lines/s" if cpu else "",
                peak,
                f"{totals['messages']:,} messages, {totals['relayed']:,} through a lease",
            )
        )
    header = ("measurement", "wall", "CPU", "rate", "peak RSS", "figure")
    widths = [max(len(row[index]) for row in [header, *rows]) for index in range(len(header))]
    for row in [header, *rows]:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")
    print(f"median of {options.repeat}; --now {NOW.isoformat()}; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
