"""The package's import graph has no circle: every import of one saol_core module by another, at the top
of a file or inside a function (a function-local import that only hides a circle counts), except those
under ``if TYPE_CHECKING:``."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "saol_core"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """saol_core modules ``path`` imports (a package import counts as its __init__)."""
    tree = ast.parse(path.read_text())
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            target = ".".join([*base, *(node.module or "").split(".")]).strip(".") if node.level else node.module
            for alias in node.names:   # "from . import viz" imports a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m and m.split(".")[0] == "saol_core"}


def test_no_module_of_the_package_imports_itself_back():
    graph = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    # importing saol_core.a.b runs saol_core/a/__init__.py first: an edge to a submodule is one to its package
    # too (the root package's own __init__, and a module's own packages, aside)
    edges = {}
    for m, deps in graph.items():
        targets = set()
        for d in deps:
            parts = d.split(".")
            targets |= {".".join(parts[:k]) for k in range(2, len(parts) + 1)}
        edges[m] = {d for d in targets if d in graph and d != m and not m.startswith(d + ".")}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(edges[node]):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
