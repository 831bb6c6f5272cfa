"""A stand-in for cron: start a command now and again at each whole minute.

The shipped cron line runs `exactcron update --follow` every minute; the
end-to-end test and benchmarks/grant_delay.py run it the same way without a
cron daemon. Each run's output goes to a file of its own; leaving the
context stops the runs still going, by their pid.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

try:
    from tests.e2e.harness import stop_popen
except ImportError:  # tests/ itself on sys.path (see tests/test_e2e.py)
    from e2e.harness import stop_popen  # type: ignore[no-redef,import-not-found,unused-ignore]


class EachMinute:
    """Starts `argv` at once and at every whole minute until the context is left
    (`once`: at once only)."""

    def __init__(
        self,
        argv: Sequence[str],
        logs: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        once: bool = False,
    ) -> None:
        self.once = once
        self.argv = list(argv)
        self.logs = logs
        self.env = env
        self.cwd = cwd
        self.runs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_one(self) -> None:
        output = self.logs / f"run-{len(self.runs)}.out"
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.runs.append((proc, output))

    def _loop(self) -> None:
        self._start_one()
        if self.once:
            return
        # Event.wait, not sleep: leaving the context ends the wait at once.
        while not self._stop.wait(60.0 - time.time() % 60.0):
            self._start_one()

    def __enter__(self) -> EachMinute:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for proc, _ in self.runs:
            stop_popen(proc, " ".join(self.argv))

    def failures(self) -> list[str]:
        """Runs that ended with an error; a run stopped on leaving (SIGTERM) is none."""
        return [
            f"run {number} exited {proc.returncode}: {output.read_text(errors='replace').strip()}"
            for number, (proc, output) in enumerate(self.runs)
            if proc.returncode not in (0, -15)
        ]
