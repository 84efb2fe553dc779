"""Issue 33's counting goals, shown by running scripts/count_axes.py (as a user would) on src/.

- Task-type and training-method names compared as strings outside their registries: 0 per axis.
- No function over 60 lines or with more than 8 parameters (the script's docstring defines both),
  except the functions the script's EXEMPT table lists, with a reason, for the parameter limit; every
  entry of that table must still name a wide function, so it cannot rot.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "count_axes.py"


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), "--json", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@lru_cache(maxsize=1)
def counts() -> dict:
    return _run()


@pytest.mark.parametrize("axis", ["task_type", "method"])
def test_no_name_of_the_axis_is_compared_outside_its_registry(axis):
    c = counts()[axis]
    assert c["total"] == 0, f"{axis} names compared as strings: {json.dumps(c['files'])}"


@pytest.mark.parametrize("kind", ["long_functions", "wide_functions"])
def test_no_long_or_wide_function_in_src(kind):
    assert counts()[kind] == []


def test_every_exempt_function_still_exists_and_needs_it():
    """An EXEMPT entry whose function was renamed, removed or narrowed is reported, not silently kept."""
    c = counts()
    assert c["exempt_unused"] == []
    assert c["exempt"] and all(r["reason"] and r["params"] > 8 for r in c["exempt"])


def test_an_exempt_function_is_exempt_from_the_parameter_limit_only(tmp_path):
    """The table names functions by qualified name: the same name elsewhere is still counted, and an
    exempt function over 60 lines is still long."""
    pkg = tmp_path / "tunelab"
    (pkg / "cli").mkdir(parents=True)
    wide = "(a, b, c, d, e, f, g, h, i)"
    (pkg / "cli" / "evaluate.py").write_text(f"def eval_command{wide}:\n" + "    x = 1\n" * 60)
    (pkg / "cli" / "other.py").write_text(f"def eval_command{wide}:\n    pass\n")
    c = _run("--src", str(pkg))
    assert [(r["qualname"], r["params"]) for r in c["exempt"]] == [("tunelab.cli.evaluate.eval_command", 9)]
    assert [r["qualname"] for r in c["wide_functions"]] == ["tunelab.cli.other.eval_command"]
    assert [r["qualname"] for r in c["long_functions"]] == ["tunelab.cli.evaluate.eval_command"]
    assert "tunelab.cli.data.prepare_cmd" in c["exempt_unused"]


def test_the_counting_rule(tmp_path):
    """One comparison per Compare expression or match case, against a constant or a literal collection;
    registries are not counted for their axis; spans and parameters as the script's docstring says."""
    pkg = tmp_path / "tunelab"
    (pkg / "evaluate" / "task_types").mkdir(parents=True)
    (pkg / "evaluate" / "task_types" / "generate.py").write_text('x = t.type == "generate"\n')  # its registry
    (pkg / "a.py").write_text(textwrap.dedent('''
        if t.type == "generate" or t.type in ("perplexity", "x"):   # two comparisons
            pass
        if m.method not in {"lora", "dora"} and "full" != m.method:  # two, on the method axis
            pass
        if a == "generate" == b:   # chained: one
            pass
        d = {"generate": 1}        # not a comparison
        f("perplexity")            # not a comparison
        if t.type.startswith("gen"):  # not a name of the axis
            pass
        match t.type:
            case "retrieval" | "preference":  # one case
                pass
            case "other":
                pass
        def wide(self, a, b, c, d, e, f, g, h, *args):  # 9 parameters without self
            pass
        def narrow(a, b, c, d, e, f, g, h):  # 8
            pass
    ''') + "def long():\n" + "    x = 1\n" * 60)
    c = _run("--src", str(pkg))
    assert c["task_type"]["files"] == {"a.py": [2, 2, 6, 13]}
    assert c["method"]["files"] == {"a.py": [4, 4]}
    assert [f["name"] for f in c["wide_functions"]] == ["wide"]
    assert [(f["name"], f["lines"]) for f in c["long_functions"]] == [("long", 61)]
