"""One site: a configuration, a Dovecot mail log, a state directory and maps in one folder.

`site_with_map` is the conftest's `make_site` (one Postfix map `state/relay`,
host `mail`); `site_with_maps` takes the [[map]] tables as text (maps under
`maps/`, host `vm`). `run` calls the CLI in-process, `run_process` runs
`python -m exactcron` as cron would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import Result

from exactcron.cli import main
from tests.support.clock import NOW
from tests.support.runner import invoke


@dataclass
class Site:
    root: Path
    config: Path
    log: Path
    state: Path
    map: Path

    @property
    def map_dir(self) -> Path:
        return self.root / "maps"

    def write_log(self, *lines: str) -> None:
        """Append each line and its newline."""
        with self.log.open("a", encoding="utf-8") as stream:
            for line in lines:
                stream.write(line + "\n")

    def append_log(self, *lines: str) -> None:
        """Append the lines as they are (each ends in its own newline)."""
        with self.log.open("a") as stream:
            stream.writelines(lines)

    def run(self, *args: str, now: str | None = NOW) -> Result:
        """Run the CLI in-process, as an administrator would type it."""
        options = ["--config", str(self.config)]
        if now is not None:
            options += ["--now", now]
        return invoke(main, [*options, *args], catch_exceptions=False)

    def run_process(
        self, *arguments: str, now: str = NOW, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python -m exactcron` in a process of its own, as cron runs it."""
        command = [sys.executable, "-m", "exactcron", "--config", str(self.config), "--now", now, *arguments]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            timeout=60,
            check=False,
        )

    def map_files(self) -> dict[str, tuple[int, int, bytes]]:
        """Every file in the map directory: inode, mtime in ns, content."""
        return {
            path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(self.map_dir.iterdir())
        }


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


def site_with_map(
    root: Path, map_type: str = "hash", extra: str = "", timezone: str = "UTC", timeout: str = "30m"
) -> Site:
    """A Dovecot log (host `mail`, in `timezone`) read into one Postfix map `state/relay` of `map_type`."""
    state = root / "state"
    log = root / "mail.log"
    log.touch()
    relay = state / "relay"
    config = write_config(
        root,
        f"""\
state_dir = "{state}"
timeout = "{timeout}"
{extra}
[[source]]
path = "{log}"
server = "dovecot"
timezone = "{timezone}"
hosts = ["mail"]

[[map]]
mta = "postfix"
path = "{relay}"
type = "{map_type}"
""",
    )
    return Site(root, config, log, state, relay)


def site_with_maps(root: Path, *maps: str) -> Site:
    """A Dovecot log (host `vm`, UTC) read into the given [[map]] tables; `maps/` made for them."""
    site = Site(root, root / "exactcron.toml", root / "mail.log", root / "state", root / "maps" / "relay")
    site.map_dir.mkdir(exist_ok=True)
    site.log.touch()
    tables = "\n".join(f"[[map]]\n{table}\n" for table in maps)
    site.config.write_text(
        f'state_dir = "{site.state}"\n'
        'timeout = "30m"\n'
        f'[[source]]\npath = "{site.log}"\nserver = "dovecot"\ntimezone = "UTC"\nhosts = ["vm"]\n{tables}'
    )
    site.config.chmod(0o644)
    return site


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result
