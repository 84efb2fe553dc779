"""FLOPs, MFU, steady-state rates, the GPU token budget and the thread rule, against hand-computed numbers."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunelab.train import cost
from tunelab.train.packing import collate
from tunelab.models.threads import choose_threads, other_runnable, pick_threads

from .helpers import Ex


def test_weight_flops_per_token():
    # N = 1000 parameters, 200 of them the input embedding, 10 trainable (adapter)
    assert cost.flops_per_token(1000, 1000, 200, adapter=False) == 6 * 800
    assert cost.flops_per_token(1000, 10, 200, adapter=True) == 4 * 800 + 6 * 10


def test_attention_flops_count_causal_pairs_inside_documents():
    b = collate([Ex([5] * 3, [5] * 3), Ex([6] * 4, [6] * 4)], width=128)
    assert b.attn_pairs == 3 * 4 // 2 + 4 * 5 // 2 == 16  # padding adds nothing
    # 12 · d · layers · pairs: 12 × 64 × 2 × 16
    assert cost.attention_flops(b.attn_pairs, 2, 64) == 24576
    cfg = SimpleNamespace(num_attention_heads=4, hidden_size=64, num_hidden_layers=2, head_dim=None)
    assert cost.attention_dims(cfg) == (2, 64)
    cfg.head_dim = 32  # models whose heads are wider than hidden / heads (e.g. Gemma)
    assert cost.attention_dims(cfg) == (2, 128)


def test_mfu_and_steady_state():
    assert cost.mfu(500e12, 1.0, 1000e12) == 0.5
    assert cost.mfu(500e12, 1.0, 1000e12, n_devices=2) == 0.25
    assert cost.mfu(1.0, 1.0, None) is None
    s = cost.SteadyState()
    s.add(1, 100, 1e12, 10.0, compiled=True)
    s.add(2, 100, 1e12, 5.0, compiled=True)
    assert s.rates(1e12)["steady_tokens_per_s"] is None
    s.add(3, 200, 2e12, 1.0, compiled=False)
    s.add(4, 200, 2e12, 1.0, compiled=False)
    assert s.rates(4e12) == {"steady_tokens_per_s": 200.0, "steady_mfu": 0.5, "steady_from_step": 3}
    s.add(5, 200, 2e12, 9.0, compiled=True)  # a recompilation restarts the steady state
    assert s.rates(4e12)["steady_from_step"] is None


def test_peak_flops_table(monkeypatch):
    cuda = SimpleNamespace(type="cuda")
    for name, peak in [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA A100-SXM4-80GB", 312e12), ("Some Future GPU", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        assert cost.device_peak_flops(cuda, "bf16") == peak, name
    assert cost.device_peak_flops(cuda, "fp32") is None  # no tensor-core bf16 peak applies
    assert cost.device_peak_flops(torch.device("cpu"), "fp32") is None


LLAMA_1B = cost.MemoryModel(n_params=10**9, n_trainable=10**7, weight_bytes=2, layers=16, hidden=2048,
                            intermediate=8192, vocab=128256)


def test_auto_batch_tokens_formula():
    gib80 = 80 * 2**30
    # fixed = 2e9 (bf16 weights) + 12 × 1e7 + 3 × 1024 × 128256 × 4 = 3,696,009,728 B
    # per token = 2 B × 16 × (8 × 2048 + 4 × 8192) = 1,572,864 B
    # (0.85 × 80 GiB − fixed) / per token = 44071.5 → 44032 (a multiple of 128)
    assert cost.auto_batch_tokens(gib80, LLAMA_1B, grad_checkpointing=False) == 44032
    # checkpointing keeps one hidden state per layer (+ one layer's set): far above the cap
    assert cost.auto_batch_tokens(gib80, LLAMA_1B, grad_checkpointing=True) == cost.MAX_AUTO_TOKENS
    # too little memory: never below the longest row (training would refuse the data otherwise)
    assert cost.auto_batch_tokens(4 * 2**30, LLAMA_1B, grad_checkpointing=False, longest=1000) == 1024


@pytest.mark.parametrize("cores, others, threads", [
    (2, 0.3, 2),    # quiet box (short bursts of other work): every core
    (2, 1.0, 1),    # one other busy process: one free core
    (2, 2.7, 1),    # overloaded: still one thread
    (16, 3.2, 13),
])
def test_thread_rule(cores, others, threads):
    assert pick_threads(cores, others) == threads


def test_other_runnable_tasks_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3\nprocs_running 3\nprocs_blocked 0\n")
    # 3 runnable, one of them this process
    assert other_runnable(samples=2, interval=0, stat=str(stat)) == 2.0
    assert other_runnable(samples=2, interval=0, stat=str(tmp_path / "missing")) is None


def test_user_thread_choice_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr("tunelab.models.threads.other_runnable", lambda: 99.0)
    try:
        assert choose_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
