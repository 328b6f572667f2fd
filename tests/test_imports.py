"""The package's imports run one way: no module imports, directly or not, one that imports it
back, and the folders are layers that import only downwards: errors <- data <- the core (the
modules at the top of the package) <- study <- report <- cli. Each list of names a user may
choose from (distances, classifiers, feature transforms, precisions, augmentations, the built-in
losses' settings) is written in the one module that implements them, and imported elsewhere."""

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


def _string_collections(path: Path):
    """(line, strings) of every tuple, list or set literal of strings in a module, and of the
    string keys of every dict literal."""
    for node in ast.walk(ast.parse(path.read_text())):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(
            node, (ast.Tuple, ast.List, ast.Set)) else []
        strings = {x.value for x in items if isinstance(x, ast.Constant) and isinstance(x.value, str)}
        if strings:
            yield node.lineno, strings


def test_every_list_of_names_is_written_in_one_module():
    from oneshot import augment, distances, evaluate, features, lossparams, precision

    homes = {"distances": [distances.METRICS], "evaluate": [evaluate.CLASSIFIERS],
             "features": [features.TRANSFORMS], "precision": [precision.PRECISIONS], "augment": [augment.KINDS],
             "lossparams": [lossparams.LOSS_CHOICES[k] for k in ("mining", "pos_weight", "head")]}
    again = [f"{name}:{line} repeats {home}'s {sorted(names)}"
             for name, path in _modules().items() for line, strings in _string_collections(path)
             for home, lists in homes.items() if name != home
             for names in lists if len(set(names) & strings) >= 2]
    assert again == []


def _bound(body: list) -> set[str]:
    """The names a module's top level binds other than by importing (inside if/try/with too)."""
    names = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {x.id for t in targets for x in ast.walk(t) if isinstance(x, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            names |= _bound(node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                            + [n for h in getattr(node, "handlers", []) for n in h.body])
    return names


def test_every_name_is_imported_from_the_module_that_defines_it():
    """No re-exports: in the package, its tests and experiments/, `from oneshot.x import n` names
    a module or something x itself defines."""
    root = PACKAGE.parent
    paths = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    files = [*PACKAGE.rglob("*.py"), *(root / "tests").glob("*.py"), *(root / "experiments").rglob("*.py")]
    assert len(files) > len(paths), "tests/ and experiments/ are not beside the package"
    wrong = []
    for path in files:
        here = ".".join(path.relative_to(root).with_suffix("").parts)
        package = here.removesuffix(".__init__") if path.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                source = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + (
                    [node.module] if node.module else []))
            else:
                source = node.module or ""
            if source not in paths:
                continue
            defined = _bound(ast.parse(paths[source].read_text()).body)
            wrong += [f"{path.relative_to(root)}:{node.lineno} imports {a.name} from {source}"
                      for a in node.names if a.name not in defined and f"{source}.{a.name}" not in paths]
    assert wrong == []


def test_no_module_outgrows_300_lines_and_the_loop_stays_short():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > 300}
    assert long == {}, "split these along their seams"
    loop = next(node for node in ast.parse((PACKAGE / "train.py").read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "train")
    assert loop.end_lineno - loop.lineno + 1 < 80
