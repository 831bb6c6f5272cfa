"""Reading a map back as the MTA does: Postfix's own `postmap`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require_tool


def postmap_query(
    map_path: Path | str, key: str, map_type: str = "hash", timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`postmap -q KEY TYPE:MAP`, the lookup smtpd makes; exit 0 found, 1 absent."""
    return subprocess.run(
        [require_tool("postmap"), "-q", key, f"{map_type}:{map_path}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def postmap_value(map_path: Path | str, key: str, map_type: str = "hash") -> str | None:
    """What smtpd would find for `key`: the value, or None when absent (a postmap error fails)."""
    found = postmap_query(map_path, key, map_type)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.strip() if found.returncode == 0 else None


def map_keys(map_path: Path | str, map_type: str = "hash") -> set[str]:
    """Every key the map answers OK for (`postmap -s` dumps them all)."""
    dumped = subprocess.run(
        [require_tool("postmap"), "-s", f"{map_type}:{map_path}"], capture_output=True, text=True, check=True
    )
    return {line.split()[0] for line in dumped.stdout.splitlines() if line.split()[1:] == ["OK"]}
