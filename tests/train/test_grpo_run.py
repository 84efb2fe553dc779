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
    from tunelab.infer.rollout import sample

    items = prompts or [Prompt(f"Question {i}: say something", {"answer": "x"}, f"prompt {i}") for i in range(n)]
    return {"prompts": lambda source: items, "rollout": sample,
            "rewards": rewards or [Reward("vowels", 1.0, vowel_share)]}


def grpo_config(make_config, name="grpo", steps=12, lr=1e-2, **grpo):
    settings = {"num_generations": 8, "max_completion_length": 8, "temperature": 1.0, **grpo}
    return make_config(name, method="grpo", grpo=settings, lora={"r": 8, "alpha": 16, "dropout": 0.0},
                       data={"eval": None, "max_length": 64},
                       # 6 prompts of 15 tokens per step, each fed once with its 8 completions of <= 8 tokens
                       train={"max_steps": steps, "batch_tokens": 6 * (15 + 8 * 8), "lr": lr, "warmup": 0,
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
    from tunelab.train import files

    documented = set(files.METRICS_KEYS) | {k.replace("NAME", "vowels") for k in files.GRPO_METRICS_KEYS}
    assert set(got[0]) - documented == set()  # docs/run-folder.md names every key a GRPO line has
    samples = [json.loads(line) for line in (result.run_dir / "completions.jsonl").read_text().splitlines()]
    assert samples and {"step", "prompt", "completion", "reward", "advantage"} <= set(samples[0])


STEP_KEYS = ("loss", "grad_norm", "reward", "kl", "entropy", "clip_ratio/region_mean")


def steps(run_dir):
    return [{k: r.get(k) for k in ("step", *STEP_KEYS)} for r in rows(run_dir)]


def test_interrupted_run_resumes_exactly_between_two_uses_of_a_batch(make_config, tiny_dir, monkeypatch):
    """LoRA with the KL to the adapter-off reference and two optimizer steps per generation batch;
    Ctrl-C during step 3 (the first use of batch 1) saves step 3, and the resumed run's step 4 reuses
    that batch: every logged figure equals the uninterrupted run's."""
    from tunelab.train.loop import TrainingInterrupted, train

    settings = dict(steps=6, lr=5e-3, beta=0.04, num_iterations=2, epsilon_high=0.28)
    straight = train(grpo_config(make_config, "straight", **settings), providers=providers(tiny_dir))
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@3")
    cfg = grpo_config(make_config, "cut", **settings)
    with pytest.raises(TrainingInterrupted):
        train(cfg, providers=providers(tiny_dir))
    monkeypatch.delenv("TUNELAB_FAULT")
    resumed = train(cfg, resume=True, providers=providers(tiny_dir))
    assert steps(resumed.run_dir) == steps(straight.run_dir)
    got = rows(straight.run_dir)
    assert [r["generation_use"] for r in got] == [r["generation_use"] for r in rows(resumed.run_dir)] == [1, 2] * 3
    assert all(r["kl"] >= 0 for r in got) and got[1]["kl"] > 0  # the adapter moved away from the base
    samples = (resumed.run_dir / "completions.jsonl").read_text()
    assert samples == (straight.run_dir / "completions.jsonl").read_text()
    # summary.json's GRPO totals cover both launches (grpo_totals.json at the checkpoint), not the last one
    counts = ("generations", "completions_generated", "generated_tokens", "reward_start", "reward_end",
              "frac_reward_zero_std", "completions_clipped_ratio")
    assert {k: resumed.summary[k] for k in counts} == {k: straight.summary[k] for k in counts}
    assert resumed.summary["generations"] == 3


@pytest.mark.parametrize("grpo, message", [
    ({"num_generations": 1}, "grpo.num_generations: must be at least 2"),
    ({"beta": 0.1, "weights": "full"}, "grpo.beta > 0 with grpo.weights: full needs a second copy"),
    ({"max_completion_length": 64}, r"data.max_length \(64\) leaves no room for a prompt"),
    ({"data": {"eval": "held.jsonl"}}, r"data.eval: held.jsonl is not used by method: grpo"),
])
def test_bad_settings_are_one_line(make_config, tiny_dir, grpo, message):
    from tunelab.train.loop import train

    cfg = grpo_config(make_config, **{k: v for k, v in grpo.items() if k != "data"})
    cfg["data"].update(grpo.get("data", {}))
    with pytest.raises(TunelabError, match=message) as e:
        train(cfg, providers=providers(tiny_dir))
    assert "\n" not in str(e.value)


def test_missing_provider_is_named(make_config):
    from tunelab.train.loop import train

    with pytest.raises(TunelabError, match=r"method: grpo needs prompts, rollout, rewards passed to train"):
        train(grpo_config(make_config))


def test_a_reward_that_raises_names_itself_and_the_completion(make_config, tiny_dir):
    from tunelab.train.loop import train

    def broken(completion, item):
        return 1 / 0

    with pytest.raises(TunelabError, match=r"^grpo reward broken raised ZeroDivisionError: division by zero on the "
                                           r"completion '.*' of prompt \d+; fix the reward or the task$"):
        train(grpo_config(make_config, steps=1), providers=providers(tiny_dir, rewards=[Reward("broken", 1.0, broken)]))


def test_a_prompt_without_room_is_an_error_or_skipped(make_config, tiny_dir):
    from tunelab.train.loop import train

    long = Prompt("word " * 80, None, "prompts.jsonl line 3")
    items = [Prompt(f"Question {i}", None, f"line {i}") for i in range(4)] + [long]
    with pytest.raises(TunelabError, match=r"^prompts.jsonl line 3: \d+ prompt tokens, but data.max_length 64 "
                                           r"leaves 56 beside grpo.max_completion_length 8; .*data.skip_bad=true"):
        train(grpo_config(make_config, steps=1), providers=providers(tiny_dir, prompts=items))
    cfg = grpo_config(make_config, "skip", steps=1)
    cfg["data"]["skip_bad"] = True
    res = train(cfg, providers=providers(tiny_dir, prompts=items))
    assert res.summary["skipped"]["count"] == 1


def test_rewards_equal_in_every_group_warn_of_no_learning_signal(make_config, tiny_dir, caplog):
    import logging

    from tunelab.train.loop import train
    from tunelab.train.objectives.grpo import FLAT_STEPS

    flat = [Reward("constant", 1.0, lambda completion, item: 1.0)]
    with caplog.at_level(logging.INFO, logger="tunelab.train"):
        res = train(grpo_config(make_config, steps=FLAT_STEPS), providers=providers(tiny_dir, rewards=flat))
    assert [r["frac_reward_zero_std"] for r in rows(res.run_dir)] == [1.0] * FLAT_STEPS
    assert all(r["loss"] == 0 and r["grad_norm"] == 0 for r in rows(res.run_dir))  # advantages are all 0
    warned = [m for m in caplog.messages if "no learning signal" in m]
    assert warned == [f"warning: at step {FLAT_STEPS}, 100% of the prompt groups got equal rewards for {FLAT_STEPS} "
                      "generation batches in a row: no learning signal; use a graded reward, more "
                      "grpo.num_generations or a higher grpo.temperature (docs/training.md, GRPO)"]


@pytest.mark.parametrize("grpo", [
    {"weights": "dora", "loss_type": "grpo", "scale_rewards": "batch"},
    {"loss_type": "bnpo", "mask_truncated_completions": True, "top_p": 0.9},
    {"loss_type": "dr_grpo", "scale_rewards": "none", "temperature": 0.7},
])
def test_weights_and_loss_settings_train(make_config, tiny_dir, grpo):
    """Every weights kind and loss setting runs a step that moves the weights; a truncated completion
    (all are, at 8 tokens) gets no loss when mask_truncated_completions says so."""
    from tunelab.train.loop import train

    res = train(grpo_config(make_config, steps=2, **grpo), providers=providers(tiny_dir))
    got = rows(res.run_dir)
    assert len(got) == 2
    if grpo.get("mask_truncated_completions"):
        assert [r["completions/clipped_ratio"] for r in got] == [1.0, 1.0]  # no end token within 8 tokens
        assert all(r["loss"] == 0 and r["grad_norm"] == 0 for r in got)
    else:
        assert all(r["grad_norm"] > 0 for r in got)
    meta = json.loads((res.run_dir / "adapter" / "tunelab_adapter.json").read_text())
    assert meta["method"] == grpo.get("weights", "lora") and meta["objective"] == "grpo"


def test_each_step_of_the_plan_serves_num_iterations_steps():
    """RunData.repeat: a step's micro-batches serve `repeat` steps in a row, the short last step too."""
    from types import SimpleNamespace

    from tunelab.train.state import RunData

    data = RunData([], [], [10] * 5, SimpleNamespace(batch_tokens=10), seed=0, packing=False, per_step=2, repeat=2)
    plan = data.plan(0)
    assert len(plan) == 5 and data.steps_in_epoch(0) == 6
    got = [data.step_batches(0, k) for k in range(7)]
    assert got == [plan[0:2], plan[0:2], plan[2:4], plan[2:4], plan[4:], plan[4:], []]
