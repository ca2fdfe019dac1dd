"""graph_rewrite's modules import one another without a circle, and the server reaches the
rewrite only through its public API and the recipe.

A circle hides until someone imports its modules in the unlucky order (an ImportError on a
partly initialised module), or is papered over with an import inside a function. The
static check reads every import, those inside functions included (only `if TYPE_CHECKING:`
blocks are left out: they never run), and counts importing `a.b.c` as running `a.b`'s
`__init__` too, as Python does, unless the importer is itself inside `a.b`. The dynamic
check imports each module first, in a fresh interpreter state, as a user might.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "onnxplain.graph_rewrite"
SOURCE = REPO / "graph_rewrite"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _modules(root: Path, package: str) -> dict[str, Path]:
    return {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: not those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for n in node.orelse for i in _runtime_imports(n))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` whose code importing `module` runs, directly."""
    is_package = path.name == "__init__.py"
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = here.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = []
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from pkg import name`: a submodule, or a name that pkg's __init__ defines.
                targets.append(sub if sub in known else base)
        for target in targets:
            if target not in known:
                continue
            found.add(target)
            # Importing a.b.c runs a.b's __init__ first, unless the importer is inside a.b
            # (then a.b is already running: Python imports a package before its modules).
            parts = target.split(".")
            for i in range(1, len(parts)):
                ancestor = ".".join(parts[:i])
                inside = module == ancestor or module.startswith(ancestor + ".")
                if ancestor in known and not inside:
                    found.add(ancestor)
    found.discard(module)
    return found


def _first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph(root: Path = SOURCE, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(root, package)
    known = set(modules)
    return {m: _imported(m, p, known) for m, p in modules.items()}


def test_graph_rewrite_has_no_import_circle() -> None:
    cycle = _first_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_the_check_finds_a_circle(tmp_path: Path) -> None:
    """The checker itself: a package whose registry imports a method that imports the
    façade that imports the registry (the shape this package had) is reported."""
    pkg = tmp_path / "pkg"
    (pkg / "methods").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .facade import build\n")
    (pkg / "facade.py").write_text("from .methods import REGISTRY\n")
    (pkg / "methods" / "__init__.py").write_text("from . import batch\nREGISTRY = {}\n")
    (pkg / "methods" / "base.py").write_text("X = 1\n")
    (pkg / "methods" / "batch.py").write_text(
        "from .base import X\n\ndef build():\n    from ..facade import build\n"
    )
    graph = import_graph(pkg, "pkg")
    assert _first_cycle(graph) == ["pkg.facade", "pkg.methods", "pkg.methods.batch", "pkg.facade"]
    # A submodule importing its sibling is no circle with the package that imports both.
    (pkg / "methods" / "batch.py").write_text("from .base import X\n")
    assert _first_cycle(import_graph(pkg, "pkg")) is None


@pytest.mark.slow
def test_each_module_imports_first() -> None:
    """Every module of the package, imported before any other of its modules, loads."""
    names = sorted(_modules(SOURCE, PACKAGE))
    script = f"""
import importlib, sys
failed = []
for name in {names!r}:
    for loaded in [m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE!r} + ".")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0, done.stdout + done.stderr


# What the server may import of the rewrite: the public API, the recipe and the method
# registry (which describes every method's inputs and outputs: no method module is read).
SERVER_MAY_IMPORT = {PACKAGE, f"{PACKAGE}.recipe", f"{PACKAGE}.methods"}


def test_server_imports_only_the_public_api_and_the_recipe() -> None:
    seen = set()
    for path in sorted((REPO / "server").rglob("*.py")):
        for node in _runtime_imports(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                if name == PACKAGE or name.startswith(PACKAGE + "."):
                    seen.add((str(path.relative_to(REPO / "server")), name))
    internal = {(path, name) for path, name in seen if name not in SERVER_MAY_IMPORT}
    assert internal == set(), f"the server imports rewrite internals: {sorted(internal)}"
