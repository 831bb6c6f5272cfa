"""Named crash points, so that tests can kill a run at every step of a write.

`EXACTCRON_KILL_AT=POINT` (or `POINT#N` for its Nth passage) makes the
process SIGKILL itself when it reaches POINT: the same death as the OOM
killer or a power cut, at a place the test chose. Unset, a point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "EXACTCRON_KILL_AT"
_passages: dict[str, int] = {}


def point(name: str) -> None:
    target = os.environ.get(KILL_AT)
    if not target:
        return
    wanted, _, count = target.partition("#")
    if wanted != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if _passages[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
