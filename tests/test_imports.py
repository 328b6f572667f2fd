"""The package's imports run one way: no module imports, directly or not, one that imports it back."""

import ast
from pathlib import Path

import oneshot

PACKAGE = Path(oneshot.__file__).parent


def _imports(path: Path) -> set[str]:
    """The oneshot modules a file imports (at the top or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.module and node.module.startswith("oneshot."):
                names = [node.module[len("oneshot."):]]
            else:
                continue
            out |= {n.split(".")[0] for n in names}
    return out


def test_no_import_cycles():
    graph = {p.stem: _imports(p) & {q.stem for q in PACKAGE.glob("*.py")} for p in PACKAGE.glob("*.py")}
    assert graph["omniglot"] and "split" in graph["omniglot"]  # the walk sees imports at all

    def reaches(start, goal, seen):
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, {m}))
    assert cycles == [], f"modules on an import cycle: {cycles}"
