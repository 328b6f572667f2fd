"""The package's imports run one way: no module imports, directly or not, one that imports it
back, and the folders are layers that import only downwards: errors <- data <- the core (the
modules at the top of the package) <- study <- report <- cli."""

import ast
from pathlib import Path

import oneshot

PACKAGE = Path(oneshot.__file__).parent
LAYERS = {"errors": 0, "data": 1, "study": 3, "report": 4, "cli": 5}  # any other top-level module: the core, 2
# The one import that runs upwards: the benchmark writes its study's report when its runs are done.
UPWARD = {("study.benchmark", "report.write")}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name below `oneshot` ("data.omniglot", "train")."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")
            if p.name != "__init__.py"}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that module `name` imports (at the top or inside functions)."""
    here = name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = here[:len(here) - node.level + 1] if node.level > 1 else here
            base = base + (node.module.split(".") if node.module else [])
        elif node.module and node.module.startswith("oneshot"):
            base = node.module.split(".")[1:]
        else:
            continue
        for candidate in [".".join(base + [a.name]) for a in node.names] + [".".join(base)]:
            if candidate in known:
                out.add(candidate)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _layer(module: str) -> int:
    return LAYERS.get(module.split(".")[0], 2)


def test_the_import_walk_sees_every_kind_of_import():
    graph = _graph()
    assert {"data.split", "data.cache", "errors"} <= graph["data.omniglot"]  # from .x and from ..x
    assert "study.records" in graph["report.frames"]  # from ..study import records
    assert "report.write" in graph["study.benchmark"]  # inside a function


def test_no_import_cycles():
    graph = _graph()

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_layers_import_only_downwards_but_for_one_named_import():
    upward = {(m, t) for m, ts in _graph().items() for t in ts if _layer(t) > _layer(m)}
    assert upward == UPWARD, f"imports that run upwards: {sorted(upward - UPWARD)}"
