"""The demo package's shape: no import circles between its modules, and only shared core at its root.

Read from the source with `ast` (nothing is imported), so that an import inside a function, which runs
only when it is called, counts as much as one at the top of a module.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "demo"

# The modules at the package root: what every part of the library shares. Anything else belongs in a
# subpackage (a command, a measurement, an app part), so that a new root module fails here.
ROOT_MODULES = {"__init__.py", "registry.py", "timing.py"}


def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under `package` (a package is named by its __init__)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported(node: ast.AST, name: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules that one import statement in module `name` loads (what it names, not the parents)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        here = name.split(".") if is_package else name.split(".")[:-1]
        base_parts = here[:len(here) - (node.level - 1)] if node.level > 1 else here
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        if sub in modules:  # `from . import name` where name is a submodule
            found.add(sub)
        elif base in modules:
            found.add(base)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source (top level or inside functions)."""
    files = module_names(package)
    modules = set(files)
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(tree):
            edges |= _imported(node, name, is_package, modules)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) for every group of modules that import each other, directly or not (Tarjan)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_the_package_has_no_import_circle():
    graph = import_graph(PACKAGE)
    # The reader sees the imports it must (so that an empty graph cannot pass for a clean one).
    assert "demo.bench.load.harness" in graph["demo.bench.load.mixed"]
    assert "demo.registry" in graph["demo.attacks.pgd"]
    found = cycles(graph)
    assert not found, "import circles in the demo package:\n" + "\n".join(" -> ".join(c) for c in found)


def test_only_shared_core_modules_at_the_package_root():
    at_root = {p.name for p in PACKAGE.glob("*.py")}
    assert at_root == ROOT_MODULES, (
        f"modules at demo/ besides the shared core: {sorted(at_root - ROOT_MODULES)} (put them in a subpackage); "
        f"missing: {sorted(ROOT_MODULES - at_root)}")


def test_the_reader_finds_a_circle_through_relative_imports_inside_functions(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (pkg / "c.py").write_text("def g():\n    from .sub.b import f\n    from pkg import a\n")
    (pkg / "d.py").write_text("from . import a, sub\nfrom .sub import __doc__\n")
    graph = import_graph(pkg)
    assert graph["pkg.d"] == {"pkg.a", "pkg.sub"}  # a name that is no submodule counts as its package
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]


# The layers of the package, lowest first: a module may import its own layer and the ones below, never
# one above (the models know nothing of evaluations, the library nothing of its commands and its page).
# `eval` holds both the running side and its publishing (`eval.publish`, which the running commands use to
# write their reports), so the two share a layer.
LAYERS = (
    ("registry", "timing", "world"),
    ("models",),
    ("attacks",),
    ("defenses",),
    ("pipeline", "viz"),
    ("eval",),
    ("sweep", "bench", "train"),
    ("ui",),
)


def layer_of(module: str) -> int:
    """The layer of a dotted module name; the package's root modules are shared core (the lowest)."""
    parts = module.split(".")
    if len(parts) < 2 or f"{parts[1]}.py" in ROOT_MODULES or parts[1] == "__init__":
        return 0
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    layered = {name for names in LAYERS for name in names}
    assert subpackages <= layered, f"give each new subpackage a layer: {sorted(subpackages - layered)}"
    assert layered <= subpackages | {m.removesuffix(".py") for m in ROOT_MODULES}, "a layer names a missing part"


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph(PACKAGE)
    assert "demo.pipeline" in graph["demo.ui.handlers"]  # a real edge down the layers is read (and allowed)
    found = upward_imports(graph)
    assert not found, "imports of a higher layer:\n" + "\n".join(found)


def test_the_layer_check_catches_a_model_importing_an_evaluation():
    graph = {"demo.models.zoo": {"demo.eval.run", "demo.registry"}, "demo.eval.run": {"demo.models.zoo"},
             "demo.eval.publish.tables": {"demo.eval.run"}, "demo.sweep.merge": {"demo.eval.publish.tables"}}
    assert upward_imports(graph) == ["demo.models.zoo -> demo.eval.run"]
    assert layer_of("demo.sweep.merge") > layer_of("demo.eval.publish.tables") == layer_of("demo.eval.run") \
        > layer_of("demo.models.zoo") > layer_of("demo.registry")
