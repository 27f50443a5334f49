"""Layering of the package: subpackages in layer order, no import cycles, small modules and functions,
no torch in core.

The layers, bottom to top, are LAYERS. A module imports only from its own layer and the layers below
it, and so do imports inside functions (lazy imports, which defer torch until a command needs it):
a lazy import may not go upward either, so every layer can be read, tested and reused without the
layers above it. Only `cli` may import everything, being the top. Modules at the top level of the
package: `__init__.py` (the version) and nothing else besides the subpackages.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "polyalign"
LAYERS = ("core", "engine", "evaluation", "alignment", "analysis", "study", "reports", "cli")
TOP_LEVEL_FILES = {"__init__.py", "__main__.py"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # a longer function is split recipe-style (see polyalign.alignment.training.train)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """The polyalign module an import names (a package's name resolves to its __init__)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(path: Path, lazy: bool) -> set[str]:
    """polyalign modules that `path` imports: at module level (TYPE_CHECKING blocks included) and,
    with `lazy`, also inside functions."""
    found: set[str] = set()
    pending: list[ast.AST] = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "polyalign":
            assert node.level == 0, f"{path}: relative import"
            found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "polyalign"}
        pending.extend(ast.iter_child_nodes(node))
    return found


def layer_of(module: str) -> int:
    """The index in LAYERS; -1 for the package itself (`from polyalign import __version__`), and above
    every layer for `polyalign.__main__` (`python -m polyalign`, which runs the cli)."""
    parts = module.split(".")
    if len(parts) == 1:
        return -1
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else len(LAYERS)


def upward_imports(lazy: bool) -> list[str]:
    wrong = []
    for name, path in MODULES.items():
        for other in sorted(imports_of(path, lazy)):
            if layer_of(other) > layer_of(name):
                wrong.append(f"{name} imports {other} ({other.split('.')[1]} is above {name.split('.')[1]})")
    return wrong


def test_top_level_holds_only_the_layers():
    entries = {p.name for p in PACKAGE.iterdir() if p.name != "__pycache__"}
    assert entries - TOP_LEVEL_FILES == set(LAYERS), sorted(entries - TOP_LEVEL_FILES ^ set(LAYERS))
    assert all((PACKAGE / layer / "__init__.py").is_file() for layer in LAYERS)


def test_modules_import_only_their_layer_and_below():
    assert not upward_imports(lazy=False)


def test_lazy_imports_do_not_go_upward_either():
    assert not upward_imports(lazy=True)


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checks above do fire: a core module with a lazy import of the study layer is reported."""
    before = {False: upward_imports(lazy=False), True: upward_imports(lazy=True)}
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from polyalign.study.store import Store\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "polyalign.core.bad", bad)
    assert upward_imports(lazy=False) == before[False]
    new = [line for line in upward_imports(lazy=True) if line not in before[True]]
    assert new == ["polyalign.core.bad imports polyalign.study.store (study is above core)"]


def private_imports() -> list[str]:
    """`from polyalign.x import _name` anywhere in the package: a private name is no API."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "polyalign":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                found += [f"{name} imports {node.module}.{p}" for p in private]
    return found


def test_no_module_imports_a_private_name():
    assert not private_imports()


def test_the_check_sees_a_private_import(tmp_path, monkeypatch):
    bad = tmp_path / "bad.py"
    bad.write_text("from polyalign.core.files import _hidden\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "polyalign.core.bad", bad)
    assert private_imports() == ["polyalign.core.bad imports polyalign.core.files._hidden"]


# Known lazy import edges that close a cycle, each to be removed when its cycle is fixed. An entry is
# (importer, imported) and the import must sit inside a function of the importer.
KNOWN_LAZY_CYCLE_EDGES: set[tuple[str, str]] = set()  # (importer, imported) lazy edges allowed in a cycle: none


def import_cycle() -> list[str] | None:
    """The first import cycle (module names, the first repeated at the end) through module-level and
    lazy (function-level) imports alike, leaving out KNOWN_LAZY_CYCLE_EDGES; None when there is none.
    A lazy import defers the cost, not the dependency: the two modules still need each other."""
    graph = {name: imports_of(path, lazy=True) & set(MODULES) - {name} for name, path in MODULES.items()}
    for importer, imported in KNOWN_LAZY_CYCLE_EDGES:
        assert imported not in imports_of(MODULES[importer], lazy=False), f"{importer}: no longer lazy"
        graph[importer].discard(imported)
    state: dict[str, str] = {}  # grey: on the current path, black: finished

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = "grey"
        for other in sorted(graph[name]):
            if state.get(other) == "grey":
                return path[path.index(other) :] + [other]
            if other not in state:
                found = visit(other, path + [other])
                if found:
                    return found
        state[name] = "black"
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = import_cycle()
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_check_sees_a_cycle_through_a_lazy_import(tmp_path, monkeypatch):
    """A core module importing another at module level, which imports it back inside a function."""
    first, second = tmp_path / "first.py", tmp_path / "second.py"
    first.write_text("from polyalign.core.second import g\n", encoding="utf-8")
    second.write_text("def g():\n    from polyalign.core.first import f\n", encoding="utf-8")
    monkeypatch.setitem(MODULES, "polyalign.core.first", first)
    monkeypatch.setitem(MODULES, "polyalign.core.second", second)
    assert import_cycle() == ["polyalign.core.first", "polyalign.core.second", "polyalign.core.first"]


CORE_IMPORTS = """
import importlib, sys
for name in {names!r}:
    importlib.import_module(name)
print("torch" in sys.modules)
"""


def test_core_imports_no_torch():
    """Every layer imports core: importing all of it must not load torch (seconds on every command)."""
    names = sorted(n for n in MODULES if n.startswith("polyalign.core"))
    out = subprocess.run(
        [sys.executable, "-c", CORE_IMPORTS.format(names=names)], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split()[-1] == "False", out.stdout[-500:] + out.stderr[-2000:]


def test_modules_and_functions_are_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(PACKAGE).as_posix()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}: {node.name}() {length} lines")
    assert not too_long, too_long


TORCH_FREE = """
import sys
from polyalign.cli import main
try:
    code = main({argv!r})
except SystemExit as exit:
    code = exit.code
print(code, "torch" in sys.modules)
"""


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--help"], ["run", "examples/emotion_study", "--dry-run"]], ids=["help", "dry-run"])
def test_declarations_import_no_torch(argv, data_dir):
    """`polyalign --help` and a dry run only read declarations: no torch (seconds saved on every call)."""
    argv = [*argv, "--data-dir", str(data_dir)] if "--dry-run" in argv else argv
    out = subprocess.run(
        [sys.executable, "-c", TORCH_FREE.format(argv=argv)], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split()[-2:] == ["0", "False"], out.stdout[-500:] + out.stderr[-2000:]
