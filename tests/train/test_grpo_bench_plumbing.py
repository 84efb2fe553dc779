"""benchmarks/grpo_throughput.py on a tiny model (CPU): both sides and the fallback measures run, the JSON holds
what the lead reads, and a side that hangs is recorded with its stacks.

The benchmark itself (the default model, 16 steps) is run by hand (docs/training.md, "GRPO throughput");
this keeps its plumbing from breaking unseen: TRL's GRPOTrainer configured as the script configures it,
tunelab's run through the same providers as `tunelab train`, tokens counted from each side's records.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("datasets")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grpo_throughput.py"


def test_grpo_throughput_runs_on_a_tiny_model(tmp_path):
    """As a person runs it: the script in its own process, each side in a process of its own."""
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--threads", "1", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((out / "grpo_throughput.json").read_text())
    s = res["settings"]
    assert (s["steps"], s["prompts_per_step"], s["G"], s["max_completion_length"], s["prompts"]) == (2, 2, 4, 6, 4)
    trl, ours, parts = res["trl"], res["tunelab"], res["parts"]
    for side in (trl, ours):
        assert side["ok"] and side["steps"] == 2 and side["prompts_per_step"] == [2, 2]  # P prompts per step
        assert side["completions"] == 16 and 0 < side["generated_tokens"] <= 16 * 6
        assert side["trained_tokens"] == side["prompt_tokens"] + side["generated_tokens"]  # num_iterations 1
        assert side["run_s"] > 0 and side["peak_mem_mib"] > 0 and len(side["rewards"]) == 2
    assert trl["gradient_checkpointing"] is True  # TRL's default, kept and recorded
    # tunelab's loop fed each group's prompt once and each completion but its last token
    assert ours["tokens_seen"] == ours["fed_tokens"] == (ours["prompt_tokens"] // 4 + ours["generated_tokens"]
                                                         - ours["completions"]) < ours["trained_tokens"]
    assert 0 < ours["generate_s"] < ours["run_s"]
    assert parts["ok"] and parts["plain_generated_tokens"] > 0 and parts["sft_tokens"] > 0
    r = res["ratios"]
    assert r["same_prompt_tokens"] and r["trl_count_is_its_num_tokens"]  # the same prompts, TRL's own count
    for key in ("tokens_per_s", "peak_memory", "rollout_vs_plain_generation", "rollout_vs_plain_generation_with_lora",
                "grpo_training_vs_sft"):
        assert r[key] > 0, key
    assert res["goals"] == {"tokens_per_s": 3.0, "peak_memory": 0.7, "rollout_vs_plain_generation": 0.8}
    assert "ratios: tokens/s x" in proc.stdout and "fallback: rollouts" in proc.stdout


def test_a_hung_side_is_recorded_with_its_stacks(load_benchmark, tmp_path):
    """A side past its limit is killed; the JSON keeps the failure and the stacks faulthandler dumped first."""
    bench = load_benchmark("grpo_throughput")
    got = bench.run_arm("hang", {}, 8, 1, tmp_path)
    assert not got["ok"] and got["failure"] == "no result after the 8 s limit (killed)"
    assert "in arm_hang" in got["stderr_tail"]  # where it hung, from the dumped traceback
    report = bench.report({"settings": {"prompts": 4, "prompt_tokens": [50, 50], "steps": 2, "prompts_per_step": 2,
                                        "G": 4, "max_completion_length": 6, "temperature": 1.0, "lr": 5e-5,
                                        "model": "tiny"},
                           "load_before": "0", "load_after": "0", "trl": {**got, "arm": "TRL"},
                           "tunelab": {**got, "arm": "tunelab"}, "parts": {"ok": False},
                           "ratios": bench.ratios({**got}, {**got}, {"ok": False})})
    assert "TRL" in report and "FAILED: no result after the 8 s limit" in report and "ratios:" not in report


def test_grpo_attention_benchmark_runs_on_a_tiny_model(tmp_path):
    """benchmarks/grpo_attention.py --tiny: both layouts time and agree, and it says which group_spans picks."""
    script = SCRIPT.parent / "grpo_attention.py"
    proc = subprocess.run([sys.executable, str(script), "--tiny"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [x for x in proc.stdout.splitlines() if x.startswith("prompt ")]
    assert len(lines) == 2 and all("group_spans picks" in x for x in lines)
    assert all(float(x.rsplit(" ", 1)[1]) < 1e-4 for x in lines)  # the two layouts give the same log-probs
