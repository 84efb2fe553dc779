"""Two processes (DDP over gloo) train like one process with twice the batch.

Accelerate 1.15's `--cpu` launcher starts a single process unless MPI is installed, so the test
launches with its torchrun-based launcher (`--multi_gpu`); on a machine without CUDA tunelab
builds its Accelerator with cpu=True, which turns that into DDP over gloo on the CPU.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from tunelab.train.loop import train

from .conftest import metrics, subprocess_env, write_config


def test_two_processes_match_one_process_with_twice_the_batch(make_config, tmp_path):
    lora = {"dropout": 0.0}  # dropout masks differ per process, so turn it off here
    loop = {"max_steps": 4, "batch_tokens": 120, "eval_every": 2, "save_every": 100}
    one = train(make_config("one", lora=lora, train={**loop, "grad_accum": 2}))
    path = write_config(make_config("two", lora=lora, train=loop), tmp_path / "two.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29517", "-m", "tunelab", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = metrics(tmp_path / "two")
    ref = metrics(one.run_dir)
    assert [m["step"] for m in two] == [m["step"] for m in ref] == [1, 2, 3, 4]
    for a, b in zip(ref, two):
        assert abs(a["loss"] - b["loss"]) < 1e-4, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4
        if "eval_loss" in a:
            assert abs(a["eval_loss"] - b["eval_loss"]) < 1e-4
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").is_file()
    assert "processes" in (tmp_path / "two" / "summary.json").read_text()


def test_dpo_on_two_processes_matches_one_and_keeps_the_reference_of_every_pair_it_used(make_config, tmp_path):
    """The reference of a step's pairs is computed on every process for the whole step (the main
    process writes it), so two processes agree with one and the kept file covers both halves."""
    import json
    import random

    data = tmp_path / "pairs.jsonl"
    r = random.Random(0)
    data.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}?", "chosen": f"The answer is {a + b}.",
                                        "rejected": f"It is {a + b + 1}."}) + "\n"
                            for a, b in ((r.randint(0, 99), r.randint(0, 99)) for _ in range(60))))
    lora = {"dropout": 0.0}
    loop = {"max_steps": 3, "batch_tokens": 120, "eval_every": 3, "save_every": 100, "lr": 1e-3}
    common = dict(method="dpo", lora=lora, data={"train": str(data), "eval": 0.1})
    one = train(make_config("one", train={**loop, "grad_accum": 2}, **common))
    path = write_config(make_config("two", train=loop, **common), tmp_path / "two.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29518", "-m", "tunelab", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for a, b in zip(metrics(one.run_dir), metrics(tmp_path / "two")):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["rewards/margins"] - b["rewards/margins"]) < 1e-4, (a, b)
    kept = [json.loads((d / "reference_logps.json").read_text()) for d in (one.run_dir, tmp_path / "two")]
    assert [row is None for row in kept[0]["train"]] == [row is None for row in kept[1]["train"]]
    assert 0 < sum(row is not None for row in kept[1]["train"]) < len(kept[1]["train"])  # 3 steps: a part
    pairs = [(x, y) for split in ("train", "eval") for x, y in zip(kept[0][split], kept[1][split]) if x is not None]
    assert all(abs(a - b) < 1e-4 for x, y in pairs for a, b in zip(x, y))


def test_grpo_on_two_processes_matches_one(make_config, tmp_path):
    """GRPO: every process samples the whole step's completions (the same seeds, so the same ones) and
    trains its micro-batch of packed groups; two processes agree with one that accumulates both."""
    import json

    import yaml

    from tunelab.cli import main

    (tmp_path / "questions.jsonl").write_text("".join(json.dumps({"q": f"What is {i} plus {i}?", "a": str(2 * i)})
                                                      + "\n" for i in range(12)))
    (tmp_path / "sums.yaml").write_text(yaml.safe_dump({"name": "sums", "data": "questions.jsonl", "prompt": "{{ q }}",
                                                        "answer": "{{ a }}", "chat": True, "metrics": ["exact_match"]}))
    (tmp_path / "ddp_rewards.py").write_text(  # graded, so the random tiny model's groups carry a signal
        "def vowels(completion, item):\n    return sum(c in 'aeiou' for c in completion) / max(len(completion), 1)\n")
    grpo = {"num_generations": 4, "max_completion_length": 6, "task": str(tmp_path / "sums.yaml"),
            "rewards": [{"function": "ddp_rewards:vowels", "weight": 1.0}]}
    common = dict(method="grpo", grpo=grpo, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                  data={"eval": None, "max_length": 96})
    loop = {"max_steps": 2, "batch_tokens": 200, "eval_every": 100, "save_every": 100, "lr": 5e-3}
    one = write_config(make_config("one", train={**loop, "grad_accum": 2}, **common), tmp_path / "one.yaml")
    with pytest.raises(SystemExit) as done:
        main(["train", str(one)])
    assert done.value.code == 0
    path = write_config(make_config("two", train=loop, **common), tmp_path / "two.yaml")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", "29519", "-m", "tunelab", "train", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(OMP_NUM_THREADS="1"), timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [m["step"] for m in two] == [m["step"] for m in ref] == [1, 2]
    assert ref[0]["grad_norm"] > 0  # the rewards differ within groups: a real gradient
    for a, b in zip(ref, two):
        for key in ("loss", "grad_norm", "reward", "tokens"):
            assert abs(a[key] - b[key]) < 1e-4, (key, a, b)
