"""`accelerate launch --num_processes 2 -m tunelab eval` gives the single-process results.json."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.evaluate.shard import Shard


def test_shards_partition_the_items():
    items = list(range(11))
    parts = [Shard(r, 3).take(items) for r in range(3)]
    assert sorted(i for p in parts for i in p) == items and parts[0] == [0, 3, 6, 9]


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="the accelerate launcher is not installed")
def test_two_processes_write_the_single_process_results(tiny_dir, tmp_path):
    rows = [{"id": f"r{i}", "q": f"Is {i} even?", "options": ["yes", "no", "maybe"], "label": i % 2} for i in range(9)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "t", "data": "d.jsonl", "type": "multiple_choice", "prompt": "{{ q }}", "choices": "{{ options }}",
        "answer": "{{ label }}", "metrics": ["acc", "acc_norm"], "fewshot": {"k": 2}}))
    args = ["eval", str(tiny_dir), "--task", str(tmp_path / "t.yaml")]
    single = subprocess.run([sys.executable, "-m", "tunelab", "-q", *args, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    launcher = shutil.which("accelerate") or str(Path(sys.executable).parent / "accelerate")
    multi = subprocess.run([launcher, "launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
                            "--mixed_precision", "no", "--dynamo_backend", "no",
                            "-m", "tunelab", "-q", *args, "--out", str(tmp_path / "two")],
                           capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    one.pop("cost"), two.pop("cost")  # wall time and memory describe the run, not the result
    assert one == two
    p1 = [json.loads(x) for x in (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]
    p2 = [json.loads(x) for x in (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()]
    assert [(p["id"], p["pred"], p["demos"]) for p in p1] == [(p["id"], p["pred"], p["demos"]) for p in p2]
