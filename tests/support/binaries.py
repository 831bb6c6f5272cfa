"""Real MTA programs Debian ships but this machine does not install: fetched once, cached."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

TOOLS = Path(__file__).resolve().parent.parent / "tools"
FETCH_MTA = TOOLS / "fetch-mta-binaries.sh"
FETCH_COURIER = TOOLS / "fetch-courier-binaries.sh"
MTA_CACHE = Path(os.environ.get("EXACTCRON_MTA_CACHE", Path.home() / ".cache" / "exactcron" / "mta-binaries"))
COURIER_CACHE = Path(
    os.environ.get("EXACTCRON_COURIER_CACHE", Path.home() / ".cache" / "exactcron" / "courier-binaries")
)


def fetched_bin_dir(
    script: Path, cache: Path, unavailable: Callable[[str], NoReturn], timeout: float = 300
) -> Path:
    """The bin directory `script` prints once it has unpacked its packages into `cache`."""
    try:
        fetched = subprocess.run(
            [script, str(cache)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        unavailable(f"{script} did not run: {error}")
    if fetched.returncode != 0:
        unavailable(f"{script} failed: {fetched.stderr.strip()}")
    return Path(fetched.stdout.strip())
