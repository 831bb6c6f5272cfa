"""What a whole-run test looks at: real logins written to the log, and what
the map (through the real `postmap`), `show` and `status` say after a run."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from tests.conftest import Site, require_tool


def real_login(address: str, stamp: datetime, user: str = "alice") -> str:
    """A Dovecot login as Debian's rsyslog writes it, from the source's host `mail`."""
    return (
        f"{stamp.isoformat(timespec='microseconds')} mail dovecot: imap-login: Login: user=<{user}>, "
        f"method=PLAIN, rip={address}, lip=10.77.0.1, mpid=10899, TLS, session=<Mr1iP0TtYMEKTQAC>"
    )


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def postmap_keys(map_path: Path) -> set[str]:
    """Every address the postfix hash map answers OK for (`postmap -s` dumps them all)."""
    dumped = subprocess.run(
        [require_tool("postmap"), "-s", f"hash:{map_path}"], capture_output=True, text=True, check=True
    )
    return {line.split()[0] for line in dumped.stdout.splitlines() if line.split()[1:] == ["OK"]}


def postmap_says_ok(map_path: Path, address: str) -> bool:
    found = subprocess.run(
        [require_tool("postmap"), "-q", address, f"hash:{map_path}"], capture_output=True, text=True
    )
    return found.stdout.strip() == "OK"


def shown(site: Site, now: str) -> set[str]:
    result = site.run("show", "--json", now=now)
    assert result.exit_code == 0, result.output
    return {lease["ip"] for lease in json.loads(result.stdout)["leases"]}


def status_json(site: Site, now: str) -> dict[str, object]:
    result = site.run("status", "--json", now=now)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def unreadable_lines(site: Site, now: str) -> int:
    (source,) = status_json(site, now)["sources"]  # type: ignore[misc]
    return source["unreadable_lines"]  # type: ignore[no-any-return]


def append_bytes(site: Site, lines: list[bytes]) -> None:
    with site.log.open("ab") as stream:
        for line in lines:
            stream.write(line + b"\n")
