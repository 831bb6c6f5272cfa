"""One host sharing the PostgreSQL lease store: its own state directory, log and map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import Result

from exactcron.cli import main
from tests.support.lines import dovecot_login
from tests.support.pg_cluster import Cluster
from tests.support.runner import invoke


def stamp(minutes_ago: float) -> str:
    """A log stamp `minutes_ago` before the real clock (the store's tests run on it)."""
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


class Host:
    """One machine: a Dovecot log (`sources`), an Exim map (`maps`) and the `store` table text."""

    def __init__(self, root: Path, store: str, sources: bool = True, maps: bool = True) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.state = root / "state"
        self.log = root / "mail.log"
        self.map = self.state / "relay-exim"
        self.log.touch()
        body = f'state_dir = "{self.state}"\n'
        if sources:
            body += f'[[source]]\npath = "{self.log}"\nserver = "dovecot"\nhosts = ["mail"]\n'
        if maps:
            body += f'[[map]]\nmta = "exim"\npath = "{self.map}"\n'
        self.config = root / "exactcron.toml"
        self.config.write_text(body + store)

    def run(self, *arguments: str, now: str | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m exactcron`, as cron runs it on this host."""
        command = [sys.executable, "-m", "exactcron", "--config", str(self.config)]
        if now is not None:
            command += ["--now", now]
        return subprocess.run(
            [*command, *arguments], capture_output=True, text=True, env=dict(os.environ), timeout=120
        )

    def ok(self, *arguments: str, now: str | None = None) -> str:
        """The output of a run that must succeed."""
        result = self.run(*arguments, now=now)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def invoke(self, *arguments: str, now: str) -> Result:
        """The CLI in this process, where a test can strike a fault point."""
        return invoke(main, ["--config", str(self.config), "--now", now, *arguments])

    def login(self, address: str, user: str = "alice", minutes_ago: float = 1) -> None:
        self.login_at(address, datetime.now(UTC) - timedelta(minutes=minutes_ago), user)

    def login_at(self, address: str, at: datetime, user: str = "alice") -> None:
        with self.log.open("a") as log:
            log.write(dovecot_login(address, user, at.isoformat()) + "\n")

    def shown(self) -> list[str]:
        return [lease["ip"] for lease in json.loads(self.ok("show", "--json"))["leases"]]

    def mapped(self) -> list[str]:
        return self.map.read_text().split()

    def checkpoints(self) -> object:
        """Where each source resumes (the quiet-run record beside them may go)."""
        return json.loads((self.state / "checkpoints.json").read_bytes())["sources"]


def relay(postgres: Cluster, schema: str) -> list[str]:
    """The addresses in the store's relay table, as an MTA's SQL lookup sees them."""
    return postgres.sql(f"SELECT address FROM {schema}.relay ORDER BY address").split()
