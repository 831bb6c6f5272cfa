"""A small filesystem of its own for a test: a tmpfs, mounted for the test's span."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.tools import require_root


@contextmanager
def small_tmpfs(mount: Path, size: str, label: str) -> Iterator[Path]:
    """A tmpfs of `size` at `mount` (made here), unmounted after, also on failure."""
    require_root("to mount a filesystem")
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", label, str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
