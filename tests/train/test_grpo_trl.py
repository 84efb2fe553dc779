"""Parity with TRL's GRPOTrainer: one step's log-probs, advantages, loss, KL, statistics and gradients.

Checked against TRL 1.16.0 (`pip install trl==1.16.0 datasets`, the `test` extra) with transformers
5.25 and PEFT 0.21 on the tiny model with a random LoRA (so the policy differs from the reference, the
base with the adapter off). Fixed prompts, completions and rewards go through TRL's own step:

- `rollout_func` (a GRPOTrainer argument, marked experimental in 1.16) returns our fixed token ids in
  place of generation; the reward functions return fixed rewards read from the input rows;
- `GRPOTrainer._generate_and_score_completions(rows)` (private) builds the inputs dict: padded ids and
  masks, advantages, old and reference log-probs, and logs the reward statistics;
- `GRPOTrainer._get_per_token_logps_and_entropies` (private) gives TRL's per-token log-probs;
- `GRPOTrainer.compute_loss(model, inputs)` gives the loss and logs kl, entropy and clip ratios in
  `trainer._metrics["eval"]` (the model is in eval mode: no dropout, no accumulation scaling);
- for gradient accumulation, `trl.trainer.utils.split_tensor_dict` splits the inputs into micro-batches
  and `trainer.current_gradient_accumulation_steps` (set by transformers' Trainer loop) is set by hand.

Clipping is made active by perturbing the old log-probs of a num_iterations > 1 step (TRL computes
them at generation, where they equal the current ones). Tolerance 1e-5.

TRL issue #3739 (GRPO hangs on CPU) does not reproduce here: calling the loss directly takes well
under a second, and a whole `GRPOTrainer.train()` with generation on this tiny model on CPU (Linux,
torch 2.13, TRL 1.16.0) ran 2 steps in 0.4 s; the issue was filed against TRL 0.19.1 on Windows.
"""
from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from tunelab.train.grpo_math import (  # noqa: E402
    GRPOLossSettings, LossNorms, collate_completions, completion_logps, grpo_loss, group_advantages,
)

TOL = 1e-5
G = 4
MAX_COMPLETION = 10
PROMPTS = ["What is 2 plus 3?", "Reverse the words: Hello, world!", "Convert the date March 5, 2021 to ISO format."]
# per prompt, G completions; "$" marks one that ended with the end-of-turn token (the others are cut at
# MAX_COMPLETION tokens: truncated)
COMPLETIONS = [
    ["The answer is 5.$", "5$", "The answer is 6, maybe. The quick brown fox", "yes$"],
    ["world! Hello,$", "Hello$", "Hello, world! Hello, world! Hello, world!", "no$"],
    ["2021-03-05$", "03/05/2021$", "March 5, 2021 is the answer, yes yes yes", "2021$"],
]
# two reward functions, weighted 1.0 and 0.5; the second prompt's rewards are all equal (no signal)
REWARDS = [
    [(1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.5, 0.0)],
    [(0.2, 0.4), (0.2, 0.4), (0.2, 0.4), (0.2, 0.4)],
    [(1.0, 1.0), (0.0, 1.0), (0.0, 0.0), (0.0, 1.0)],
]
WEIGHTS = [1.0, 0.5]

# (name, GRPOConfig keywords beyond the loss type); "perturb" makes the old log-probs differ from the
# current ones, so ratios leave [1 - ε, 1 + ε_high] and clipping acts
SETUPS = {
    "on_policy": dict(beta=0.0, num_iterations=1),
    "on_policy_kl": dict(beta=0.04, num_iterations=1, scale_rewards="none"),
    "clipped": dict(beta=0.0, num_iterations=2, perturb=True, epsilon_high=0.28, mask_truncated_completions=True),
    "clipped_kl": dict(beta=0.1, num_iterations=3, perturb=True, delta=1.5, temperature=0.7, scale_rewards="batch"),
    "clipped_kl_plain": dict(beta=0.1, num_iterations=2, perturb=True, use_bias_correction_kl=False,
                             mask_truncated_completions=True, scale_rewards=False),
}


def _rollouts(tokenizer):
    """(prompt ids, completion ids, truncated flags, rewards (N, 2)) in TRL's order: G rows per prompt."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    prompts, completions, truncated, rewards = [], [], [], []
    for prompt, texts, group in zip(PROMPTS, COMPLETIONS, REWARDS):
        for text, reward in zip(texts, group):
            ended = text.endswith("$")
            ids = tokenizer(text.rstrip("$"), add_special_tokens=False)["input_ids"]
            ids = ids[:MAX_COMPLETION - 1] + [eos] if ended else ids[:MAX_COMPLETION]
            assert ended or len(ids) == MAX_COMPLETION, "a truncated completion fills the length"
            prompts.append(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            completions.append(ids)
            truncated.append(not ended)
            rewards.append(reward)
    return prompts, completions, truncated, torch.tensor(rewards)


@pytest.fixture(autouse=True)
def _quiet_trl(monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func's experimental-API warning


def _trl_step(tiny_dir, tmp_path, loss_type: str, setup: dict, *, train_mode: bool = False):
    """TRL's trainer over the tiny model + a random LoRA, its inputs dict for the fixed rollouts, and the rollouts.

    The model is in eval mode unless train_mode (TRL then scales for accumulation; no dropout either way).
    """
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    rollouts = _rollouts(tokenizer)
    prompt_ids, completion_ids = rollouts[0], rollouts[1]
    keys = {k: v for k, v in setup.items() if k != "perturb"}
    micro_batches = setup.get("gradient_accumulation_steps", 1)
    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, bf16=False, loss_type=loss_type,
                      num_generations=G, per_device_train_batch_size=len(prompt_ids) // micro_batches,
                      max_completion_length=MAX_COMPLETION, reward_weights=WEIGHTS, **keys)

    def rollout(prompts, trainer):  # the fixed completions in place of generation
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    def first(completions, r1, **_):
        return r1

    def second(completions, r2, **_):
        return r2

    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    dataset = datasets.Dataset.from_list([{"prompt": p} for p in PROMPTS])
    trainer = GRPOTrainer(model=base, reward_funcs=[first, second], args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, rollout_func=rollout)
    model = trainer.model
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)  # a policy near the reference, as a few steps of training leave it
    model.train(train_mode)
    rewards = rollouts[3]
    rows = [{"prompt": PROMPTS[i // G], "r1": float(rewards[i, 0]), "r2": float(rewards[i, 1])}
            for i in range(len(prompt_ids))]
    inputs = trainer._generate_and_score_completions(rows)
    if setup.get("perturb"):
        assert "old_per_token_logps" in inputs, "num_iterations > 1: TRL keeps the old log-probs"
        noise = torch.randn(inputs["completion_ids"].shape, generator=torch.Generator().manual_seed(1)) * 0.3
        inputs["old_per_token_logps"] = inputs["old_per_token_logps"] + noise * inputs["completion_mask"]
    return trainer, model, inputs, rollouts


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _check_logps(trainer, model, inputs, batch, cfg):
    """Per-token log-probs and entropies of the policy, and the reference's (the adapter off), equal TRL's."""
    temperature = cfg.get("temperature", 1.0)
    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        trl_logps, trl_entropy, _ = trainer._get_per_token_logps_and_entropies(
            model, input_ids, attention, inputs["completion_ids"].shape[1], compute_entropy=True)
        with model.disable_adapter():
            ref, _ = completion_logps(model, batch, temperature=temperature)
    logps, entropy = completion_logps(model, batch, temperature=temperature, entropy=True)
    m = batch.mask
    assert m.sum() > 20
    torch.testing.assert_close(logps.detach(), trl_logps, atol=TOL, rtol=0)
    torch.testing.assert_close(entropy * m, trl_entropy * m, atol=TOL, rtol=0)
    if cfg["beta"]:
        torch.testing.assert_close(ref, inputs["ref_per_token_logps"], atol=TOL, rtol=0)
        assert (ref - logps.detach()).abs().max() > 1e-2, "the policy differs from the reference"
    else:
        assert "ref_per_token_logps" not in inputs
    return logps, entropy, ref


def _check_advantages(trainer, inputs, rewards, cfg):
    """Advantages equal TRL's, and so do the reward statistics it logged."""
    adv = group_advantages(rewards, G, scale_rewards=cfg.get("scale_rewards", "group"), weights=WEIGHTS,
                           names=["first", "second"])
    torch.testing.assert_close(adv.values, inputs["advantages"], atol=TOL, rtol=0)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    for key in ("reward", "reward_std", "rewards/first/mean", "rewards/first/std", "rewards/second/mean",
                "rewards/second/std"):
        assert adv.stats[key] == pytest.approx(logged[key], abs=TOL), key
    # one group of three has equal rewards; under "batch" TRL logs whether the whole batch's are equal
    assert adv.stats["frac_reward_zero_std"] == pytest.approx(1 / 3)
    if cfg.get("scale_rewards", "group") != "batch":
        assert logged["frac_reward_zero_std"] == pytest.approx(1 / 3)
    return adv


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_grpo_step_equals_trl(tiny_dir, tmp_path, loss_type, setup):
    cfg = SETUPS[setup]
    trainer, model, inputs, (prompts, completions, truncated, rewards) = _trl_step(tiny_dir, tmp_path, loss_type, cfg)
    masked = truncated if cfg.get("mask_truncated_completions") else None
    batch = collate_completions(prompts, completions, truncated=masked)
    assert int(batch.doc_ids.max()) + 1 == len(prompts) // G, "each prompt's group shares one copy of its prompt"
    torch.testing.assert_close(batch.mask.long(), inputs["completion_mask"], atol=0, rtol=0)
    logps, entropy, ref = _check_logps(trainer, model, inputs, batch, cfg)
    adv = _check_advantages(trainer, inputs, rewards, cfg)

    # the loss, its gradient and the statistics TRL logs with it
    settings = GRPOLossSettings(loss_type=loss_type, epsilon=0.2, epsilon_high=cfg.get("epsilon_high"),
                                delta=cfg.get("delta"), beta=cfg["beta"],
                                kl_ratio_correction=cfg.get("use_bias_correction_kl", True),
                                max_completion_length=MAX_COMPLETION)
    trl_loss = trainer.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)
    logged = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    old = inputs["old_per_token_logps"] if cfg.get("perturb") else None
    loss, stats = grpo_loss(logps, batch.mask, adv.values, settings, old_logps=old,
                            ref_logps=ref if cfg["beta"] else None, entropies=entropy)
    assert float(loss.detach()) == pytest.approx(float(trl_loss.detach()), abs=TOL)
    loss.backward()
    ours = _grads(model)
    assert ours.keys() == trl_grads.keys() and ours
    for name, g in ours.items():
        torch.testing.assert_close(g, trl_grads[name], atol=TOL, rtol=1e-4, msg=name)
    means = stats.means()
    for key in ["entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                "clip_ratio/low_min", "clip_ratio/high_max"] + (["kl"] if cfg["beta"] else []):
        assert means[key] == pytest.approx(logged[key], abs=TOL), key
    assert ("kl" in means) == bool(cfg["beta"])
    if cfg.get("perturb"):
        assert means["clip_ratio/low_mean"] > 0 and means["clip_ratio/high_mean"] > 0, "clipping acts"


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_accumulated_micro_batches_equal_trl(tiny_dir, tmp_path, loss_type):
    """A step of two micro-batches (gradient_accumulation_steps=2, train mode): LossNorms over the whole step
    give TRL's summed gradient, whose normalisation differs per loss type (dapo: the generation batch's tokens;
    bnpo: each micro-batch's own tokens; grpo, dr_grpo: divided by the accumulation steps)."""
    from trl.trainer.utils import split_tensor_dict

    setup = dict(beta=0.04, gradient_accumulation_steps=2)
    trainer, model, inputs, (prompts, completions, _, rewards) = _trl_step(tiny_dir, tmp_path, loss_type, setup,
                                                                          train_mode=True)
    trainer.current_gradient_accumulation_steps = 2  # set by Trainer's loop for each accumulation window
    for half in split_tensor_dict(inputs, 2):  # TRL's own split of a generation batch (unshuffled here)
        trainer.compute_loss(model, half).backward()
    trl_grads = _grads(model)

    adv = group_advantages(rewards, G, weights=WEIGHTS).values
    norms = LossNorms(seqs=len(prompts), tokens=int(inputs["completion_mask"].sum()), micro_batches=2)
    settings = GRPOLossSettings(loss_type=loss_type, beta=0.04, max_completion_length=MAX_COMPLETION)
    half = len(prompts) // 2
    for rows in (slice(0, half), slice(half, None)):
        batch = collate_completions(prompts[rows], completions[rows])
        logps, _ = completion_logps(model, batch)
        with torch.no_grad(), model.disable_adapter():
            ref, _ = completion_logps(model, batch)
        loss, _ = grpo_loss(logps, batch.mask, adv[rows], settings, ref_logps=ref, norms=norms)
        loss.backward()
    ours = _grads(model)
    assert ours.keys() == trl_grads.keys() and ours
    for name, g in ours.items():
        torch.testing.assert_close(g, trl_grads[name], atol=TOL, rtol=1e-4, msg=name)
