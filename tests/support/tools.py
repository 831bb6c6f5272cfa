"""The real tools a test needs, found on this machine."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The path of a real tool the test needs. Missing: a failure in CI, a skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        message = f"{name} is not installed (the test bootstrap installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def require_root(reason: str) -> None:
    """Skip (fail in CI, which runs as root) a test that needs root for `reason`."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root; this test needs root {reason}")
        pytest.skip(f"needs root {reason}")
