"""Fixtures only: the helpers they build on live in tests/support/."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.binaries import (
    COURIER_CACHE,
    FETCH_COURIER,
    FETCH_MTA,
    MTA_CACHE,
    courier_unavailable,
    fetched_bin_dir,
    mta_unavailable,
)
from tests.support.pg_cluster import Cluster, remove_cluster, start_cluster
from tests.support.site import Site, site_with_map
from tests.support.tools import require_tool

# Property tests stay quick by default; HYPOTHESIS_PROFILE=long runs a long fuzz.
settings.register_profile("exactcron", max_examples=150, deadline=None)
settings.register_profile("long", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "exactcron"))


@pytest.fixture
def make_site(tmp_path: Path) -> Callable[..., Site]:
    def make(map_type: str = "hash", extra: str = "", timezone: str = "UTC", timeout: str = "30m") -> Site:
        require_tool("postmap")
        return site_with_map(tmp_path, map_type, extra, timezone, timeout)

    return make


@pytest.fixture
def site_dir() -> Iterator[Path]:
    """A directory the MTA's unprivileged users can read (pytest's tmp_path is 0700 root)."""
    with tempfile.TemporaryDirectory(prefix="exactcron-mta-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


@pytest.fixture(scope="session")
def mta_bin() -> Path:
    """The directory of wrappers around the unpacked exim4, sendmail, makemap, editmap, m4."""
    if os.geteuid() != 0:
        mta_unavailable("needs root: Exim's binary needs the Debian-exim user and runs setuid")
    return fetched_bin_dir(FETCH_MTA, MTA_CACHE, mta_unavailable)


@pytest.fixture(scope="session")
def courier_bin() -> Path:
    if shutil.which("perl") is None:
        courier_unavailable("perl (for GDBM_File) not installed")
    return fetched_bin_dir(FETCH_COURIER, COURIER_CACHE, courier_unavailable)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    """Warnings of the `exactcron` logger (the CLI's tests turn its propagation off)."""
    collector = _Collect()
    logger = logging.getLogger("exactcron")
    logger.addHandler(collector)
    try:
        yield collector.messages
    finally:
        logger.removeHandler(collector)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One private PostgreSQL for the session; stopped at the end, also on failure."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        remove_cluster(cluster)


@pytest.fixture
def postgres(postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster, running, with its passwords reachable through PGPASSFILE."""
    postgres_cluster.ensure_running()
    monkeypatch.setenv("PGPASSFILE", str(postgres_cluster.passfile))
    return postgres_cluster


@pytest.fixture
def schema() -> str:
    """A schema of its own for each test, so tests sharing the cluster never meet."""
    return f"t{uuid.uuid4().hex[:12]}"
