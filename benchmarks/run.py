"""The benchmark suite: is exactcron fast at any log size?

    python3 benchmarks/run.py [--repeat 3] [--rebuild]

Generates its logs into benchmarks/.cache/ (about 1 GB, kept for the next
run), runs `exactcron update` as cron would (a fresh process each time, with
`--now` so that every run sees the same clock) and prints one table: the
median wall and CPU time of each measurement, the ratio that matters for it, the
peak resident memory of the process tree, and the goal set for it.

Nothing here asserts a time: a goal that is missed is reported, not failed.
Absolute figures depend on the machine; the ratios much less.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import maillog

REPOSITORY = Path(__file__).resolve().parent.parent
CACHE = Path(__file__).resolve().parent / ".cache"
NOW = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
TIMEOUT = "30m"
# The needle grep is timed with: the literal every Dovecot success holds.
GREP_NEEDLE = "Login: user=<"
BIG = 1_000_000
HUGE = 5_000_000
LEASES = 100_000
CLIENTS = 3_000
# The sparse log: one line in LOGIN_EVERY a Dovecot success, from SPARSE_CLIENTS addresses.
LOGIN_EVERY = 100
SPARSE_CLIENTS = 10_000
# A site rule reading the same Dovecot successes as the built-in one.
SITE_RULE = (
    '[rule.site-dovecot]\nprogram = "dovecot"\n'
    "match = '(?:imap|pop3)-login: Login: user=<(?P<user>[^>]*)>, method=[A-Z0-9-]+, "
    "rip=(?P<ip>[0-9a-fA-F:.]+), lip=[0-9a-fA-F:.]+(?:, .*)?'\n"
)
# The interface's example site rule, beside the built-in rule on the same source (it matches nothing there).
BESIDE_RULE = (
    "[rule.mypopd]\nprogram = \"mypopd\"\nmatch = 'OK user=(?P<user>\\S+) from \\[(?P<ip>[^]]+)\\]$'\n"
)


@dataclass
class Sample:
    seconds: float
    max_rss_kib: int | None
    # User + system CPU time of the process tree: unlike the wall time, it
    # hardly moves when other work shares the machine.
    cpu_seconds: float | None = None


@dataclass
class Row:
    number: str
    what: str
    samples: list[Sample]
    figure: str = ""
    goal: str = ""
    met: bool | None = None

    @property
    def median(self) -> float:
        return statistics.median(sample.seconds for sample in self.samples)

    @property
    def cpu(self) -> float | None:
        times = [sample.cpu_seconds for sample in self.samples if sample.cpu_seconds is not None]
        return statistics.median(times) if times else None

    @property
    def cost(self) -> float:
        """What ratios compare: the median CPU time when known, else the median wall time."""
        cpu = self.cpu
        return cpu if cpu is not None and cpu > 0 else self.median

    @property
    def peak_mib(self) -> float | None:
        peaks = [sample.max_rss_kib for sample in self.samples if sample.max_rss_kib is not None]
        return max(peaks) / 1024 if peaks else None


@dataclass
class Site:
    """One installation: a config, a state directory and a map, under `root`."""

    root: Path
    log: Path
    map_type: str
    servers: Sequence[str]
    rules: str = ""  # [rule.NAME] tables
    store: str = ""  # a [store] table: the leases live in PostgreSQL
    reads_log: bool = True  # False: an MTA host that only renders the store's leases
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.root / "exactcron.toml"
        self.write_config()

    def write_config(self) -> None:
        servers = ", ".join(f'"{name}"' for name in self.servers)
        self.config.write_text(
            f'state_dir = "{self.root / "state"}"\n'
            f'timeout = "{TIMEOUT}"\n'
            'ignore = ["127.0.0.0/8", "::1/128"]\n\n'
            + (
                f'[[source]]\npath = "{self.log}"\nserver = [{servers}]\ntimezone = "UTC"\nhosts = ["mail"]\n\n'
                if self.reads_log
                else ""
            )
            + f'[[map]]\nmta = "postfix"\npath = "{self.root / "state" / "relay"}"\ntype = "{self.map_type}"\n'
            + self.store
            + (f"\n{self.rules}" if self.rules else ""),
            encoding="utf-8",
        )
        self.config.chmod(0o644)

    def command(self, *arguments: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "exactcron",
            "--config",
            str(self.config),
            "--now",
            NOW.isoformat(),
            *arguments,
        ]


def child_environment() -> dict[str, str]:
    environment = dict(os.environ)
    # The working tree is what is measured, installed or not.
    environment["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPOSITORY), environment.get("PYTHONPATH")])
    )
    environment["PATH"] = os.pathsep.join([environment.get("PATH", ""), "/usr/sbin", "/sbin"])
    environment["TZ"] = "UTC"
    environment["LC_ALL"] = "C"
    # An installed exactcron runs from bytecode pip compiled; recompiling the
    # sources on every run would measure the compiler, not exactcron.
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    return environment


ENVIRONMENT = child_environment()


GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def measure(command: Sequence[str]) -> Sample:
    """Wall time and peak RSS of one process tree.

    The peak comes from GNU time when it is installed: a child forked from
    this driver would inherit the driver's own high-water mark (Linux counts
    the memory a process had before exec), which hides small peaks.
    """
    with tempfile.NamedTemporaryFile() as output, tempfile.NamedTemporaryFile() as report:
        wrapped = [GNU_TIME, "-f", "%M", "-o", report.name, *command] if GNU_TIME else list(command)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        # stdout is a file, not /dev/null: GNU grep stops at the first match
        # when it sees its output discarded.
        process = subprocess.Popen(wrapped, stdout=output, stderr=subprocess.PIPE, env=ENVIRONMENT)
        _, errors = process.communicate()
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Of every process the command started and waited for, to the microsecond.
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        # grep -c exits 1 when it counts nothing; anything else is a broken run.
        if process.returncode != 0 and not (process.returncode == 1 and command[0] == "grep"):
            message = errors.decode(errors="replace").strip()
            raise SystemExit(
                f"benchmark command failed ({process.returncode}): {' '.join(command)}\n{message}"
            )
        peak = int(Path(report.name).read_text().split()[-1]) if GNU_TIME else None
    return Sample(elapsed, peak, cpu)


def repeat(
    times: int, command: Callable[[int], Sequence[str]], before: Callable[[int], None] | None = None
) -> list[Sample]:
    samples = []
    for index in range(times):
        if before is not None:
            before(index)
        samples.append(measure(command(index)))
    return samples


def run_once(site: Site, *arguments: str) -> None:
    measure(site.command(*arguments))


# -- logs ---------------------------------------------------------------------


def cached(name: str, build: Callable[[Path], None], rebuild: bool) -> Path:
    directory = CACHE / f"logs-v{maillog.VERSION}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if rebuild or not path.exists():
        started = time.perf_counter()
        build(path)
        print(
            f"generated {path.relative_to(REPOSITORY)} in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
        )
    return path


def build_logs(rebuild: bool, only_sparse: bool = False) -> dict[str, Path]:
    """The logs the rows read; with only_sparse, only those of rows 8-10."""
    sparse = cached(
        "sparse-1m.log",
        lambda path: maillog.write_sparse_login_log(
            path,
            BIG,
            NOW - timedelta(seconds=30),
            timedelta(minutes=25),
            maillog.client_addresses(SPARSE_CLIENTS),
            LOGIN_EVERY,
            4,
        ),
        rebuild,
    )
    # The same bytes with no success in them: what the logins cost is the difference.
    sparse_none = cached(
        "sparse-1m-none.log",
        lambda path: path.write_bytes(sparse.read_bytes().replace(b"Login: user=<", b"Logon: user=<")),
        rebuild,
    )
    if only_sparse:
        return {"sparse": sparse, "sparse-none": sparse_none}
    # The 1,000,000-line log covers the last 25 minutes: every line is inside
    # the 30-minute timeout, so no reader may skip any of it.
    big = cached(
        "mixed-1m.log",
        lambda path: maillog.write_mixed_log(
            path, BIG, NOW - timedelta(seconds=30), timedelta(minutes=25), CLIENTS, 1
        ),
        rebuild,
    )
    # The 5,000,000-line log covers two days: about 1% of it is inside the timeout.
    huge = cached(
        "mixed-5m.log",
        lambda path: maillog.write_mixed_log(
            path, HUGE, NOW - timedelta(seconds=30), timedelta(days=2), CLIENTS, 2
        ),
        rebuild,
    )
    small = cached(
        "mixed-10.log",
        lambda path: maillog.write_mixed_log(
            path, 10, NOW - timedelta(seconds=20), timedelta(seconds=10), CLIENTS, 3
        ),
        rebuild,
    )
    logins = cached(
        "logins-100k.log",
        lambda path: maillog.write_login_log(
            path, maillog.client_addresses(LEASES), NOW - timedelta(minutes=2), timedelta(minutes=20)
        ),
        rebuild,
    )
    return {
        "big": big,
        "huge": huge,
        "small": small,
        "logins": logins,
        "sparse": sparse,
        "sparse-none": sparse_none,
    }


WRITERS = 3
WRITER_LOGINS = 10_000


def build_store_logs(rebuild: bool) -> dict[str, Path]:
    """The 100,000-login log, and one log of 10,000 logins (of other clients) per writer."""
    addresses = maillog.client_addresses(WRITERS * WRITER_LOGINS)

    def writer_log(number: int) -> Callable[[Path], None]:
        mine = addresses[number * WRITER_LOGINS : (number + 1) * WRITER_LOGINS]
        return lambda path: maillog.write_login_log(
            path, mine, NOW - timedelta(minutes=1), timedelta(minutes=10)
        )

    logs = {
        f"writer-{number}": cached(f"logins-10k-{number}.log", writer_log(number), rebuild)
        for number in range(WRITERS)
    }
    logs["logins"] = cached(
        "logins-100k.log",
        lambda path: maillog.write_login_log(
            path, maillog.client_addresses(LEASES), NOW - timedelta(minutes=2), timedelta(minutes=20)
        ),
        rebuild,
    )
    return logs


def store_rows(
    times: int, logs: dict[str, Path], site: Callable[..., Site], file_noop: Row | None = None
) -> list[Row]:
    """Rows 7: writers at once, render and the quiet run, with the leases in PostgreSQL."""
    sys.path.insert(0, str(REPOSITORY))
    try:
        import pytest

        from tests.support.pg_cluster import remove_cluster, start_cluster
    except ImportError as error:
        print(f"shared store not measured: {error}", file=sys.stderr)
        return []
    try:
        cluster = start_cluster()
    except (Exception, pytest.skip.Exception, pytest.fail.Exception) as error:  # PostgreSQL missing
        print(f"shared store not measured: {error}", file=sys.stderr)
        return []
    os.environ["PGPASSFILE"] = ENVIRONMENT["PGPASSFILE"] = str(cluster.passfile)
    try:
        rows: list[Row] = []
        samples = []
        for index in range(times):
            store = cluster.store(f"bench_writers_{index}")
            writers = [
                site(f"store-writer-{index}-{number}", logs[f"writer-{number}"], store=store)
                for number in range(WRITERS)
            ]
            samples.append(measure_together([writer.command("update") for writer in writers]))
            stored = int(cluster.sql(f"SELECT count(*) FROM bench_writers_{index}.lease"))
            if stored != WRITERS * WRITER_LOGINS:
                raise SystemExit(f"{WRITERS} writers stored {stored} leases, not {WRITERS * WRITER_LOGINS:,}")
        together = Row("7", f"{WRITERS} writers at once x {WRITER_LOGINS:,} logins each", samples)
        together.figure = f"{WRITERS * WRITER_LOGINS / together.median / 1e3:.1f} k logins/s stored"
        rows.append(together)

        store = cluster.store("bench_leases")
        writer = site("store-leases-100k", logs["logins"], link=False, store=store)
        rows.append(
            Row("7", f"first update, {LEASES:,} logins -> store", [measure(writer.command("update"))])
        )
        mta = site("store-mta", logs["logins"], store=store)
        mta.reads_log = False
        mta.write_config()
        rows.append(
            Row(
                "7",
                f"render, {LEASES:,} leases from the store",
                repeat(times, lambda _: mta.command("render")),
            )
        )
        run_once(writer, "update")
        run_once(mta, "update")
        # The lease file beside it, for comparison: the same 100,000 leases.
        local = site("file-leases-100k", logs["logins"], link=False)
        run_once(local, "update")
        # The cheap runs take turns, so that a busy moment weighs on all alike.
        quiet_runs: list[Sample] = []
        mta_runs: list[Sample] = []
        file_runs: list[Sample] = []
        bare_runs: list[Sample] = []
        for _ in range(cheap_times(times)):
            quiet_runs.append(measure(writer.command("update")))
            mta_runs.append(measure(mta.command("update")))
            file_runs.append(measure(local.command("update")))
            bare_runs.append(measure([sys.executable, "-c", "pass"]))
        quiet = Row("7", f"no-op update, {LEASES:,} leases in the store", quiet_runs)
        file_quiet = file_noop or Row("7", f"no-op update, {LEASES:,} leases in the lease file", file_runs)
        quiet.figure = f"{quiet.median - file_quiet.median:+.3f} s against the lease file"
        mta_quiet = Row("7", f"no-op update of an MTA host (no source), {LEASES:,} leases", mta_runs)
        rows += [quiet, mta_quiet]
        if file_noop is None:
            rows += [file_quiet, Row("7", "python3 -c pass", bare_runs)]
        return rows
    finally:
        remove_cluster(cluster)


def measure_together(commands: Sequence[Sequence[str]]) -> Sample:
    """Wall time of processes started at once, until the last one ends."""
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENVIRONMENT)
        for command in commands
    ]
    for process, command in zip(processes, commands, strict=True):
        _, errors = process.communicate()
        if process.returncode != 0:
            raise SystemExit(
                f"benchmark command failed: {' '.join(command)}\n{errors.decode(errors='replace')}"
            )
    return Sample(time.perf_counter() - started, None)


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# -- the table ----------------------------------------------------------------


def available_servers() -> list[str]:
    sys.path.insert(0, str(REPOSITORY))
    from exactcron.rules.builtin import BUILTIN_RULES

    return [name for name in ("dovecot", "courier") if name in BUILTIN_RULES]


def postmap_type() -> tuple[str, str]:
    """The map type to measure with, and a note when the real postmap cannot be used."""
    try:
        subprocess.run(
            ["postconf", "-h", "default_database_type"], env=ENVIRONMENT, capture_output=True, check=True
        )
        subprocess.run(
            ["postmap", "-q", "x", "hash:/dev/null"], env=ENVIRONMENT, capture_output=True, check=False
        )
    except (OSError, subprocess.CalledProcessError):
        return "texthash", "postmap is not usable here (no Postfix, or no main.cf): every map is texthash"
    return "hash", ""


def cheap_times(times: int) -> int:
    return 3 * times


def grep_then_first_updates(
    step: str, lines: int, log: Path, label: str, name: str, times: int, site: Callable[..., Site]
) -> tuple[Row, Row, list[Site]]:
    """grep -c -F over `log`, then a first update of a fresh site on it per repetition:
    the two rows (grep's with its lines per second) and those sites."""
    grep = Row(
        step,
        f"grep -c -F on {lines:,} lines",
        repeat(times, lambda _: ["grep", "-c", "-F", GREP_NEEDLE, str(log)]),
    )
    firsts = [site(f"{name}-{index}", log) for index in range(times)]
    first = Row(step, label, repeat(times, lambda index: firsts[index].command("update")))
    grep.figure = lines_per_second(lines, grep.cost)
    return grep, first, firsts


def lines_per_second(lines: int, seconds: float) -> str:
    rate = lines / seconds
    return f"{rate / 1e6:.2f} M lines/s" if rate >= 1e6 else f"{rate / 1e3:.0f} k lines/s"


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    options.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown")
    options.add_argument("--rebuild", action="store_true", help="regenerate the cached logs")
    options.add_argument(
        "--only-store",
        action="store_true",
        help="only the shared store's rows (7), against a private PostgreSQL (needs root)",
    )
    options.add_argument(
        "--only-sparse", action="store_true", help="only the rows of the 1 %% login log (8-10)"
    )
    arguments = options.parse_args(argv)
    times = max(arguments.repeat, 1)

    servers = available_servers()
    map_type, map_note = postmap_type()
    runs = CACHE / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir(parents=True)
    rows: list[Row] = []

    def site(
        name: str,
        log: Path,
        kind: str = map_type,
        link: bool = True,
        store: str = "",
        rules: Sequence[str] = servers,
        extra: str = "",
    ) -> Site:
        root = runs / name
        root.mkdir()
        target = root / "mail.log"
        if link:
            link_or_copy(log, target)
        else:
            shutil.copyfile(log, target)
        return Site(root, target, kind, rules, extra, store)

    if arguments.only_store:
        store_logs = build_store_logs(arguments.rebuild)
        rows += store_rows(times, store_logs, site)
        print_table(rows, peak_of(rows), map_type, map_note, servers, times)
        return 0

    logs = build_logs(arguments.rebuild, arguments.only_sparse)
    if arguments.only_sparse:
        rows += sparse_rows(times, logs, site)
        print_table(rows, peak_of(rows), map_type, map_note, servers, times)
        return 0

    # 1. First run on 1,000,000 lines against grep on the same file.
    grep, first, firsts = grep_then_first_updates(
        "1", BIG, logs["big"], f"first update, {BIG:,} lines", "first-1m", times, site
    )
    ratio = grep.cost / first.cost
    first.figure = f"{lines_per_second(BIG, first.cost)}; {ratio:.3g} x grep"
    first.goal, first.met = ">= 0.5 x grep", ratio >= 0.5
    rows += [grep, first]

    # 2. No-op on the 1,000,000-line log against a no-op on a 10-line log,
    # with the same leases: the small site read the big log first, and then
    # it was rotated away (as logrotate does) for a 10-line log.
    big_site = firsts[0]
    if times > 1:
        small_site = firsts[1]
    else:
        small_site = site("noop-small", logs["big"])
        run_once(small_site, "update")
    small_site.log.rename(small_site.log.with_name("mail.log.1"))
    shutil.copyfile(logs["small"], small_site.log)
    run_once(small_site, "update")
    # The cheap runs (these, and the bare interpreter for 5.) take turns, so
    # that a busy moment of the machine weighs on all of them alike.
    big_noops, small_noops, bare_runs = [], [], []
    for _ in range(cheap_times(times)):
        big_noops.append(measure(big_site.command("update")))
        small_noops.append(measure(small_site.command("update")))
        bare_runs.append(measure([sys.executable, "-c", "pass"]))
    big_noop = Row("2", f"no-op update, {BIG:,}-line log", big_noops)
    small_noop = Row("2", "no-op update, 10-line log (same leases)", small_noops)
    ratio = big_noop.cost / small_noop.cost
    big_noop.figure = f"{ratio:.2f} x the 10-line log"
    big_noop.goal, big_noop.met = "<= 1.10 x", ratio <= 1.10
    rows += [big_noop, small_noop]

    # 3. First run on 5,000,000 lines spanning two days.
    grep_huge, huge, _ = grep_then_first_updates(
        "3", HUGE, logs["huge"], f"first update, {HUGE:,} lines over 2 days", "first-5m", times, site
    )
    huge.figure = f"{huge.cost / grep_huge.cost:.2f} x grep's time"
    huge.goal, huge.met = "< 1 s", huge.cost < 1.0
    rows += [grep_huge, huge]

    # 4. 100,000 leases.
    leased = site("leases-100k", logs["logins"], link=False)
    setup = Row(
        "4", f"first update, {LEASES:,} logins -> {LEASES:,} leases", [measure(leased.command("update"))]
    )
    noop_leases = Row(
        "4", f"no-op update, {LEASES:,} leases", repeat(times, lambda _: leased.command("update"))
    )
    noop_leases.goal, noop_leases.met = "< 0.3 s", noop_leases.cost < 0.3
    extend_at = NOW - timedelta(seconds=60)
    addresses = maillog.client_addresses(LEASES)

    def append_login(address: str, seconds: int) -> None:
        with leased.log.open("a", encoding="ascii") as stream:
            stream.write(maillog.login_line(extend_at + timedelta(seconds=seconds), address, "someone"))

    extended = Row(
        "4",
        f"update extending 1 of {LEASES:,} leases (map unchanged)",
        repeat(
            times,
            lambda _: leased.command("update"),
            lambda index: append_login(addresses[index * 7919 % LEASES], index),
        ),
    )
    added = Row(
        "4",
        f"update adding a lease to {LEASES:,} ({map_type} map rebuilt)",
        repeat(
            times,
            lambda _: leased.command("update"),
            lambda index: append_login(f"10.250.0.{index + 1}", 10 + index),
        ),
    )
    rows += [setup, noop_leases, extended, added]
    if map_type != "texthash":
        leased.map_type = "texthash"
        leased.write_config()
        run_once(leased, "render")
        added_text = Row(
            "4",
            f"update adding a lease to {LEASES:,} (texthash map)",
            repeat(
                times,
                lambda _: leased.command("update"),
                lambda index: append_login(f"10.250.1.{index + 1}", 20 + index),
            ),
        )
        added_text.figure = f"postmap {map_type} costs {added.cost - added_text.cost:+.3f} s"
        rows.append(added_text)

    # 5. Start-up: a no-op against the bare interpreter.
    bare = Row("5", "python3 -c pass", bare_runs)
    ratio = small_noop.cost / bare.cost
    small_noop.figure = f"{ratio:.1f} x python3 -c pass"
    small_noop.goal, small_noop.met = "<= 3 x python", ratio <= 3.0
    rows.append(bare)

    # 7. The shared store, with 100,000 leases in PostgreSQL.
    rows += store_rows(times, build_store_logs(arguments.rebuild), site, noop_leases)

    # 8-10. 1 % logins, a site rule, a .zst catch-up.
    rows += sparse_rows(times, logs, site)

    # 6. Memory: every exactcron row, against the goal.
    print_table(rows, peak_of(rows), map_type, map_note, servers, times)
    return 0


def sparse_rows(times: int, logs: dict[str, Path], site: Callable[..., Site]) -> list[Row]:
    """8-10: 1 % logins from 10,000 addresses, with the built-in rule and a site rule, and a
    catch-up across a rotation to .zst. The runs take turns with grep, so that a busy
    moment of the machine weighs on both alike."""
    sparse, none = logs["sparse"], logs["sparse-none"]
    logins = BIG // LOGIN_EVERY
    grep_command = ["grep", "-c", "-F", GREP_NEEDLE, str(sparse)]
    kinds = {
        "builtin": lambda index: site(f"sparse-{index}", sparse, rules=["dovecot"]),
        "none": lambda index: site(f"sparse-none-{index}", none, rules=["dovecot"]),
        "site": lambda index: site(f"sparse-site-{index}", sparse, rules=["site-dovecot"], extra=SITE_RULE),
        "beside": lambda index: site(
            f"sparse-beside-{index}", sparse, rules=["dovecot", "mypopd"], extra=BESIDE_RULE
        ),
    }
    samples: dict[str, list[Sample]] = {"grep": [], "builtin": [], "none": [], "site": [], "beside": []}
    for index in range(times):
        samples["grep"].append(measure(grep_command))
        for kind, make in kinds.items():
            samples[kind].append(measure(make(index).command("update")))
    grep = Row("8", f"grep -c -F on {BIG:,} lines, 1 % logins", samples["grep"])
    grep.figure = lines_per_second(BIG, grep.cost)
    builtin = Row(
        "8", f"first update, {BIG:,} lines, 1 % logins from {SPARSE_CLIENTS:,} addresses", samples["builtin"]
    )
    ratio = grep.cost / builtin.cost
    builtin.figure = f"{lines_per_second(BIG, builtin.cost)}; {ratio:.3g} x grep"
    builtin.goal, builtin.met = ">= 0.25 x grep (0.5)", ratio >= 0.25
    without = Row("8", "first update, the same bytes without a login", samples["none"])
    per_login = (builtin.cost - without.cost) / logins * 1e6
    without.figure = f"{per_login:.1f} us per login; {without.cost / grep.cost:.2f} x grep's time"
    without.goal, without.met = "<= 5 us per login", per_login <= 5.0
    site_row = Row("9", "first update, 1 % logins, a site rule instead", samples["site"])
    ratio = site_row.cost / builtin.cost
    site_row.figure = f"{ratio:.2f} x the built-in rule; {grep.cost / site_row.cost:.3g} x grep"
    site_row.goal, site_row.met = "<= 1.10 x built-in", ratio <= 1.10
    beside = Row("9", "first update, 1 % logins, a site rule beside the built-in", samples["beside"])
    ratio = beside.cost / builtin.cost
    beside.figure = f"{ratio:.2f} x the built-in rule; {grep.cost / beside.cost:.3g} x grep"
    beside.goal, beside.met = "<= 1.5 x built-in (1.1)", ratio <= 1.5
    return [grep, builtin, without, site_row, beside, *zst_rows(times, sparse, site)]


def zst_rows(times: int, sparse: Path, site: Callable[..., Site]) -> list[Row]:
    """10: a run that finds its log rotated and compressed with zstd since the last run."""
    if shutil.which("zstd") is None:
        return [Row("10", "rotated .zst catch-up: zstd is not installed", [Sample(0.0, None)])]
    content = sparse.read_bytes()
    half = content.index(b"\n", len(content) // 2) + 1
    first_half = CACHE / "runs" / "sparse-first-half.log"
    first_half.write_bytes(content[:half])
    rotated = CACHE / "runs" / "mail.log.1.zst"
    subprocess.run(["zstd", "-q", "-f", "-o", str(rotated), "-"], input=content, check=True, env=ENVIRONMENT)
    sites = []
    for index in range(times):
        # Read the first half; then the second half is appended, and logrotate
        # (compress, compresscmd zstd) moves the file to mail.log.1.zst.
        caught = site(f"zst-{index}", first_half, rules=["dovecot"], link=False)
        run_once(caught, "update")
        caught.log.unlink()
        link_or_copy(rotated, caught.log.with_name("mail.log.1.zst"))
        caught.log.write_bytes(b"")
        sites.append(caught)
    pipe = f"zstd -dcq {rotated} | tail -c +{half + 1} | grep -c -F '{GREP_NEEDLE}'"
    grep = Row(
        "10", "zstd -dc, tail, grep -c -F: the unread half", repeat(times, lambda _: ["sh", "-c", pipe])
    )
    catch_up = Row("10", f"update catching up {(len(content) - half) >> 20} MiB in a rotated .zst", [])
    catch_up.samples = repeat(times, lambda index: sites[index].command("update"))
    granted = leases_of(sites[0])
    catch_up.figure = f"{grep.cost / catch_up.cost:.3g} x the pipe; {granted:,} leases"
    expected = SPARSE_CLIENTS
    catch_up.goal, catch_up.met = f"{expected:,} leases", granted == expected
    return [grep, catch_up]


def leases_of(site: Site) -> int:
    output = subprocess.run(site.command("show", "--json"), capture_output=True, env=ENVIRONMENT, check=True)
    import json

    return len(json.loads(output.stdout)["leases"])


def peak_of(rows: Sequence[Row]) -> float | None:
    """The highest peak RSS of the rows that run exactcron."""
    peaks = [row.peak_mib for row in rows if row.what.startswith(("first", "no-op", "update", "render"))]
    return max((value for value in peaks if value is not None), default=None)


def print_table(
    rows: list[Row], peak: float | None, map_type: str, map_note: str, servers: list[str], times: int
) -> None:
    header = ("#", "measurement", "wall", "CPU", "figure", "peak RSS", "goal", "")
    body = [
        (
            row.number,
            row.what,
            f"{row.median:.3f} s",
            "" if row.cpu is None else f"{row.cpu:.3f} s",
            row.figure,
            megabytes(row.peak_mib),
            row.goal,
            "" if row.met is None else ("met" if row.met else "MISSED"),
        )
        for row in rows
    ]
    verdict = "" if peak is None else ("met" if peak < 60 else "MISSED")
    body.append(("6", "peak RSS of any exactcron run", "", "", megabytes(peak), "", "< 60 MB", verdict))
    widths = [max(len(line[column]) for line in (header, *body)) for column in range(len(header))]

    def render(line: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |"

    print(render(header))
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for line in body:
        print(render(line))
    print()
    print(
        f"median of {times} (no-ops of 10 and 1,000,000 lines, python3 -c pass: of {cheap_times(times)}); --now {NOW.isoformat()}, timeout {TIMEOUT}, "
        f"rules {'+'.join(servers)}, postfix {map_type} map; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(
        "wall and CPU (user + system, of the whole process tree) times are medians; every ratio "
        "and rate compares CPU times (the wall time of a shared machine varies with its load); "
        f"load average at the end: {' '.join(f'{value:.2f}' for value in os.getloadavg())}"
    )
    if map_note:
        print(map_note)
    if GNU_TIME is None:
        print("peak RSS needs GNU time (/usr/bin/time; Debian package `time`)")


def megabytes(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
