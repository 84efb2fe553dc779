"""Dependencies point one way: a test that walks every import of the package.

Every `import` and `from ... import` in src/tunelab, at module level or inside a function, is an
edge from one part of the package to another; each edge must go DOWN the table below. A part
may import itself and anything it reaches by following DEPENDS_ON downwards, nothing else:

    cli ─┬─> report ──> compare ─┬─> safety ──> evaluate ─┬─> fewshot ─┐
         │                       └─> train ───────────────┼────────────┼─> templates ──> data ──> models ──> base
         └─> serve ───────────────────────────────────────┴─> infer ───┘

infer (the inference engine: loading for inference, the Backend, decoding, scoring) sits beside
train and fewshot: training never imports evaluation, few-shot, inference, safety or compare
(scorers such as toxicity are passed in as parameters by the layer above), and serve needs only
the engine. docs/architecture.md tells the same picture in prose.

Inside a part, the modules' imports form no circle either (a function-level import that closes
one is still a circle: the two modules cannot be understood, or moved, one without the other).

A new top-level module or package must be added to PARTS (and, for a new part, DEPENDS_ON), or
this test fails: that keeps the table the one true picture of the package.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "tunelab"

# Which part each top-level module or sub-package of tunelab belongs to.
PARTS = {
    # base: below everything, imports no other part
    "__init__": "base",  # the package facade; its verbs are imported lazily by name, on first use
    "config": "base", "config_errors": "base", "io": "base", "errors": "base", "paths": "base", "memory": "base",
    "progress": "base", "logs": "base", "runs": "base",  # runs: the run registry every layer records into
    "discover": "base",  # registries import every module of their package (metrics, task types, objectives)
    "models": "models",
    "data": "data",
    "templates": "templates",
    "infer": "infer",
    "train": "train",
    "fewshot": "fewshot",
    "evaluate": "evaluate",
    "safety": "safety",
    "compare": "compare",
    "report": "report",
    "serve": "serve",
    "cli": "cli", "__main__": "cli",
}

# The parts each part imports directly; what they import in turn is allowed too.
DEPENDS_ON = {
    "base": [],
    "models": ["base"],
    "data": ["models"],
    "templates": ["data"],
    "infer": ["templates"],
    "train": ["templates"],
    "fewshot": ["templates"],
    "evaluate": ["infer", "fewshot"],
    "safety": ["evaluate"],
    "compare": ["safety", "train"],
    "report": ["compare"],
    "serve": ["infer"],
    "cli": ["report", "serve"],
}


@lru_cache(maxsize=None)
def allowed(part: str) -> frozenset:
    """The part itself and everything below it."""
    out = {part}
    for lower in DEPENDS_ON[part]:
        out |= allowed(lower)
    return frozenset(out)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def part_of(module: str, where: str) -> str:
    """`tunelab.evaluate.metrics.base` -> 'evaluate'; an unknown top-level name fails the test."""
    top = module.split(".")[1] if module.count(".") else "__init__"
    if top not in PARTS:
        pytest.fail(f"{where}: tunelab.{top} is not in tests/test_imports.py PARTS; add it to the layer "
                    f"it belongs to (see the table there)")
    return PARTS[top]


def is_submodule(name: str) -> bool:
    base = SRC / Path(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported tunelab module) for every import in the file, function-level ones included."""
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                pkg = me.split(".") if is_pkg else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(pkg + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:  # `from tunelab import paths` imports the module tunelab.paths
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub if is_submodule(sub) else target))
    return out


def all_files() -> list[Path]:
    return sorted((SRC / PACKAGE).rglob("*.py"))


def test_the_table_is_complete():
    assert set(PARTS.values()) == set(DEPENDS_ON), "every part in PARTS needs a DEPENDS_ON row and back"
    for part, lower in DEPENDS_ON.items():
        below = set().union(*(allowed(p) for p in lower))
        assert part not in below, f"{part}: DEPENDS_ON leads back to it (a cycle)"
    tops = {p.name if p.is_dir() else p.stem for p in (SRC / PACKAGE).iterdir()
            if (p.is_dir() and (p / "__init__.py").is_file()) or p.suffix == ".py"}
    missing = sorted(tops - set(PARTS))
    assert not missing, f"tunelab.{missing[0]} is not in tests/test_imports.py PARTS; add it to its layer"


def test_docs_architecture_tells_the_same_table():
    """docs/architecture.md's layer table lists every part and the parts it imports directly, as DEPENDS_ON."""
    import re

    page = SRC.parent / "docs" / "architecture.md"
    rows = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(\w+)` \|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = sorted(re.findall(r"`(\w+)`", m.group(2)))
    want = {part: sorted(lower) for part, lower in DEPENDS_ON.items()}
    assert rows == want, (f"docs/architecture.md's table and tests/test_imports.py DEPENDS_ON differ: "
                          f"{ {k: rows.get(k) for k in set(rows) | set(want) if rows.get(k) != want.get(k)} }")


def test_imports_point_down():
    problems = []
    for path in all_files():
        me = module_name(path)
        where = str(path.relative_to(SRC))
        mine = part_of(me, where)
        for line, target in imports_of(path):
            theirs = part_of(target, f"{where}:{line}")
            if theirs not in allowed(mine):
                problems.append(f"{where}:{line} ({mine}) imports {target} ({theirs})")
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def import_graph() -> dict[str, set[str]]:
    """module -> the tunelab modules it imports (function-level imports included)."""
    return {module_name(p): {t for _, t in imports_of(p)} - {module_name(p)} for p in all_files()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports, as one path around it per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(path_around(graph, set(group)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def path_around(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A -> B -> ... -> A inside `group`, to name the circle in the failure message."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph.get(v, set()) & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    return sorted(group)


def test_no_circle_inside_a_part():
    found = circles(import_graph())
    assert not found, ("import circles (move what both sides need into a third module, or one side's "
                       "import to the layer above):\n" + "\n".join(" -> ".join(c) for c in found))


def test_the_circle_check_sees_a_circle():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert circles(graph) == [["a.x", "a.y", "a.z", "a.x"]]
    assert circles({"a.x": {"a.y"}, "a.y": set()}) == []


def test_no_private_names_across_modules():
    """A `_helper` is private to its module: another module importing it is a hidden dependency."""
    problems = []
    for path in all_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        problems.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}.{a.name}")
    assert not problems, "private names imported across modules:\n" + "\n".join(problems)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text(
        "import os\n\ndef f():\n    from tunelab.safety import toxicity\n    from ..evaluate import runner\n")
    global SRC
    old, SRC = SRC, tmp_path
    try:
        got = [t for _, t in imports_of(pkg / "train" / "loop.py")]
    finally:
        SRC = old
    assert got == ["tunelab.safety", "tunelab.evaluate"]
    assert "safety" not in allowed("train") and "evaluate" not in allowed("train")
    assert "fewshot" in allowed("evaluate") and "train" not in allowed("evaluate")
    assert "infer" in allowed("evaluate") and "infer" not in allowed("train") and "evaluate" not in allowed("infer")
    assert allowed("serve") == allowed("infer") | {"serve"}
