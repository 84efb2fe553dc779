"""method: grpo end to end on the tiny model: the reward rises, a resumed run equals an uninterrupted
one, bad inputs are one line. The rollout function is the engine's (infer.rollout) and the rewards are
plain functions, passed in as the CLI passes them (train/ imports neither)."""
from __future__ import annotations

import json

import pytest

from tunelab.errors import TunelabError
from tunelab.train.rollouts import Prompt, Reward

VOWELS = set("aeiouAEIOU")


def vowel_share(completion: str, item) -> float:
    """A graded reward a tiny random model can learn: the share of the completion's letters that are vowels."""
    letters = [c for c in completion if c.isalpha()]
    return sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0


def providers(tiny_dir, *, n: int = 8, rewards=None, prompts=None):
    from transformers import AutoTokenizer

    from tunelab.infer.rollout import rollout_function

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    items = prompts or [Prompt(f"Question {i}: say something", {"answer": "x"}, f"prompt {i}") for i in range(n)]
    return {"prompts": lambda source: items, "rollout": rollout_function(tok),
            "rewards": rewards or [Reward("vowels", 1.0, vowel_share)]}


def grpo_config(make_config, name="grpo", steps=12, lr=1e-2, **grpo):
    settings = {"num_generations": 8, "max_completion_length": 8, "temperature": 1.0, **grpo}
    return make_config(name, method="grpo", grpo=settings, lora={"r": 8, "alpha": 16, "dropout": 0.0},
                       data={"eval": None, "max_length": 64},
                       train={"max_steps": steps, "batch_tokens": 4 * 8 * 40, "lr": lr, "warmup": 0,
                              "save_every": 4, "eval_every": 100, "schedule": "constant"})


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reward_rises(make_config, tiny_dir):
    from tunelab.train.loop import train

    # full weights: the tiny random model's logits sit behind a norm and a small head that LoRA leaves alone
    result = train(grpo_config(make_config, steps=30, lr=1e-2, weights="full"), providers=providers(tiny_dir))
    got = rows(result.run_dir)
    rewards = [r["reward"] for r in got]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.15, rewards  # about 0.29 at the start
    for key in ("reward_std", "frac_reward_zero_std", "rewards/vowels/mean", "clip_ratio/region_mean", "entropy",
                "completions/mean_length", "completions/clipped_ratio", "generate_s", "optimize_s"):
        assert key in got[0], key
    samples = [json.loads(line) for line in (result.run_dir / "completions.jsonl").read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "reward", "advantage"} <= set(samples[0])
