"""A run's deadline (`run_deadline`): no run holds the lock longer.

Reading is the only part of a run whose length the logs decide; it stops at
four fifths of the deadline, so that merging, saving, pruning and rewriting
the maps fit in the rest. The clock is the monotonic one: a clock set back
or forward during a run neither stretches nor cuts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from exactcron import faults

# The part of run_deadline that reading may take.
READING_SHARE = 0.8


class Deadline:
    def __init__(self, limit: timedelta, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._stop_reading_at = clock() + limit.total_seconds() * READING_SHARE
        self.reached = False

    def passed(self) -> bool:
        """Whether reading must stop now (and from now on)."""
        if not self.reached:
            self.reached = faults.deadline_forced() or self._clock() >= self._stop_reading_at
        return self.reached

    def describe(self) -> str:
        """`run_deadline of 50s`, as configured."""
        seconds = self.limit.total_seconds()
        return f"run_deadline of {seconds:g}s"
