"""The `exactcron` logger, without importing `logging` until a message is logged.

Importing `logging` costs a quiet `update` (cron's every minute, which
usually says nothing) about a tenth of its CPU. So the modules log through
`log`, which stands for `logging.getLogger("exactcron")` and imports it at
its first use; the console's set-up (handlers, levels) waits in `when_used`
until then. While `keeping()`, messages are kept instead of said: the quiet
try says them only once it knows the run is quiet.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

# Set-ups waiting for `logging` (console.py's handlers), run in order at the first use.
_pending: list[Callable[[], None]] = []
# While keeping: each message as (logger name, method, arguments, keyword arguments).
_kept: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] | None = None
_MESSAGES = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def logger(name: str = "exactcron") -> logging.Logger:
    """The logger itself, `logging` imported and the console's set-up done."""
    import logging

    # Each set-up runs once, in order (a set-up works on logging itself, not through here).
    while _pending:
        _pending.pop(0)()
    return logging.getLogger(name)


def when_used(setup: Callable[[], None]) -> None:
    """Run `setup` now if `logging` is loaded already, else before the first message."""
    if "logging" in sys.modules:
        logger()  # what waits runs first, in order
        setup()
    else:
        _pending.append(setup)


def used() -> bool:
    """Whether `logging` is loaded (a message was logged, or something else imported it)."""
    return "logging" in sys.modules


class _Logger:
    """Stands for `logging.getLogger(name)`: every attribute is the logger's."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if _kept is not None and attribute in _MESSAGES:
            kept = _kept
            return lambda *args, **kwargs: kept.append((self._name, attribute, args, kwargs))
        return getattr(logger(self._name), attribute)


log: logging.Logger = _Logger("exactcron")  # type: ignore[assignment]


@contextmanager
def keeping() -> Iterator[Callable[[], None]]:
    """Keep the messages logged through `log` meanwhile; the function it gives says them."""
    global _kept
    kept: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]] = []
    outer, _kept = _kept, kept
    try:
        yield lambda: say(kept)
    finally:
        _kept = outer


def say(kept: list[tuple[str, str, tuple[Any, ...], dict[str, Any]]]) -> None:
    for name, method, args, kwargs in kept:
        getattr(logger(name), method)(*args, **kwargs)
