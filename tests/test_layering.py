"""The arrows of docs/design.md, read from the source (every import, at any depth of the file):

- `results` imports neither torch nor any training package (it reads files only); of `distill` it
  imports the registry of experiment kinds only (`distill.kinds`, torch-free, and
  `distill.errors`, which the registry raises), and `import results` loads no torch;
- `distill` (the core) imports none of bornagain, ensembles, tuning, results, except its
  command-line module `distill/cli.py`, which dispatches to every package;
- `bornagain` and `ensembles` import `distill` only (not each other, not tuning, not results,
  and never a command module: distill.cli);
- no import cycle between the modules of `distill`, nor between those of `results`;
- no module of `distill` or `results` is over 400 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("distill", "bornagain", "ensembles", "tuning", "results")


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    package = path.relative_to(ROOT).with_suffix("").parts
    package = package[:-1] if package[-1] != "__init__" else package[:-1]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # imports for annotations only (if TYPE_CHECKING:) do not run
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
                found.add(name)
                found.update(f"{name}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(package: str) -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / package).rglob("*.py")}


def top(name: str) -> str:
    return name.split(".")[0]


def imported_modules(path: Path) -> set[str]:
    """The module each import statement of `path` loads (`from a import b` -> a.b: b may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


RESULTS_MAY_IMPORT = ("distill.kinds", "distill.errors")  # torch-free: the registry a report reads kinds from


def test_results_reads_files_only():
    for name, path in modules("results").items():
        bad = {n for n in imported_modules(path) if top(n) in ("torch", "torchvision", "distill", "bornagain",
                                                               "ensembles", "tuning", "ray")}
        bad = {n for n in bad if not any(n == ok or n.startswith(ok + ".") for ok in RESULTS_MAY_IMPORT)}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_importing_results_loads_no_torch():
    code = "import results, sys; assert 'torch' not in sys.modules, 'import results loaded torch'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_core_imports_no_experiment_package_except_its_command_module():
    for name, path in modules("distill").items():
        if name == "distill.cli":
            continue
        bad = {n for n in imports_of(path) if top(n) in ("bornagain", "ensembles", "tuning", "results")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_experiment_packages_import_the_core_only():
    for package in ("bornagain", "ensembles"):
        for name, path in modules(package).items():
            names = imports_of(path)
            bad = {n for n in names if top(n) in PACKAGES and top(n) not in ("distill", package)}
            bad |= {n for n in names if n.startswith("distill.cli")}
            assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["distill", "results"])
def test_no_import_cycle_inside_a_package(package):
    own = modules(package)  # lazy imports inside functions count: they only hide a cycle
    graph = {name: {n for n in imports_of(path) if n in own and n != name} for name, path in own.items()}

    def visit(node, trail):
        if node in trail:
            cycle = trail[trail.index(node):] + [node]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("package", ["distill", "results"])
def test_files_are_small_enough_to_read_in_one_sitting(package):
    long = {name: len(path.read_text().splitlines()) for name, path in modules(package).items()}
    assert {n: c for n, c in long.items() if c > 400} == {}
