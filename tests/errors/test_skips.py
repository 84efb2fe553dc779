"""Every skip path reports how many records it left out and the first one (file:line and why), in
the command's output and in its result file (issue 34 item 1): eval (the task's skip_bad:
results.json `skipped`), compare (the pool's train.data.skip_bad and the task's: compare.json
`skipped`), data inspect (--skip-bad: the notes and the table).

Before: a task's `skip_bad: true` stopped at an unreadable line ("not valid JSON ... fix that
record"), results.json and compare.json had no count, and compare said nothing of the pool's
skipped pairs during a run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

PAIR = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "Go away."}


def _pairs(path, n: int, bad: dict[int, str]):
    """n lines of pairs; line numbers in `bad` (1-based) hold the given text instead."""
    lines = [bad.get(i, json.dumps({**PAIR, "prompt": f"What is {i} plus 2?"})) for i in range(1, n + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


EMPTY = json.dumps({**PAIR, "chosen": ""})


def tunelab(*args, cwd) -> tuple[int, str, str]:
    """`tunelab ARGS` as a user runs it (its warnings print as they do for a user), lines unfolded."""
    env = {**os.environ, "TUNELAB_NO_ENERGY": "1", "TUNELAB_QUIET": "1", "COLUMNS": "1000"}
    proc = subprocess.run([sys.executable, "-m", "tunelab", *map(str, args)], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def test_eval_reports_its_skips_in_the_output_and_results_json(tiny_dir, tmp_path):
    _pairs(tmp_path / "pairs.jsonl", 6, {2: "{not json", 4: EMPTY})
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "p", "type": "preference", "data": "pairs.jsonl",
                                                     "skip_bad": True, "metrics": ["pref_acc"]}))
    code, out, err = tunelab("eval", tiny_dir, "--task", tmp_path / "t.yaml", "--out", tmp_path / "o", cwd=tmp_path)
    assert code == 0, err
    path = tmp_path / "pairs.jsonl"
    assert f"skipped 1 bad record(s) (first: {path}:2: not valid JSON" in err  # the unreadable line
    assert f"skipped 1 bad pair(s) (skip_bad: true); first: {path}:4: the chosen answer is empty" in err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["n"] == 4
    assert res["skipped"]["count"] == 2 and res["skipped"]["first"].startswith(f"{path}:2: not valid JSON")


def test_eval_of_a_generate_task_skips_unreadable_lines_too(tiny_dir, tmp_path):
    rows = [json.dumps({"q": f"{i} plus one is", "a": str(i + 1)}) for i in range(5)]
    rows[2] = "oops"
    (tmp_path / "d.jsonl").write_text("\n".join(rows) + "\n")
    task = {"name": "g", "data": "d.jsonl", "prompt": "{{ q }}", "answer": "{{ a }}", "metrics": ["exact_match"],
            "generation": {"max_new_tokens": 2}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(task))
    code, out, err = tunelab("eval", tiny_dir, "--task", tmp_path / "t.yaml", "--out", tmp_path / "o", cwd=tmp_path)
    assert code == 2 and "d.jsonl:3: not valid JSON" in err and "set skip_bad: true there" in err
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({**task, "skip_bad": True}))
    code, out, err = tunelab("eval", tiny_dir, "--task", tmp_path / "t.yaml", "--out", tmp_path / "o", cwd=tmp_path)
    assert code == 0, err
    assert "skipped 1 bad record(s) (first: " in err and "d.jsonl:3: not valid JSON" in err
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["n"] == 4 and res["skipped"]["count"] == 1 and ":3: not valid JSON" in res["skipped"]["first"]


def test_eval_without_skips_says_null(cli, tiny_dir, tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"q": "1 plus one is", "a": "2"}) + "\n")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "g", "data": "d.jsonl", "prompt": "{{ q }}",
                                                     "answer": "{{ a }}", "generation": {"max_new_tokens": 2}}))
    code, out, err = cli("--quiet", "eval", tiny_dir, "--task", tmp_path / "t.yaml", "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["skipped"] is None


def test_compare_reports_the_pools_and_the_tasks_skips(tiny_dir, tmp_path):
    pool = _pairs(tmp_path / "pool.jsonl", 12, {3: EMPTY, 5: "[1, 2]", 9: EMPTY})
    test = _pairs(tmp_path / "test.jsonl", 5, {2: EMPTY})
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"name": "pairs", "type": "preference", "data": "test.jsonl",
                                                        "skip_bad": True}))
    cfg = {"name": "c", "model": str(tiny_dir), "task": "task.yaml", "train_data": "pool.jsonl", "arms": ["zero_shot"],
           "train": {"data": {"skip_bad": True}}, "retention_prompts": None}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, out, err = tunelab("compare", tmp_path / "c.yaml", f"out={tmp_path / 'c'}", cwd=tmp_path)
    assert code == 0, err
    assert (f"train_data pool.jsonl (train.data.skip_bad): skipped 3 bad record(s); first: {pool}:3: the chosen "
            "answer is empty") in out
    assert f"skipped 1 bad pair(s) (skip_bad: true); first: {test}:2: the chosen answer is empty" in err
    skipped = json.loads((tmp_path / "c" / "compare.json").read_text())["skipped"]
    assert skipped["pool"]["count"] == 3 and skipped["pool"]["first"].startswith(f"{pool}:3: the chosen answer")
    assert skipped["task"]["count"] == 1 and skipped["task"]["first"].startswith(f"{test}:2: the chosen answer")


def test_data_inspect_counts_every_skip(cli, tiny_dir, tmp_path):
    ok = json.dumps({"prompt": "What is 2 plus 2?", "completion": "4"})
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join([ok, "not json", json.dumps({"prompt": "x"}), ok]) + "\n")
    code, out, err = cli("data", "inspect", path, "--model", tiny_dir, "-n", "0", "--skip-bad")
    assert code == 0, err
    flat = " ".join(out.split())
    assert f"skipped 1 unreadable record(s); first: {path}:2: not valid JSON" in flat
    assert f"skipped 1 bad record(s); first: {path}:3: missing field 'completion'" in flat
    assert "│ skipped (--skip-bad) │ 2 │" in flat
