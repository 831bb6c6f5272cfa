"""`update --follow`: after the run, keep reading until the deadline, no daemon.

Each step is the run itself (update.run_update): under the lock it loads the
leases from the store, reads every source from its saved checkpoint (the
rotation logic included), merges, installs the maps and saves the
checkpoints. So nothing is kept in memory between steps: a `flush` or an `add`
made meanwhile is what the next step starts from, and a follower killed at
any point leaves what a killed run leaves.

Between steps the lock is not held, and the follower sleeps in the kernel
(inotify, sources/watch.py) until a log file, its rotation or the follower
file change, or a journal source's `journalctl --follow` prints an entry of
its units, or until its next due moment: the earliest lease's end, an idle
step every IDLE_STEP_SECONDS, the follow's end. Where a source cannot be
watched so, a log file is looked at with os.stat every POLL_SECONDS and a
journal gets a step each JOURNAL_STEP_SECONDS (its quiet check asks the
journal). Steps a change wakes are at least watch.step_gap apart, so a busy
log is read in batches, not line by line. A write to a log file (and nothing
else) first has its new bytes looked at (sources/peek.py, from where the last
step's checkpoint left the file): a batch of lines none of which holds a
needle of the source's rules wakes no step. Any other event, a journal's
entry, the idle step and a lease's end still step at once.

The newest follower owns the state directory's follower file (written under
the lock); an older one sees it replaced (woken by it, or at its next poll)
and exits.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from exactcron.commands.update import UpdateResult, run_update
from exactcron.config import Config, SourceConfig
from exactcron.errors import DeadlineReachedError, LockTimeoutError, StateWriteError
from exactcron.outputs.health import FollowerRecord
from exactcron.records import replace
from exactcron.sources.open import growth_probe
from exactcron.sources.peek import LogPeek, log_peek
from exactcron.sources.watch import (
    Inotify,
    exactly,
    open_inotify,
    step_gap,
    stop_followers,
    watch_source,
)
from exactcron.stores.local import FOLLOWER_FILE, LocalState

POLL_SECONDS = 0.2
JOURNAL_STEP_SECONDS = 1.0
IDLE_STEP_SECONDS = 30.0
# Looks at a log's new bytes (sources/peek.py): one per PEEK_GAP_SECONDS on
# a busy log, but PEEK_BURST back to back after a quiet spell, so that the
# lines a server writes in one breath (a login's among them) are each looked
# at as they come, not 0.2 s after the first.
PEEK_GAP_SECONDS = 0.2
PEEK_BURST = 4

SOURCES = "sources"
FOLLOWER = "follower"
# A write to the Nth source's live log file: peeked at before it wakes a step.
GROWN = "grown:"


def follow_until_minute_end(wall: float) -> float:
    """Seconds from `wall` (epoch seconds) to one second before the next whole minute."""
    return 60.0 - (wall % 60.0) - 1.0


def follow_from(
    config: Config,
    given_now: datetime | None,
    duration: float,
    count_lines: bool,
    on_step: Callable[[UpdateResult], None],
) -> None:
    """run_follow on the wall clock; with `given_now` (--now), from that time,
    moving on as the follow goes (the grant delays measured on it too)."""
    started = time.monotonic()

    def clock() -> datetime:
        if given_now is None:
            return datetime.now(UTC)
        return given_now + timedelta(seconds=time.monotonic() - started)

    run_follow(config, clock, duration, count_lines, on_step, None if given_now is not None else _wall_clock)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class Watch:
    """What wakes the follower between steps: inotify where it can, os.stat where it cannot."""

    def __init__(self, config: Config, inotify: Inotify | None) -> None:
        self.config = config
        self.inotify = inotify
        self.gap = max(step_gap(source) for source in config.sources) if config.sources else 0.0
        self.follower_watched = False
        # The sources inotify cannot watch: stat probes (None: a journal, stepped each second).
        self.polled: list[Callable[[], list[int] | None]] = []
        self.polled_journal = False
        self.seen: list[list[int] | None] = []
        # A journal source's `journalctl --follow`, by source (sources/watch.py).
        self.followers: dict[str, subprocess.Popen[bytes]] = {}
        # Per GROWN key, the peek at its log file's writes (log files inotify watches).
        self.peeks: dict[str, LogPeek] = {}
        # The GROWN keys woken and not looked at yet; the looks allowed now, as of when.
        self.pending: set[str] = set()
        self.peek_credit = float(PEEK_BURST)
        self.credit_at = time.monotonic()
        self.state = LocalState(config.state_dir)

    def arm(self) -> None:
        """Watch each source (again: a rotated log is a new file) and take the polled ones' stat."""
        inotify = self.inotify
        self.polled = []
        self.polled_journal = False
        for index, source in enumerate(self.config.sources):
            grown = f"{GROWN}{index}"
            if inotify is not None and watch_source(inotify, source, SOURCES, self.followers, grown):
                if grown not in self.peeks:
                    peek = log_peek(source, source_needles(source))
                    if peek is not None:
                        self.peeks[grown] = peek
                continue
            probe = growth_probe(source)
            if probe is None:
                self.polled_journal = True
            else:
                self.polled.append(probe)
        if inotify is not None and not self.follower_watched:
            self.follower_watched = inotify.watch_directory(
                self.config.state_dir, FOLLOWER, exactly(FOLLOWER_FILE), writes=False
            )
        self.seen = [probe() for probe in self.polled]

    def restart_peeks(self) -> None:
        """After a step: look at each log from where the checkpoint it saved left it
        (read without the lock: the file is replaced whole, never written in place)."""
        if not self.peeks:
            return
        try:
            checkpoints = self.state.load_checkpoints(repair=False)
        except StateWriteError:
            checkpoints = {}  # unreadable: each write steps, and the step says why
        for key, peek in self.peeks.items():
            index = int(key.removeprefix(GROWN))
            peek.restart(checkpoints.get(str(self.config.sources[index].path)))

    def polls(self) -> bool:
        return bool(self.polled) or not self.follower_watched

    def wait(self, timeout: float) -> set[str]:
        """What may have changed within `timeout` seconds (SOURCES, FOLLOWER); may return early, empty."""
        if self.pending:
            # A busy log: the writes are looked at once per PEEK_GAP_SECONDS,
            # with whatever else woke meanwhile.
            pause = min(timeout, (1.0 - self._peek_credit()) * PEEK_GAP_SECONDS)
            if pause > 0:
                time.sleep(pause)
            timeout = 0.0
        if self.polls():
            timeout = min(timeout, POLL_SECONDS)
        if self.inotify is None:
            time.sleep(max(0.0, timeout))
            woken: set[str] | None = set()
        else:
            woken = self.inotify.wait(timeout)
        if woken is None:
            woken = {SOURCES, FOLLOWER}  # events were lost: anything may have changed
        if not self.follower_watched:
            woken.add(FOLLOWER)
        if self.polled:
            current = [probe() for probe in self.polled]
            if current != self.seen:
                self.seen = current
                woken.add(SOURCES)
        grown = {key for key in woken if key.startswith(GROWN)}
        woken.difference_update(grown)
        self.pending |= grown
        if SOURCES in woken:
            self.pending.clear()  # a step comes anyway, and reads those writes too
        elif self.pending and self._peek_credit() >= 1.0:
            self.peek_credit -= 1.0
            if any(self._may_hold_login(key) for key in sorted(self.pending)):
                woken.add(SOURCES)
            self.pending.clear()
        return woken

    def _peek_credit(self) -> float:
        """The looks allowed now: one more each PEEK_GAP_SECONDS, PEEK_BURST at most."""
        moment = time.monotonic()
        gained = (moment - self.credit_at) / PEEK_GAP_SECONDS
        self.peek_credit = min(float(PEEK_BURST), self.peek_credit + gained)
        self.credit_at = moment
        return self.peek_credit

    def _may_hold_login(self, key: str) -> bool:
        peek = self.peeks.get(key)
        return peek is None or peek.may_hold_login()

    def close(self) -> None:
        stop_followers(self.followers)
        if self.inotify is not None:
            self.inotify.close()


def source_needles(source: SourceConfig) -> frozenset[bytes]:
    """What a line of `source` must hold to be read by its step: its rules' needles
    (two-line rules' connect and end lines among them) and, held while
    connected, the end lines of sessions (they end a lease held open)."""
    from exactcron.rules.parser import rule_needles

    needles = rule_needles(source.rules)
    if source.hold_while_connected:
        from exactcron.rules.sessions import end_phrases

        needles |= frozenset(end_phrases(source.rules))
    return needles


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
    watch = Watch(config, open_inotify())
    try:
        _follow(config, clock, duration, count_lines, on_step, installed_clock, watch)
    finally:
        watch.close()


def _follow(
    config: Config,
    clock: Callable[[], datetime],
    duration: float,
    count_lines: bool,
    on_step: Callable[[UpdateResult], None],
    installed_clock: Callable[[], datetime] | None,
    watch: Watch,
) -> None:
    end = time.monotonic() + duration
    started = clock()
    me = FollowerRecord(os.getpid(), started, started + timedelta(seconds=duration))
    # What `status` shows of the follower running now; the random part tells
    # two followers of one pid apart.
    token = json.dumps({**me.to_json(), "id": secrets.token_hex(8)}, sort_keys=True)
    claimed: list[list[int] | None] = [None]

    def claim(state: LocalState) -> None:
        claimed[0] = state.claim_follower(token)

    follower_file = LocalState(config.state_dir)
    # Armed before the run reads: whatever is written from then on wakes a step.
    watch.arm()
    first = run_update(
        config, clock(), count_lines, under_lock=claim, installed_clock=installed_clock, follower=me
    )
    watch.restart_peeks()
    on_step(first)
    last_step = time.monotonic()
    next_expiry = _expiry_moment(first.next_expiry, clock)
    # A journalctl --follow prints only what comes after it found the journal's
    # end, which may be after the run read it: one step a second later reads
    # whatever came in between.
    settling = bool(watch.followers)
    while True:
        moment = time.monotonic()
        if moment >= end:
            return
        idle = JOURNAL_STEP_SECONDS if watch.polled_journal or settling else IDLE_STEP_SECONDS
        wake = min(end, last_step + idle)
        if next_expiry is not None:
            wake = min(wake, next_expiry)
        woken = watch.wait(wake - moment)
        if FOLLOWER in woken and follower_file.follower_signature() != claimed[0]:
            return  # a newer follower took over
        moment = time.monotonic()
        due = (
            SOURCES in woken
            or moment - last_step >= idle
            or (next_expiry is not None and moment >= next_expiry)
        )
        if not due:
            continue
        if SOURCES in woken and moment < last_step + watch.gap:
            # Lines written meanwhile are read with these; the events they raise are drained below.
            time.sleep(min(last_step + watch.gap, end) - moment)
        drained = watch.wait(0.0) if watch.inotify is not None else set()
        if FOLLOWER in drained and follower_file.follower_signature() != claimed[0]:
            return
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        # Before the step reads: a log made since the last (a rotation) is
        # watched from now on, and whatever is written after this wakes the next.
        watch.arm()
        # No step outlives the follow: its lock wait and its reading end with it.
        limit = timedelta(seconds=remaining)
        step_config = replace(
            config, lock_wait=min(config.lock_wait, limit), run_deadline=min(config.run_deadline, limit)
        )
        cut_by_end = limit < config.run_deadline
        try:
            result = run_update(
                step_config,
                clock(),
                count_lines,
                installed_clock=installed_clock,
                ends_follow=cut_by_end,
                follower=me,
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
        watch.restart_peeks()
        last_step = time.monotonic()
        settling = False
        next_expiry = _expiry_moment(result.next_expiry, clock)
        on_step(result)


def _expiry_moment(expiry: float | None, clock: Callable[[], datetime]) -> float | None:
    """The monotonic moment of `expiry` (epoch seconds on `clock`), or None."""
    if expiry is None:
        return None
    return time.monotonic() + max(0.0, expiry - clock().timestamp())
