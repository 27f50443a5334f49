"""Layering of the package: no import cycles, small modules and functions, torch only where needed."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "polyalign"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # a longer function is split recipe-style (see training.train)


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """polyalign modules that `path` imports when it is imported (TYPE_CHECKING blocks included,
    imports inside functions not: those run later, once every module is loaded)."""
    found: set[str] = set()
    pending: list[ast.AST] = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "polyalign":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("polyalign.")}
        pending.extend(ast.iter_child_nodes(node))
    return found & modules - {path.stem}


def test_no_import_cycles():
    files = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    graph = {name: module_imports(path, set(files)) for name, path in files.items()}
    state: dict[str, str] = {}  # grey: on the current path, black: finished

    def visit(name: str, path: list[str]) -> None:
        state[name] = "grey"
        for other in sorted(graph[name]):
            if state.get(other) == "grey":
                cycle = path[path.index(other) :] + [other]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, path + [other])
        state[name] = "black"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_modules_and_functions_are_small():
    too_long = []
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}: {node.name}() {length} lines")
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
