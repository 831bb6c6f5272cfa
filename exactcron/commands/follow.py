"""`update --follow`: after the run, keep reading until the deadline, no daemon.

Each step is the run itself (update.run_update): under the lock it loads the
leases from the store, reads every source from its saved checkpoint (the
rotation logic included), merges, installs the maps and saves the
checkpoints. So nothing is kept in memory between steps: a `flush` or an `add`
made meanwhile is what the next step starts from, and a follower killed at
any point leaves what a killed run leaves.

Between steps the lock is not held. A log file is watched with os.stat only
(its size, inode and times, every POLL_SECONDS); a journal source has a step
each second (its quiet check asks the journal). A step also runs when the
earliest lease ends, and at least every IDLE_STEP_SECONDS.

The newest follower owns the state directory's follower file (written under
the lock); an older one sees it replaced at its next poll and exits.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from exactcron.commands.update import UpdateResult, run_update
from exactcron.config import Config
from exactcron.errors import DeadlineReachedError, LockTimeoutError
from exactcron.sources.open import growth_probe
from exactcron.stores.local import LocalState

POLL_SECONDS = 0.2
JOURNAL_STEP_SECONDS = 1.0
IDLE_STEP_SECONDS = 30.0


def follow_until_minute_end(wall: float) -> float:
    """Seconds from `wall` (epoch seconds) to one second before the next whole minute."""
    return 60.0 - (wall % 60.0) - 1.0


def run_follow(
    config: Config,
    clock: Callable[[], datetime],
    duration: float,
    count_lines: bool,
    on_step: Callable[[UpdateResult], None],
    installed_clock: Callable[[], datetime] | None = None,
) -> None:
    """The run, then steps until `duration` seconds from now or until a newer follower starts.

    `clock` gives each step's `now`; `installed_clock` the wall clock for the
    grant delays (run_update). Errors of a step are raised (the step
    already left the maps fail-closed, as a run does).
    """
    end = time.monotonic() + duration
    token = f"{os.getpid()} {secrets.token_hex(8)}"
    claimed: list[list[int] | None] = [None]

    def claim(state: LocalState) -> None:
        claimed[0] = state.claim_follower(token)

    probes = [growth_probe(source) for source in config.sources]
    watched = [probe for probe in probes if probe is not None]
    journal = len(watched) < len(probes)
    follower_file = LocalState(config.state_dir)
    # Taken before the run reads: whatever is written from then on shows as a change.
    seen = [probe() for probe in watched]
    first = run_update(config, clock(), count_lines, under_lock=claim, installed_clock=installed_clock)
    on_step(first)
    last_step = time.monotonic()
    next_expiry = first.next_expiry
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(POLL_SECONDS, remaining))
        if follower_file.follower_signature() != claimed[0]:
            return  # a newer follower took over
        current = [probe() for probe in watched]
        moment = time.monotonic()
        due = (
            current != seen
            or (journal and moment - last_step >= JOURNAL_STEP_SECONDS)
            or moment - last_step >= IDLE_STEP_SECONDS
            or (next_expiry is not None and clock().timestamp() >= next_expiry)
        )
        remaining = end - moment
        if not due or remaining <= 0:
            continue
        seen = current
        # No step outlives the follow: its lock wait and its reading end with it.
        limit = timedelta(seconds=remaining)
        step_config = replace(
            config, lock_wait=min(config.lock_wait, limit), run_deadline=min(config.run_deadline, limit)
        )
        cut_by_end = limit < config.run_deadline
        try:
            result = run_update(
                step_config, clock(), count_lines, installed_clock=installed_clock, ends_follow=cut_by_end
            )
        except DeadlineReachedError:
            if cut_by_end:
                # The follow's own end came first: what was read is saved and
                # installed, no failure is recorded; the next cron run goes on
                # from the checkpoints.
                return
            raise
        except LockTimeoutError:
            if limit < config.lock_wait:
                return  # the follow's end came first; nothing was done
            raise
        last_step = time.monotonic()
        next_expiry = result.next_expiry
        on_step(result)
