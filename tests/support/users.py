"""exactcron run as another user: a folder every user can read, the package copied into it."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import click
import filelock

REPOSITORY = Path(__file__).resolve().parent.parent.parent
# The Debian interpreter: the test's own may live where `nobody` cannot read.
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = (REPOSITORY / "exactcron", Path(click.__file__).parent, Path(filelock.__file__).parent)


@contextmanager
def shared_root(prefix: str, packages: Sequence[Path] = PACKAGES) -> Iterator[Path]:
    """A temporary folder any user may read, with `packages` under lib/ for PYTHONPATH; removed after."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        root.chmod(0o755)
        for package in packages:
            shutil.copytree(
                package, root / "lib" / package.name, ignore=shutil.ignore_patterns("__pycache__")
            )
        yield root
    finally:
        shutil.rmtree(root)


def state_dir_of_nobody(root: Path) -> Path:
    """`root/state`, mode 0755, owned by nobody: the state directory of a run as nobody."""
    state = root / "state"
    state.mkdir(mode=0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    return state
