"""The one place that knows every kind of source: a configured source, opened."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from exactcron.sources.base import Source, SourceSettings, StampReader
from exactcron.sources.checkpoint import Untrusted


def open_source(
    settings: SourceSettings,
    saved: dict[str, Any] | None = None,
    since: datetime | None = None,
    stamp_of: StampReader | None = None,
    untrusted: Untrusted | None = None,
) -> Source:
    """The source `settings` configure, from its saved checkpoint (JSON).

    `since` (now - timeout): what is older grants nothing, so a file (or a
    journal) never read is read from there on; `stamp_of` reads a line's time
    to find that place in a large file; `untrusted`, what the run knows of a
    log once open to forgers.
    """
    if settings.journal:
        # Imported only here: a run without a journal source never pays for subprocess.
        from exactcron.sources.journal import JournalSource

        return JournalSource(settings, saved, since)
    from exactcron.sources.file import LogFileSource

    return LogFileSource(settings, saved, since, stamp_of, untrusted)


def growth_probe(settings: SourceSettings) -> Callable[[], list[int] | None] | None:
    """For `update --follow`: a stat-only look at the source that changes whenever
    something was written, rotated or truncated; None when none is cheap (a
    journal: the follower reads it again each second instead)."""
    if settings.journal:
        return None
    path = settings.path

    def probe() -> list[int] | None:
        try:
            status = os.stat(path)
        except OSError:
            return None
        return [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]

    return probe
