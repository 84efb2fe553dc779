"""summary.json's GRPO totals (train/rollouts.py Totals, files.GRPO_SUMMARY_KEYS): counted by hand on
two batches, then on a tiny-model run against what the rollout function really returned and what
metrics.jsonl logged, and unchanged when train.log_every thins metrics.jsonl."""
from __future__ import annotations

import json

import pytest

from tunelab.train.rollouts import Prompt, Reward, Rollout, Totals

G = 4


def _rollouts(lengths, truncated):
    return [Rollout([1], [7] * n, "x" * n, t) for n, t in zip(lengths, truncated)]


def test_totals_by_hand(tmp_path):
    t = Totals()
    t.add_batch({"reward": 0.2, "frac_reward_zero_std": 0.5}, 2, _rollouts([3, 4, 5, 6], [0, 0, 1, 1]))
    t.add_batch({"reward": 0.6, "frac_reward_zero_std": 0.0}, 1, _rollouts([2, 2], [0, 1]))
    t.generate_s, t.optimize_s = 2.0, 1.0
    s = t.summary()
    assert s["generations"] == 2 and s["completions_generated"] == 6 and s["generated_tokens"] == 22
    assert s["generated_tokens_per_s"] == 11.0
    assert s["frac_reward_zero_std"] == pytest.approx(1 / 3)  # 1 flat group of 3
    assert s["completions_clipped_ratio"] == pytest.approx(3 / 6)
    assert (s["reward_window"], s["reward_start"], s["reward_end"]) == (1, 0.2, 0.6)  # 2 batches: 1 each side
    for _ in range(10):
        t.add_batch({"reward": 1.0, "frac_reward_zero_std": 1.0}, 1, _rollouts([1, 1], [0, 0]))
    s = t.summary()
    assert s["reward_window"] == 5 and s["reward_start"] == pytest.approx((0.2 + 0.6 + 3) / 5) and s["reward_end"] == 1.0
    assert Totals().summary()["reward_start"] is None and Totals().summary()["frac_reward_zero_std"] is None

    path = tmp_path / "grpo_totals.json"
    for step in (4, 8, 12):
        Totals.write(path, step, Totals(generations=step))
    Totals.write(path, 8, Totals(generations=80))  # a resumed run rewrites step 8 and drops what came after
    assert sorted(json.loads(path.read_text())) == ["4", "8"]
    assert Totals.read(path, 8).generations == 80 and Totals.read(path, 12) is None
    assert Totals.read(tmp_path / "absent.json", 4) is None


VOWELS = set("aeiou")


def vowels(completion: str, item) -> float:
    letters = [c for c in completion if c.isalpha()]
    return sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0


def has_e(completion: str, item) -> float:
    """Often equal within a group: the share of equal-reward groups is not trivially 0."""
    return float("e" in completion)


class Spy:
    """The engine's rollout function, counting what it returned, call by call."""

    def __init__(self):
        self.calls: list[tuple[int, int]] = []  # (completions, generated tokens)

    def __call__(self, model, tokenizer, texts, seeds, sampling):
        from tunelab.infer.rollout import sample

        out = sample(model, tokenizer, texts, seeds, sampling)
        self.calls.append((len(out), sum(len(o.completion_ids) for o in out)))
        return out


def _run(make_config, name, spy, **train):
    from tunelab.train.loop import train as run

    cfg = make_config(name, method="grpo", lora={"r": 8, "alpha": 16, "dropout": 0.0},
                      grpo={"num_generations": G, "max_completion_length": 8, "num_iterations": 2},
                      data={"eval": None, "max_length": 64},
                      # 5 of the 7 prompts (15 tokens, G completions of <= 8) per micro-batch: steps of 5 and 2
                      train={"max_steps": 8, "batch_tokens": 5 * (15 + G * 8), "lr": 5e-3, "warmup": 0, "save_every": 4,
                             "eval_every": 100, "schedule": "constant", **train})
    items = [Prompt(f"Question {i}: say something", None, f"prompt {i}") for i in range(7)]
    return run(cfg, providers={"prompts": lambda source: items, "rollout": spy,
                               "rewards": [Reward("vowels", 1.0, vowels), Reward("has_e", 0.5, has_e)]})


COUNTS = ("generations", "completions_generated", "generated_tokens", "reward_start", "reward_end", "reward_window",
          "frac_reward_zero_std", "completions_clipped_ratio")


def test_summary_totals_match_the_rollouts_and_metrics(make_config):
    from tunelab.train import files

    spy = Spy()
    res = _run(make_config, "grpo", spy)
    s = json.loads((res.run_dir / "summary.json").read_text())
    # `judge` comes with a judge_score reward only (tests/train/test_grpo_judge.py); this run has none
    assert set(s) == set(files.SUMMARY_KEYS) | set(files.GRPO_SUMMARY_KEYS) - {"judge"}
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    first = [r for r in rows if r["generation_use"] == 1]  # each generation batch's stats, once
    n = [c for c, _ in spy.calls]
    assert len(first) == len(spy.calls) == s["generations"] == 4  # 8 steps, 2 per batch
    assert s["completions_generated"] == sum(n) and len(set(n)) > 1  # the plan's steps differ in size
    assert s["generated_tokens"] == sum(t for _, t in spy.calls)
    assert s["generated_tokens"] == round(sum(r["completions/mean_length"] * k for r, k in zip(first, n)))
    assert s["frac_reward_zero_std"] == pytest.approx(
        sum(r["frac_reward_zero_std"] * k for r, k in zip(first, n)) / sum(n))
    assert s["completions_clipped_ratio"] == pytest.approx(
        sum(r["completions/clipped_ratio"] * k for r, k in zip(first, n)) / sum(n))
    assert s["reward_window"] == 2
    assert s["reward_start"] == pytest.approx((first[0]["reward"] + first[1]["reward"]) / 2)
    assert s["reward_end"] == pytest.approx((first[2]["reward"] + first[3]["reward"]) / 2)
    assert s["generate_s"] == pytest.approx(sum(r["generate_s"] for r in rows), abs=2e-3)
    assert s["optimize_s"] == pytest.approx(sum(r["optimize_s"] for r in rows), abs=2e-3)
    assert s["generate_s"] > 0 and s["optimize_s"] > 0
    assert (res.run_dir / "grpo_totals.json").is_file()

    thinned = _run(make_config, "thinned", Spy(), log_every=3)  # metrics.jsonl keeps steps 3, 6, 8
    assert len((thinned.run_dir / "metrics.jsonl").read_text().splitlines()) == 3
    assert {k: thinned.summary[k] for k in COUNTS} == {k: s[k] for k in COUNTS}
