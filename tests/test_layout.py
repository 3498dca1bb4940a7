"""The layout the architecture promises: the library never imports the jobs, no package-internal import circle
(function-local imports included), the library never reaches into data/ scripts, and modules stay small."""

from __future__ import annotations

import ast
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "albert_jax"
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`: its body runs only in the copy of the module started as a script."""
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__" and any(isinstance(c, ast.Constant) and c.value == "__main__"
                                                    for c in test.comparators))


def _nodes(tree: ast.AST):
    """Every node of `tree` except those under a `__main__` guard."""
    for child in ast.iter_child_nodes(tree):
        if _is_main_guard(child):
            continue
        yield child
        yield from _nodes(child)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every albert_jax module `path` imports, at module level or inside functions. Imports under an
    `if __name__ == "__main__":` guard are not edges: a job's guard hands `python -m albert_jax.jobs.X` to the
    CLI, which imports the job afresh as albert_jax.jobs.X; the module being imported never runs it."""
    found = set()
    for node in _nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    # a package's __init__ is imported on the way to any of its modules; it imports nothing itself here
    return {name: imports_of(path, set(known)) - {name} for name, path in known.items()}


def test_graph_sees_local_imports():
    """The checker itself: a function-local import counts (the old gin_setup imported every job that way)."""
    source = "def f():\n    from albert_jax.jobs import train\n"
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert node.module == "albert_jax.jobs" and node.names[0].name == "train"
    edges = graph()
    assert "albert_jax.model" in edges["albert_jax.train_step"]
    guarded = ast.parse('if __name__ == "__main__":\n    from albert_jax.jobs import cli\n')
    assert not [n for n in _nodes(guarded) if isinstance(n, ast.ImportFrom)]
    assert [n for n in _nodes(ast.parse(source)) if isinstance(n, ast.ImportFrom)]


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target] if target in stack else [node, target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_library_never_imports_jobs_or_data_scripts():
    offenders = []
    for name, targets in graph().items():
        if name.startswith("albert_jax.jobs") or name == "albert_jax.__main__":
            continue
        offenders += [f"{name} imports {t}" for t in targets if t.startswith("albert_jax.jobs")]
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "from data" in text or "import data." in text or "sys.path.insert" in text:
            offenders.append(f"{path.relative_to(REPO)} reaches outside the package")
    assert not offenders, "\n".join(offenders)


def test_modules_stay_small():
    long = {str(path.relative_to(REPO)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_every_package_directory_is_a_package():
    for directory, _, files in os.walk(PACKAGE):
        if "__pycache__" in directory or not any(f.endswith(".py") for f in files):
            continue
        assert "__init__.py" in files, f"{directory} has modules but no __init__.py"
