"""Where the state of a configuration that cannot be loaded lives.

Apart from config.py, which a run that loads its configuration never needs
this: a configuration broken enough not to load still names its state_dir,
where the maps it installed are recorded (and lose their expired leases).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from exactcron.config import DEFAULT_STATE_DIR


def state_dir_of(config_file: Path) -> Path:
    """Where the state of a configuration that cannot be loaded lives: the
    `state_dir` it names, even when it is not TOML any more (a line of its
    own is still looked for); else, a configuration unreadable, missing or
    naming no usable directory, the default state directory."""
    default = Path(DEFAULT_STATE_DIR)
    try:
        text = config_file.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return default
    try:
        value = tomllib.loads(text).get("state_dir", DEFAULT_STATE_DIR)
    except ValueError:
        line = re.search(
            r"""^[ \t]*state_dir[ \t]*=[ \t]*(["'])([^"'\n]+)\1[ \t]*(?:#.*)?$""", text, re.MULTILINE
        )
        value = line.group(2) if line else DEFAULT_STATE_DIR
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        return default
    try:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else (config_file.parent / path).resolve()
        named = path.is_dir()
    except (OSError, RuntimeError, ValueError):
        return default
    return path if named else default
