"""Shared fixtures: a site (config, mail log, state, map) in a temporary folder."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import settings

from exactcron.cli import main
from tests.pg_cluster import Cluster, remove_cluster, start_cluster

NOW = "2026-11-25T18:00:00+00:00"

# Property tests stay quick by default; HYPOTHESIS_PROFILE=long runs a long fuzz.
settings.register_profile("exactcron", max_examples=150, deadline=None)
settings.register_profile("long", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "exactcron"))


def require_tool(name: str) -> str:
    """The path of a real tool the test needs. Missing: a failure in CI, a skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        message = f"{name} is not installed (the test bootstrap installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Site:
    root: Path
    config: Path
    log: Path
    state: Path
    map: Path

    def write_log(self, *lines: str) -> None:
        with self.log.open("a", encoding="utf-8") as stream:
            for line in lines:
                stream.write(line + "\n")

    def run(self, *args: str, now: str | None = NOW) -> Result:
        """Run the CLI in-process, as an administrator would type it."""
        options = ["--config", str(self.config)]
        if now is not None:
            options += ["--now", now]
        return CliRunner().invoke(main, [*options, *args], catch_exceptions=False)


def write_config(root: Path, body: str) -> Path:
    config = root / "exactcron.toml"
    config.write_text(body, encoding="utf-8")
    config.chmod(0o644)
    return config


def write_site_config(root: Path, state: Path, more_maps: str = "", settings: str = "") -> Path:
    """A config reading `root/mail.log` into a hash map `state/relay` (and `more_maps`)."""
    return write_config(
        root,
        f"""\
state_dir = "{state}"
{settings}
[[source]]
path = "{root / "mail.log"}"
server = "dovecot"
hosts = ["mail"]
[[map]]
mta = "postfix"
path = "{state / "relay"}"
type = "hash"
{more_maps}""",
    )


@pytest.fixture
def make_site(tmp_path: Path) -> Callable[..., Site]:
    def make(map_type: str = "hash", extra: str = "") -> Site:
        require_tool("postmap")
        state = tmp_path / "state"
        log = tmp_path / "mail.log"
        log.touch()
        relay = state / "relay"
        config = write_config(
            tmp_path,
            f"""\
state_dir = "{state}"
timeout = "30m"
{extra}
[[source]]
path = "{log}"
server = "dovecot"
timezone = "UTC"
hosts = ["mail"]

[[map]]
mta = "postfix"
path = "{relay}"
type = "{map_type}"
""",
        )
        return Site(tmp_path, config, log, state, relay)

    return make


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


def dovecot_login(address: str, user: str = "alice", time: str = "2026-11-25T17:50:13.486319+00:00") -> str:
    """A Dovecot POP3 success line as Debian's rsyslog writes it."""
    return (
        f"{time} mail dovecot: pop3-login: Login: user=<{user}>, method=PLAIN, "
        f"rip={address}, lip=10.77.0.1, mpid=10899, session=<Mr1iP0TtYMEKTQAC>"
    )


def dovecot_failure(address: str, user: str = "mallory", time: str = "2026-11-25T17:50:14+00:00") -> str:
    return (
        f"{time} mail dovecot: pop3-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): "
        f"user=<{user}>, method=PLAIN, rip={address}, lip=10.77.0.1, session=<Xr1iP0TtYMEKTQAC>"
    )


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
