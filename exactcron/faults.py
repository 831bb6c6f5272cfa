"""Named crash points, so that tests can kill a run at every step of a write.

`EXACTCRON_KILL_AT=POINT` (or `POINT#N` for its Nth passage) makes the
process SIGKILL itself when it reaches POINT: the same death as the OOM
killer or a power cut, at a place the test chose. `EXACTCRON_TRACE_POINTS=FILE`
appends the name of every point reached to FILE, so a test can find them
all. `EXACTCRON_FAIL_AT=POINT` raises RuntimeError there instead: a bug at
that step, which the run must survive failing closed. Unset, a point costs
three dictionary lookups.

`EXACTCRON_DEADLINE_AFTER=N` makes a run's deadline count as passed from
its Nth check on (before each source, after each block of lines): a test
of `run_deadline` that does not depend on the machine's speed.
"""

from __future__ import annotations

import os

KILL_AT = "EXACTCRON_KILL_AT"
FAIL_AT = "EXACTCRON_FAIL_AT"
TRACE = "EXACTCRON_TRACE_POINTS"
DEADLINE_AFTER = "EXACTCRON_DEADLINE_AFTER"
_passages: dict[str, int] = {}
_deadline_checks = 0


def point(name: str) -> None:
    trace = os.environ.get(TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as stream:
            stream.write(name + "\n")
    if os.environ.get(FAIL_AT) == name:
        raise RuntimeError(f"fault injected at {name}")
    target = os.environ.get(KILL_AT)
    if not target:
        return
    wanted, _, count = target.partition("#")
    if wanted != name:
        return
    _passages[name] = _passages.get(name, 0) + 1
    if _passages[name] >= int(count or 1):
        import signal  # only a test's crash point needs it

        os.kill(os.getpid(), signal.SIGKILL)


def deadline_forced() -> bool:
    """Whether a test made the run's deadline pass at this check (EXACTCRON_DEADLINE_AFTER)."""
    after = os.environ.get(DEADLINE_AFTER)
    if not after:
        return False
    global _deadline_checks
    _deadline_checks += 1
    return _deadline_checks >= int(after)
