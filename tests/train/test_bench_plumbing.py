"""The training benchmark's arm plumbing on a tiny model (CPU): both arms run, the report prints.

On a GPU the same functions train a random Llama-1B; here `--model-config tiny` drives them for two
steps so a change to the recipe cannot break the benchmark unseen (it once handed a BlockMask to a
model on sdpa).
"""
from __future__ import annotations

import math
from argparse import Namespace

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("train_throughput")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_both_arms_run_on_a_tiny_model(bench, method, monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")
    args = Namespace(device="cpu", model_config="tiny", method=method, gpu_rows=12, gpu_batch=2, gpu_steps=2,
                     min_len=8, max_len=48)
    peer, ours = bench.arm_hf(args), bench.arm_tunelab_random(args)
    for r in (peer, ours):
        assert r["steps"] == 2 and r["tokens"] > 0 and r["tokens_per_s"] > 0
        assert r["losses"] and all(math.isfinite(x) for x in r["losses"])
        assert r["steady_tokens_per_s"] is not None  # step 2 is steady (nothing compiles on CPU)
    assert ours["compiles"] == 0 and ours["row_width"] is None  # eager CPU: rows keep their length
    text = bench.report(peer, ours, args, "0 0 0", "0 0 0")
    assert "ratios: tokens/s whole run" in text and "steady state" in text and "final loss" in text
