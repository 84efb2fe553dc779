"""Tables written to a log file, CI or `| tee` keep their natural width (issue 26 case 9).

Rich fits a table to the window; with no terminal it assumed 80 columns and folded the
quickstart's `few_shot-k3-random` and every CI over two lines.
"""
from __future__ import annotations

from types import SimpleNamespace

LONG = "few_shot-k3-random/exact_match/a-rather-long-per-type-metric-name"


def _results():
    metrics = {LONG: {"value": 0.45, "stderr": 0.0312, "ci95": [0.3875, 0.5125], "n": 1000}}
    return SimpleNamespace(task="dates", model={"name": "smollm2-135m-instruct", "adapter": None}, n=1000, shots=3,
                           metrics=metrics, cost={"wall_s": 1.0, "tokens": 10}, signature="sig", out=None)


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("┃", "│"))]


def test_a_table_in_a_log_is_not_folded(capsys, monkeypatch):
    from tunelab.cli.tables import print_results

    monkeypatch.delenv("COLUMNS", raising=False)
    print_results(_results())
    rows = _table_lines(capsys.readouterr().out)
    assert len(rows) == 2  # the header and the one metric: nothing folded onto a second line
    assert LONG in rows[1] and "[0.3875, 0.5125]" in rows[1]
    assert len(rows[1]) > 80


def test_a_terminal_still_fits_its_width(monkeypatch):
    """On a terminal nothing changes: Rich fits the table to the window."""
    import io

    from rich.table import Table

    from tunelab.cli import _Console

    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table("arm", "95% CI")
    table.add_row(LONG, "[0.3875, 0.5125]")
    for terminal, widest in ((True, 40), (False, len(LONG) + 23)):
        out = io.StringIO()
        _Console(file=out, force_terminal=terminal, width=40, color_system=None).print(table)
        assert max(map(len, out.getvalue().splitlines())) == widest


# ---------------------------------------------------------------- lines (issue 34 item 6)
# Output to a file or a pipe was folded at 80 columns: `compare 'x' -> ` then the path on the
# next line, `peak` then `1314.9 MiB`. Run as a user would pipe it: a subprocess, stdout a pipe.
DEEP = "a-rather-long-folder-name-for-the-output/and-another-level-below-it/where-the-compare-goes"


def _piped(args: list[str], cwd, home) -> str:
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(PYTHONPATH=src, TUNELAB_HOME=str(home), TUNELAB_QUIET="1", TUNELAB_NO_ENERGY="1")
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_long_path_in_piped_output_stays_on_its_line(tmp_path, tiny_dir):
    import yaml

    out = tmp_path / DEEP
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump({
        "name": "pipe", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=20",
        "arms": ["zero_shot", {"lora": {"n": [8]}}], "out": str(out)}))
    text = _piped(["-m", "tunelab", "compare", "cmp.yaml", "--dry-run"], tmp_path, tmp_path / "home")
    (head,) = [line for line in text.splitlines() if line.startswith("compare 'pipe'")]
    assert f"-> {out}/  model {tiny_dir}" in head and len(head) > 120
    # a long sentence is one line too, and the plan table is whole
    assert any(line.startswith("fine-tuned arms train on") and line.endswith("as the test prompts are")
               for line in text.splitlines()), text
    assert any(line.startswith("│ lora-n8 ") for line in text.splitlines())


def test_a_long_cost_line_in_piped_output_is_not_split(tmp_path):
    script = (
        "from types import SimpleNamespace\n"
        "from tunelab.cli.tables import print_results\n"
        "res = SimpleNamespace(task='a-task-with-a-long-name', model={'name': 'a-model', 'adapter': None}, n=100000,\n"
        "    shots=0, metrics={'exact_match': {'value': 0.5, 'stderr': 0.01, 'ci95': [0.48, 0.52]}},\n"
        "    cost={'wall_s': 12345.6, 'tokens': 123456789, 'prompt_tokens': 100000000, 'generated_tokens': 23456789,\n"
        "          'tokens_per_s': 10000.0, 'peak_mem_mib': 1314.9}, signature='sig', out=" + repr(str(tmp_path / DEEP)) + ")\n"
        "print_results(res)\n")
    lines = _piped(["-c", script], tmp_path, tmp_path / "home").splitlines()
    (cost,) = [line for line in lines if line.startswith("cost:")]
    assert cost.endswith("peak 1314.9 MiB") and len(cost) > 80
    assert f"wrote {tmp_path / DEEP}/results.json and predictions.jsonl" in lines
