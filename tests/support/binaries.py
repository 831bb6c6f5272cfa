"""Real MTA programs Debian ships but this machine does not install: fetched once, cached."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

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


def unavailable(reason: str, needed: str = "") -> NoReturn:
    """A test whose programs are missing: a failure in CI (`needed` says what it needs), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{needed}required in CI: {reason}")
    pytest.skip(reason)


def mta_unavailable(reason: str) -> NoReturn:
    unavailable(reason, "Exim/Sendmail binaries are ")


def courier_unavailable(reason: str) -> NoReturn:
    unavailable(reason)
