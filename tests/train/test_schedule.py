"""The automatic schedule (train/schedule.py): a fine-tune left at its defaults trains properly at every n."""
from __future__ import annotations

import json

import pytest

from tunelab.config import TrainLoopConfig
from tunelab.train import schedule

LORA_LR = 2e-4  # LoRA's usual rate (objectives/sft.py)


def loop(**kw):
    return TrainLoopConfig(**kw)


@pytest.mark.parametrize("n, per_step", [(1, 1), (3, 3), (8, 4), (128, 4), (256, 8), (800, 25), (5000, 32)])
def test_examples_per_step(n, per_step):
    assert schedule.examples_per_step(n) == per_step


def test_the_issue_s_translation_subset_gets_dozens_of_steps():
    # issue 21: 128 Multi30K pairs (9978 tokens) made 2 optimizer steps of one 8192-token batch
    lengths = [78] * 128
    s = schedule.resolve(loop(), LORA_LR, lengths)
    assert s.examples_per_step == 4 and s.batch_tokens == 4 * 78 and s.grad_accum == 1
    assert s.epochs == 3 and s.lr == 2e-4
    assert 128 * 3 / 4 >= 64  # about 96 optimizer steps: several epochs, dozens of steps
    assert set(s.auto) == {"lr", "batch_tokens", "epochs"}


@pytest.mark.parametrize("n, epochs", [(8, 20), (16, 16), (64, 4), (128, 3), (1000, 3)])
def test_small_sets_get_more_epochs_up_to_twenty(n, epochs):
    assert schedule.resolve(loop(), LORA_LR, [50] * n).epochs == epochs


def test_token_budget_caps_epochs_but_one_epoch_always_runs():
    big = [500] * 4000  # 2M tokens: one epoch fits 3M, a second would not
    assert schedule.resolve(loop(), LORA_LR, big).epochs == 1
    huge = [1000] * 10_000  # 10M tokens: still one whole epoch
    assert schedule.resolve(loop(), LORA_LR, huge).epochs == 1
    mid = [100] * 5000  # 0.5M tokens a pass: 3 epochs fit
    assert schedule.resolve(loop(), LORA_LR, mid).epochs == 3


def _usual(method: str, weights: str = "lora") -> float:
    from types import SimpleNamespace

    from tunelab.train.objectives import resolve

    return resolve(SimpleNamespace(method=method, preference=SimpleNamespace(weights=weights))).usual_lr


@pytest.mark.parametrize("n, per_step, epochs, steps", [
    (1, 1, 3, 3), (8, 2, 3, 12), (16, 2, 3, 24), (64, 4, 3, 48), (128, 8, 2, 32), (256, 8, 1, 32),
    (1024, 8, 0.25, 32)])
def test_grpo_prompt_rule(n, per_step, epochs, steps):
    """GRPO's rows are prompts sampled G times a visit: about 3 visits each, at most about 256 visits
    (a run stays in minutes on a CPU), 2-8 prompts a step; the step counts are what the docs table says."""
    g, p, c = 8, 40, 16
    s = schedule.resolve(loop(), 5e-5, [g * (p + c)] * n, prompts=True)
    assert s.examples_per_step == per_step and s.epochs == epochs and s.lr == 5e-5
    assert s.batch_tokens == per_step * g * (p + c) and set(s.auto) == {"lr", "batch_tokens", "epochs"}
    assert round(n * epochs / per_step) == steps


def test_grpo_rule_keeps_what_the_user_set():
    s = schedule.resolve(loop(epochs=2, batch_tokens=4096), 5e-5, [512] * 64, prompts=True)
    assert s.epochs == 2 and s.batch_tokens == 4096 and s.auto == ["lr"]
    assert schedule.resolve(loop(max_steps=5), 5e-5, [512] * 64, prompts=True).epochs is None


def test_usual_learning_rate_per_method():
    """Declared beside each objective (train/objectives/); lr: auto takes the run's."""
    assert schedule.resolve(loop(), _usual("full"), [10] * 40).lr == 2e-5
    for m in ("lora", "dora", "qlora"):
        assert schedule.resolve(loop(), _usual(m), [10] * 40).lr == 2e-4
    assert [_usual(m) for m in ("dpo", "orpo")] == [5e-5, 5e-5]  # preference with an adapter
    assert [_usual(m, "dora") for m in ("dpo", "orpo")] == [5e-5, 5e-5]
    assert [_usual(m, "full") for m in ("dpo", "orpo")] == [5e-7, 8e-6]  # with full weights: TRL's, the ORPO paper's


def test_values_the_user_set_win_and_are_not_called_automatic():
    s = schedule.resolve(loop(epochs=2, lr=1e-3, batch_tokens=1024, grad_accum=2), LORA_LR, [40] * 100)
    assert (s.epochs, s.lr, s.batch_tokens, s.grad_accum) == (2.0, 1e-3, 1024, 2) and s.auto == []
    assert schedule.resolve(loop(max_steps=7), LORA_LR, [40] * 100).epochs is None


def test_epochs_follow_a_user_batch_when_only_epochs_are_automatic():
    # 100 rows of 40 tokens in 400-token steps: 10 examples a step -> ceil(64 * 10 / 100) = 7 epochs
    s = schedule.resolve(loop(batch_tokens=400), LORA_LR, [40] * 100)
    assert s.epochs == 7 and s.auto == ["lr", "epochs"]


def test_gpu_memory_budget_splits_the_step_into_micro_batches():
    lengths = [300] * 2000  # B = 32: a 9600-token step
    s = schedule.resolve(loop(), LORA_LR, lengths, memory_budget=4000)
    assert s.batch_tokens == 4000 and s.grad_accum == 3 and "grad_accum" in s.auto
    roomy = schedule.resolve(loop(), LORA_LR, lengths, memory_budget=100_000)
    assert roomy.batch_tokens == 9600 and roomy.grad_accum == 1


def test_a_step_holds_at_least_the_longest_row():
    s = schedule.resolve(loop(), LORA_LR, [10] * 99 + [900])
    assert s.batch_tokens >= 900


def test_a_run_with_no_training_keys_trains_for_dozens_of_steps(tiny_dir, tmp_path):
    """End to end: 16 rows, nothing set -> 16 epochs of ~4 steps, lr 2e-4, and the summary says why."""
    from tunelab.train.loop import train

    rows = [{"prompt": f"Say the number {i}.", "completion": str(i)} for i in range(16)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = train({"model": str(tiny_dir), "data": {"train": str(data), "eval": None}, "out": str(tmp_path / "run")})
    s = res.summary
    assert s["schedule"]["epochs"] == 16 and s["schedule"]["examples_per_step"] == 4
    assert s["schedule"]["auto"] == ["lr", "batch_tokens", "epochs"] and s["schedule"]["lr"] == 2e-4
    assert s["steps"] >= 48  # 4-ish packed steps per epoch, 16 epochs
    lrs = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(lrs) == pytest.approx(2e-4)
    # config.yaml keeps "auto": a resume recomputes the same schedule from the same data
    assert "epochs: auto" in (tmp_path / "run" / "config.yaml").read_text()
