"""Shared by the map tests: a configuration, a mail log, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NOW = "2026-11-25T18:00:00+00:00"
LATER = "2026-11-25T18:01:00+00:00"


def login_line(address: str, user: str = "alice", second: int = 0) -> str:
    """A successful Dovecot login as Debian 12's rsyslog writes it."""
    return (
        f"2026-11-25T17:50:{second:02d}.486319+00:00 vm dovecot: pop3-login: Login: user=<{user}>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=10899, session=<abc{second}>\n"
    )


def failed_line(address: str) -> str:
    return (
        "2026-11-25T17:50:30.000000+00:00 vm dovecot: pop3-login: Disconnected: Connection closed "
        f"(auth failed, 1 attempts in 2 secs): user=<mallory>, method=PLAIN, rip={address}, lip=10.77.0.1\n"
    )


@dataclass
class Site:
    """A configuration with one Dovecot log and the given [[map]] tables."""

    directory: Path
    maps: list[str]

    @property
    def config(self) -> Path:
        return self.directory / "exactcron.toml"

    @property
    def log(self) -> Path:
        return self.directory / "mail.log"

    @property
    def map_dir(self) -> Path:
        return self.directory / "maps"

    def write(self) -> None:
        self.map_dir.mkdir(exist_ok=True)
        self.log.touch()
        tables = "\n".join(f"[[map]]\n{table}\n" for table in self.maps)
        self.config.write_text(
            f'state_dir = "{self.directory / "state"}"\n'
            'timeout = "30m"\n'
            f'[[source]]\npath = "{self.log}"\nserver = "dovecot"\ntimezone = "UTC"\nhosts = ["vm"]\n{tables}'
        )
        self.config.chmod(0o644)

    def append_log(self, *lines: str) -> None:
        with self.log.open("a") as stream:
            stream.writelines(lines)

    def run(
        self, *arguments: str, now: str = NOW, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "exactcron", "--config", str(self.config), "--now", now, *arguments]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
            check=False,
        )

    def files(self) -> dict[str, tuple[int, int, bytes]]:
        """Every file in the map directory: inode, mtime in ns, content."""
        return {
            path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(self.map_dir.iterdir())
        }


def make_site(directory: Path, *maps: str) -> Site:
    site = Site(directory, list(maps))
    site.write()
    return site


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result
