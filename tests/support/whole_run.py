"""What a whole-run test looks at: what
the map (through the real `postmap`), `show` and `status` say after a run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.support.maps import postmap_query
from tests.support.site import Site


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def postmap_says_ok(map_path: Path, address: str) -> bool:
    return postmap_query(map_path, address).stdout.strip() == "OK"


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
