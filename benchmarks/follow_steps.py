"""What one step of `update --follow` costs in CPU on a large lease file.

    python3 benchmarks/follow_steps.py [--sizes 100,1000,10000] [--steps 30] [--profile N]
                                       [--code DIR]

A follower runs a step (commands/update.py `run_update`) whenever a log
grows. Here each size N starts from a first run over N Dovecot logins from N
addresses and users (`[guard]` on, as by default; a Postfix hash map through
the real postmap), then `--steps` steps run in this one process, as a
follower runs them, each after one new login was written to the log:

- "new address": a login from an address with no lease (the map changes,
  postmap runs);
- "known address": a later login from an address that holds a lease (the
  lease file changes, the map does not).

And, with --follow S (35 by default; 0: not measured), at the largest size,
a real `update --follow-for S` process (benchmarks/follow.py's measure) while
a login is written each second, every fifth from a new address: its CPU per
minute, postmap included, the follower's own first run left out.

Each row is the CPU per step (this process's own, and postmap's: the
children's), the median over the steps. With --profile N, the cProfile of
the new-address steps at size N, by cumulative time. --code DIR: the
exactcron package of another checkout (an older version, for a before/after).
Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import follow
import maillog

REPOSITORY = Path(__file__).resolve().parent.parent


def cpu() -> float:
    """CPU seconds of this process and of the children it waited for (postmap)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Site:
    """A state directory with `size` leases, and the log that granted them."""

    def __init__(self, root: Path, size: int) -> None:
        from exactcron.config import load_config

        root.mkdir()
        self.log = root / "mail.log"
        self.addresses = maillog.client_addresses(size + 10_000)
        now = datetime.now(UTC)
        # Spread over the last 20 minutes of a 30 minute timeout: none expires during the steps.
        maillog.write_login_log(self.log, self.addresses[:size], now, timedelta(minutes=20))
        path = root / "exactcron.toml"
        path.write_text(
            f'state_dir = "{root / "state"}"\ntimeout = "30m"\n'
            f'[[source]]\npath = "{self.log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
            f'[[map]]\nmta = "postfix"\npath = "{root / "state" / "relay"}"\ntype = "hash"\n'
        )
        self.config = load_config(path)
        self.size = size
        self.fresh = size  # the next address with no lease
        self.rng = random.Random(size)

    def login(self, new: bool) -> None:
        if new:
            index = self.fresh
            self.fresh += 1
        else:
            index = self.rng.randrange(self.size)
        line = maillog.login_line(datetime.now(UTC), self.addresses[index], f"user{index}", self.rng)
        with self.log.open("a") as stream:
            stream.write(line)

    def step(self) -> None:
        from exactcron.commands.update import run_update

        result = run_update(self.config, datetime.now(UTC), installed_clock=lambda: datetime.now(UTC))
        if result.leases < self.size:
            raise SystemExit(f"a step left {result.leases} leases of {self.size}")


def logins_each_second(site: Site) -> Callable[[threading.Event], None]:
    def write(stop: threading.Event) -> None:
        count = 0
        while not stop.wait(1.0):
            count += 1
            site.login(new=count % 5 == 0)

    return write


def measure(site: Site, steps: int, new: bool, profiler: cProfile.Profile | None) -> float:
    """Median CPU seconds of `steps` steps, each after one login was written."""
    spent = []
    for _ in range(steps):
        site.login(new)
        before = cpu()
        if profiler is not None:
            profiler.enable()
        site.step()
        if profiler is not None:
            profiler.disable()
        spent.append(cpu() - before)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile", type=int, help="profile the new-address steps of this size")
    parser.add_argument("--follow", type=float, default=35.0, help="seconds of the follow measured (0: none)")
    parser.add_argument("--code", type=Path, default=REPOSITORY, help="the checkout whose exactcron runs")
    options = parser.parse_args()
    sys.path.insert(0, str(options.code.resolve()))
    import exactcron

    sizes = [int(size) for size in options.sizes.split(",")]
    print(f"exactcron from {Path(exactcron.__file__).parent}; CPU per step, median of {options.steps}")
    print(f"{'leases':>8} {'new address (ms)':>18} {'known address (ms)':>20} {'leases.json':>12}")
    with tempfile.TemporaryDirectory(prefix="exactcron-steps-") as name:
        for size in sizes:
            site = Site(Path(name) / str(size), size)
            site.step()  # the first run: the state begins
            profiler = cProfile.Profile() if options.profile == size else None
            new = measure(site, options.steps, True, profiler)
            known = measure(site, options.steps, False, None)
            weight = (site.config.state_dir / "leases.json").stat().st_size
            print(f"{size:>8} {new * 1000:>18.1f} {known * 1000:>20.1f} {weight / 1e6:>10.2f}MB", flush=True)
            if options.follow and size == sizes[-1]:
                config = site.config.path
                per_minute = follow.follow(
                    config, options.code.resolve(), options.follow, logins_each_second(site)
                )
                print(
                    f"follow of {size} leases, a login a second: {per_minute:.2f} s CPU per minute",
                    flush=True,
                )
            if profiler is not None:
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
                print(text.getvalue())


if __name__ == "__main__":
    main()
