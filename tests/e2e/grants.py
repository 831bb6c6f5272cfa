"""When a login line appears in a log, and when the map first answers OK for its address.

For the end-to-end follow test and benchmarks/grant_delay.py: both watch
with os.stat and reads every millisecond, and ask the real `postmap -q` only
when the map's database file changed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

try:
    from tests.e2e.harness import binary
except ImportError:  # tests/ itself on sys.path (see tests/test_e2e.py)
    from e2e.harness import binary  # type: ignore[no-redef,import-not-found,unused-ignore]


@dataclass(frozen=True)
class Delay:
    written: float  # epoch seconds
    granted: float

    @property
    def seconds(self) -> float:
        return self.granted - self.written


class MapWatch:
    """Says when `postmap -q ADDRESS` first answers OK, looking again only when the file changed."""

    def __init__(self, map_path: Path, env: dict[str, str] | None) -> None:
        self.database = map_path.with_name(map_path.name + ".db")
        self.map_path = map_path
        self.env = env

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            status = os.stat(self.database)
        except OSError:
            return None
        return status.st_ino, status.st_mtime_ns, status.st_size

    def answers_ok(self, address: str) -> bool:
        found = subprocess.run(
            [binary("postmap"), "-q", address, f"hash:{self.map_path}"],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        return found.returncode == 0 and found.stdout.strip() == "OK"

    def wait_granted(
        self,
        address: str,
        written: Callable[[], float | None],
        timeout: float = 10.0,
        stop: threading.Event | None = None,
    ) -> Delay | None:
        """Poll every millisecond: the line's instant (from `written`) and the map's answer;
        None when the map has not answered OK within `timeout` seconds or once `stop` is set."""
        seen = None
        deadline = time.monotonic() + timeout
        line_at: float | None = None
        while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
            if line_at is None:
                line_at = written()
            signature = self._signature()
            if signature != seen:
                seen = signature
                if self.answers_ok(address):
                    granted = time.time()
                    if line_at is None:  # granted before the watcher saw the line: take it now
                        line_at = written() or granted
                    return Delay(line_at, granted)
            time.sleep(0.001)
        return None


class LogWatch:
    """The instant a login line from an address appears in a log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""

    def skip_to_end(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.pending = b""

    def seen(self, address: str) -> Callable[[], float | None]:
        needle = f"rip={address},".encode()

        def check() -> float | None:
            try:
                with open(self.path, "rb") as log:
                    log.seek(self.offset)
                    chunk = log.read()
            except FileNotFoundError:
                return None
            if not chunk:
                return None
            now = time.time()
            self.offset += len(chunk)
            self.pending += chunk
            lines = self.pending.split(b"\n")
            self.pending = lines.pop()
            found = any(needle in line and (b"Login: " in line or b"Logged in: " in line) for line in lines)
            return now if found else None

        return check
