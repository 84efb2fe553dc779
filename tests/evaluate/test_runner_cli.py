"""`tunelab eval` on the command line: table, artifacts, one-line errors (exit 2)."""
from __future__ import annotations

import json
import subprocess
import sys

import yaml


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunelab", "-q", *args], capture_output=True, text=True, cwd=cwd)


def _task(tmp_path):
    rows = [{"q": f"{i} plus one is", "a": str(i + 1)} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "plus", "data": "d.jsonl", "prompt": "{{ q }}",
                                                     "answer": "{{ a }}", "metrics": ["exact_match"],
                                                     "generation": {"max_new_tokens": 4}}))
    return tmp_path / "t.yaml"


def test_eval_prints_table_and_writes_results(tiny_dir, tmp_path):
    r = _run("eval", str(tiny_dir), "--task", str(_task(tmp_path)), "--out", str(tmp_path / "o"), "--batch-size", "2",
             "generation.max_new_tokens=3")
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stdout and "95% CI" in r.stdout and "tunelab 0.1.0|model tiny-llama sha256:" in r.stdout and "|task sha256:" in r.stdout
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert results["n"] == 4 and "exact_match" in results["metrics"]
    lines = (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()
    assert all(json.loads(x)["length_tokens"] <= 3 for x in lines)  # the override reached the task


def test_limit_zero_is_a_one_line_error(tiny_dir, tmp_path):
    r = _run("eval", str(tiny_dir), "--task", str(_task(tmp_path)), "--limit", "0")
    assert r.returncode == 2 and "--limit must be at least 1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unknown_sampler_and_bad_batch_size(tiny_dir, tmp_path):
    r = _run("eval", str(tiny_dir), "--task", str(_task(tmp_path)), "--batch-size", "many")
    assert r.returncode == 2 and "--batch-size must be a whole number >= 1 or 'auto', got 'many'" in r.stderr
    r = _run("eval", str(tiny_dir), "--task", str(_task(tmp_path)), "--shots", "1", "--sampler", "best")
    assert r.returncode == 2 and "unknown sampler 'best'; use one of random, first_n, stratified, similar" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
