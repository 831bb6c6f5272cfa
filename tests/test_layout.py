"""The package's shape: imports point down the layers only, there is no import
cycle, no module grows past about 400 lines without saying why, and the
folders' `__init__.py` files stay empty (so a cron run imports only what it
uses).

The layers, lowest first (a module may import its own layer or lower ones):

    ground floor  errors addresses timestamps atomic faults lock deadline users logs records
    model         the values every layer passes: Login, Lease, Snapshot
    sources/ rules/   where lines come from; a line -> a Login or nothing
    config        TOML -> frozen dataclasses (it names the rules); statedir, a broken one's state_dir
    leases        the lease table; sessions, the leases held while connected
    stores/       where leases and local state live
    outputs/      maps, metrics, the audit trail, the run record; postconf
    commands/ tools/  one module per command's sequence
    cli           parse, call one command, print

Every import counts: at module level, inside a function (the lazy imports
that keep a quiet run small) and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exactcron"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "ground floor",
        (
            "exactcron.errors",
            "exactcron.addresses",
            "exactcron.timestamps",
            "exactcron.atomic",
            "exactcron.faults",
            "exactcron.lock",
            "exactcron.deadline",
            "exactcron.users",
            "exactcron.logs",
            "exactcron.records",
        ),
    ),
    ("model", ("exactcron.model",)),
    ("sources and rules", ("exactcron.sources.", "exactcron.rules.")),
    ("config", ("exactcron.config", "exactcron.statedir")),
    ("leases", ("exactcron.guard", "exactcron.leases", "exactcron.sessions")),
    ("stores", ("exactcron.stores.",)),
    ("outputs", ("exactcron.outputs.",)),
    ("commands and tools", ("exactcron.commands.", "exactcron.tools.")),
    ("cli", ("exactcron.cli", "exactcron.console", "exactcron.entry", "exactcron.__main__")),
]

MAX_LINES = 400
# The sentence a longer module's docstring must hold, followed by its reason.
SIZE_REASON = "Over 400 lines:"


def module_files(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module -> the package's modules it imports, wherever the import statement is."""
    files = module_files(package)
    top = package.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    targets.add(submodule if submodule in files else module)
        graph[name] = {
            target
            for target in targets
            if target in files and target != name and files[target].name != "__init__.py" and target != top
        }
    return graph


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".") and module.startswith(member)):
                return index
    return None


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Every import that points up the layers, or from or to a module no layer holds."""
    wrong = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is None or high is None:
                wrong.append(f"{module} -> {target}: {module if low is None else target} is in no layer")
            elif high > low:
                wrong.append(f"{module} ({LAYERS[low][0]}) -> {target} ({LAYERS[high][0]})")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_import_points_down_the_layers() -> None:
    assert upward_arrows(import_graph(PACKAGE)) == []


def test_there_is_no_import_cycle() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_no_module_is_long_without_saying_why() -> None:
    long_and_silent = []
    for name, path in module_files(PACKAGE).items():
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and SIZE_REASON not in docstring:
            long_and_silent.append(f"{name}: {lines} lines")
    assert long_and_silent == []


def test_the_folders_init_files_are_empty() -> None:
    for path in PACKAGE.rglob("__init__.py"):
        if path.parent == PACKAGE:
            # The package's own: its docstring and __version__, which packaging reads; no import.
            tree = ast.parse(path.read_text())
            assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
        else:
            assert path.read_text() == "", path


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "exactcron"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [package, *(path for path in package.rglob("*") if path.is_dir())]:
        (folder / "__init__.py").touch()
    return package


@pytest.mark.parametrize(
    "statement",
    [
        "from exactcron.commands.update import run_update\n",
        "from exactcron.commands import update\n",
        "import exactcron.commands.update\n",
        "def later():\n    from exactcron.commands.update import run_update\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from exactcron.commands.update import X\n",
        "from ..commands.update import run_update\n",
    ],
    ids=["from", "from-package", "import", "in-a-function", "type-checking", "relative"],
)
def test_an_upward_arrow_is_found_however_it_is_written(tmp_path: Path, statement: str) -> None:
    package = _package(tmp_path, {"stores/file.py": statement, "commands/update.py": ""})
    assert upward_arrows(import_graph(package)) == [
        "exactcron.stores.file (stores) -> exactcron.commands.update (commands and tools)"
    ]


def test_a_cycle_is_found(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "stores/base.py": "def open_store():\n    from exactcron.stores.file import FileStore\n",
            "stores/file.py": "from exactcron.stores.base import Snapshot\n",
        },
    )
    assert upward_arrows(import_graph(package)) == []
    assert cycles(import_graph(package)) == [["exactcron.stores.base", "exactcron.stores.file"]]


def test_a_module_in_no_layer_is_named(tmp_path: Path) -> None:
    package = _package(
        tmp_path, {"helpers.py": "from exactcron.errors import ConfigError\n", "errors.py": ""}
    )
    assert upward_arrows(import_graph(package)) == [
        "exactcron.helpers -> exactcron.errors: exactcron.helpers is in no layer"
    ]


# What only sources/ knows: which kind of source it has (sources/open.py
# decides), and how each kind reads. config.py names the settings.
SOURCE_KINDS = {"journal", "journal_directory"}
SOURCE_INTERNALS = ("exactcron.sources.journal", "exactcron.sources.logfile", "exactcron.sources.file")


def kind_questions(package: Path) -> list[str]:
    """Every place outside sources/ and config.py that asks which kind a source is."""
    found = []
    graph = import_graph(package)
    for name, path in module_files(package).items():
        if name.startswith(f"{package.name}.sources") or name == f"{package.name}.config":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in SOURCE_KINDS:
                found.append(f"{name}:{node.lineno}: .{node.attr}")
        found += [f"{name}: imports {target}" for target in sorted(graph[name]) if target in SOURCE_INTERNALS]
    return found


def test_only_the_sources_know_a_journal_from_a_log_file() -> None:
    assert kind_questions(PACKAGE) == []


# Where `logging` may be imported: a quiet run loads none of these, and
# everything else logs through exactcron.logs, which loads logging at the
# first message and keeps the console's format.
LOGGING_IMPORTERS = {"exactcron.logs", "exactcron.console", "exactcron.cli", "exactcron.outputs.audit"}


def modules_importing_logging(package: Path) -> set[str]:
    found = set()
    for name, path in module_files(package).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or ""]
            else:
                continue
            if any(module.split(".")[0] == "logging" for module in imported):
                found.add(name)
    return found


def test_every_module_logs_through_the_lazy_logger() -> None:
    assert modules_importing_logging(PACKAGE) <= LOGGING_IMPORTERS


def test_a_module_importing_logging_is_found(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {"a.py": "def f():\n    from logging import getLogger\n", "b.py": "import logging.handlers\n"},
    )
    assert modules_importing_logging(package) == {"exactcron.a", "exactcron.b"}
