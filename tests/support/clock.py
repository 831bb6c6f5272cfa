"""The tests' one clock: every run is `--now NOW` unless a test says otherwise."""

from __future__ import annotations

from datetime import UTC, datetime

NOW_TIME = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
NOW = NOW_TIME.isoformat()  # "2026-11-25T18:00:00+00:00", as --now takes it
LATER = "2026-11-25T18:01:00+00:00"
