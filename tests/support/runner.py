"""click's test runner, alike on click 8.1 (Debian 12 and 13 ship it) and on 8.2 or later.

From 8.2 a result always has `stdout` and `stderr` apart and `output` holds
both. 8.1 mixes stderr into stdout unless told not to, and then its `output`
is stdout alone; here it holds both, stdout first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click
from click.testing import CliRunner, Result


class _BothStreams(Result):
    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def invoke(
    command: click.Command,
    arguments: Sequence[str],
    env: Mapping[str, str | None] | None = None,
    **options: Any,
) -> Result:
    """`CliRunner().invoke(command, arguments, ...)` with stdout and stderr apart on every click."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        return CliRunner().invoke(command, list(arguments), env=env, **options)
    result = runner.invoke(command, list(arguments), env=env, **options)
    result.__class__ = _BothStreams
    return result
