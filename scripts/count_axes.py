"""How far the code's growth axes are strings, and how long and wide its functions are (issue 33).

    python scripts/count_axes.py            # a table per axis and per file
    python scripts/count_axes.py --json     # the same numbers, machine-readable (the test reads these)

What is counted, over every .py file under src/ (an ast walk, no imports):

- **Name comparisons, per axis.** An axis is a list of names the code grows along: the task types
  (generate, multiple_choice, perplexity, preference, retrieval) and the training methods (full,
  lora, dora, qlora, dpo, orpo, sft, grpo). One *comparison* is one `ast.Compare` expression
  (`a == "x"`, `a != "x"`, `a in ("x", "y")`, `a not in {...}`, chained ones count once) whose
  operator is ==, !=, in or not in and where one operand is a string constant on the axis, or a
  tuple, list or set literal holding one; and one `case` of a `match` whose pattern is such a
  string (or an `|` of them). A name in a comparison is the code deciding by name: the task type's
  or method's object should decide instead. Dict keys, calls and plain strings are not counted.
- Code inside an axis's registry is not counted for that axis: the task-type package
  (evaluate/task_types/) for task types; the objectives package (train/objectives/) and the module
  that declares the weights methods (train/methods.py) for methods.
- **Long functions:** `def`s whose span (first line of the `def` to its last line, docstring and
  comments included, decorators not) is over 60 lines.
- **Wide functions:** `def`s with more than 8 parameters, counting every named parameter
  (positional-only, positional, keyword-only) except a leading `self` / `cls`, plus one each for
  `*args` and `**kwargs`. A function that needs more inputs takes a typed options object (a
  dataclass or pydantic model), which is one parameter; a keyword API kept for callers takes
  `**options` and builds that object from them (so it is one parameter here too).
- **Exempt from the parameter limit** (never from the length limit), each listed by qualified name
  with its reason in EXEMPT below and printed with it: functions whose signature is fixed from
  outside. Typer commands in cli/ whose parameters are the command's flags (the litgpt style: the
  CLI is a typed signature, its help read from it), and attention kernels whose signature
  transformers' AttentionInterface fixes (it calls them with those arguments). An entry that no
  longer names a wide function is reported under exempt_unused (tests/test_count_axes.py keeps that
  empty, so the table cannot rot).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunelab"
AXES = {
    "task_type": ({"generate", "multiple_choice", "perplexity", "preference", "retrieval"},
                  ("evaluate/task_types/",)),
    "method": ({"full", "lora", "dora", "qlora", "dpo", "orpo", "sft", "grpo"},
               ("train/objectives/", "train/methods.py")),
}
MAX_LINES, MAX_PARAMS = 60, 8
_FLAGS = "a Typer command: its parameters are the command's flags, the CLI a typed signature"
_KERNEL = "an attention kernel: transformers' AttentionInterface fixes its signature"
EXEMPT = {  # qualified name -> why it may take more than MAX_PARAMS parameters
    "tunelab.cli.evaluate.eval_command": _FLAGS,
    "tunelab.cli.safety.probe_cmd": _FLAGS,
    "tunelab.cli.judge.agreement_cmd": _FLAGS,
    "tunelab.cli.data.prepare_cmd": _FLAGS,
    "tunelab.infer.packed_attention.items_attention_forward": _KERNEL,
    "tunelab.train.attention.doc_attention_forward": _KERNEL,
    "tunelab.models.attention.spans_attention_forward": _KERNEL,
}
_OPS = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _names_in(node: ast.AST) -> set[str]:
    """The string constants of an operand: itself, or the elements of a tuple / list / set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def _pattern_names(p: ast.AST) -> set[str]:
    if isinstance(p, ast.MatchValue):
        return _names_in(p.value)
    if isinstance(p, ast.MatchOr):
        return set().union(*(_pattern_names(q) for q in p.patterns))
    return set()


def comparisons(tree: ast.AST, names: set[str]) -> list[int]:
    """Line numbers of the comparisons (and match cases) against one of `names`."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, _OPS) for op in node.ops):
            if any(_names_in(x) & names for x in [node.left, *node.comparators]):
                lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and _pattern_names(node.pattern) & names:
            lines.append(node.pattern.lineno)
    return sorted(lines)


def n_params(fn: ast.AST) -> int:
    a = fn.args
    named = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    if named and named[0] in ("self", "cls"):
        named = named[1:]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, name, first line, lines, parameters) of every def, methods and nested defs
    included; the qualified name is `prefix` and the enclosing classes and defs, dotted."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield (f"{prefix}{node.name}", node.name, node.lineno, node.end_lineno - node.lineno + 1,
                   n_params(node))
        named = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        yield from functions(node, f"{prefix}{node.name}." if named else prefix)


def module_name(src: Path, rel: str) -> str:
    """tunelab.cli.data for cli/data.py under src/tunelab (a package's __init__.py: the package)."""
    parts = [src.name, *rel.removesuffix(".py").split("/")]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def count(src: Path = SRC) -> dict:
    out = {axis: {"total": 0, "files": {}} for axis in AXES}
    out["long_functions"], out["wide_functions"], out["exempt"] = [], [], []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for axis, (names, registries) in AXES.items():
            if rel.startswith(registries):
                continue
            lines = comparisons(tree, names)
            if lines:
                out[axis]["files"][rel] = lines
                out[axis]["total"] += len(lines)
        for qualname, name, line, n_lines, n_par in functions(tree, module_name(src, rel) + "."):
            row = {"where": f"{rel}:{line}", "name": name, "qualname": qualname}
            if n_lines > MAX_LINES:
                out["long_functions"].append({**row, "lines": n_lines})
            if n_par > MAX_PARAMS and qualname in EXEMPT:
                out["exempt"].append({**row, "params": n_par, "reason": EXEMPT[qualname]})
            elif n_par > MAX_PARAMS:
                out["wide_functions"].append({**row, "params": n_par})
    out["exempt_unused"] = sorted(set(EXEMPT) - {r["qualname"] for r in out["exempt"]})
    return out


def _print(c: dict) -> None:
    for axis in AXES:
        files = c[axis]["files"]
        print(f"{axis}: {c[axis]['total']} comparisons in {len(files)} files")
        for rel, lines in sorted(files.items(), key=lambda kv: -len(kv[1])):
            print(f"  {len(lines):3d}  {rel}  (lines {', '.join(map(str, lines))})")
    both = Counter()
    for axis in AXES:
        both.update({rel: len(v) for rel, v in c[axis]["files"].items()})
    print(f"both axes: {sum(both.values())} comparisons in {len(both)} files")
    for key, unit in (("long_functions", "lines"), ("wide_functions", "params")):
        rows = sorted(c[key], key=lambda r: -r[unit])
        print(f"{key}: {len(rows)}" + (f" (largest {rows[0][unit]} {unit})" if rows else ""))
        for r in rows:
            print(f"  {r[unit]:3d}  {r['name']}  {r['where']}")
    print(f"exempt from the parameter limit: {len(c['exempt'])}")
    for r in sorted(c["exempt"], key=lambda r: -r["params"]):
        print(f"  {r['params']:3d}  {r['name']}  {r['where']}  ({r['reason']})")
    if c["exempt_unused"]:
        print(f"exempt_unused (EXEMPT entries naming no wide function; remove them): {', '.join(c['exempt_unused'])}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    ap.add_argument("--src", type=Path, default=SRC, help="the package folder to walk (default: src/tunelab)")
    args = ap.parse_args(argv)
    c = count(args.src)
    if args.json:
        json.dump(c, sys.stdout, indent=1)
        print()
    else:
        _print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
