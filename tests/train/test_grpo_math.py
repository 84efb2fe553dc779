"""GRPO's arithmetic by hand: the on-policy gradient, each loss type's denominator, advantages, bad inputs, chunking.

The parity with TRL's GRPOTrainer is tests/train/test_grpo_trl.py.
"""
from __future__ import annotations

import pytest
import torch

from tunelab.train.grpo_math import (
    GRPOLossSettings, LossNorms, StepStats, collate_completions, completion_logps, grpo_loss, group_advantages,
)


def test_on_policy_ratio_is_one_with_the_policy_gradient():
    """num_iterations == 1: ρ = 1, no clipping, and the gradient is -A ∇log π per token (before the mean)."""
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([0.5, -2.0])
    loss, stats = grpo_loss(logps, mask, adv, GRPOLossSettings(loss_type="dapo"))
    assert loss.item() == pytest.approx(-(0.5 * 3 - 2.0 * 2) / 5)
    loss.backward()
    expected = torch.tensor([[-0.1, -0.1, -0.1], [0.4, 0.4, 0.0]])
    torch.testing.assert_close(logps.grad, expected)
    assert stats.means()["clip_ratio/region_mean"] == 0.0 and stats.tokens == 5


def test_loss_types_normalise_by_hand():
    """Token losses of 1 everywhere scored, read through each loss type's denominator."""
    logps = torch.zeros(2, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    adv = torch.tensor([-1.0, -1.0])  # ρ = 1: each scored token's loss is -ρA = 1
    want = {"grpo": (1 + 1) / 2, "bnpo": 5 / 5, "dr_grpo": 5 / (2 * 8), "dapo": 5 / 5}
    for loss_type, value in want.items():
        settings = GRPOLossSettings(loss_type=loss_type, max_completion_length=8)
        assert float(grpo_loss(logps, mask, adv, settings)[0]) == pytest.approx(value), loss_type
    # two micro-batches of one step: global denominators make the shares sum to the whole step's loss
    norms = LossNorms(seqs=4, tokens=10, micro_batches=2)
    for loss_type in want:
        settings = GRPOLossSettings(loss_type=loss_type, max_completion_length=8)
        whole = grpo_loss(torch.zeros(4, 4), torch.cat([mask, mask]), adv.repeat(2), settings)[0]
        halves = sum(grpo_loss(logps, mask, adv, settings, norms=norms)[0] for _ in range(2))
        assert float(halves) == pytest.approx(float(whole)), loss_type


def test_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0])
    adv = group_advantages(rewards, 4, scale_rewards="none")
    torch.testing.assert_close(adv.values, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]))
    assert adv.stats["frac_reward_zero_std"] == 0.5
    std = float(torch.tensor([1.0, 0.0, 0.0, 0.0]).std())  # Bessel: sqrt(0.25)
    scaled = group_advantages(rewards, 4)  # "group" is the default, as in TRL
    assert float(scaled.values[0]) == pytest.approx(0.75 / (std + 1e-4))
    assert group_advantages(rewards, 4, scale_rewards=True).values.equal(scaled.values)


@pytest.mark.parametrize("bad, message", [
    (dict(num_generations=1), "at least 2"),
    (dict(num_generations=3), "groups of 3"),
    (dict(scale_rewards="std"), "scale_rewards must be one of"),
    (dict(rewards=torch.tensor([1.0, float("nan"), 0.0, 0.0])), "NaN"),
    (dict(weights=[1.0, 2.0]), "2 reward weights for 1"),
])
def test_bad_advantage_inputs(bad, message):
    kwargs = dict(rewards=torch.tensor([1.0, 0.0, 0.0, 1.0]), num_generations=2) | bad
    with pytest.raises(ValueError, match=message):
        group_advantages(kwargs.pop("rewards"), kwargs.pop("num_generations"), **kwargs)


def test_bad_loss_settings():
    with pytest.raises(ValueError, match="loss_type must be one of"):
        GRPOLossSettings(loss_type="ppo")
    with pytest.raises(ValueError, match="delta must exceed"):
        GRPOLossSettings(epsilon_high=0.28, delta=1.2)
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), torch.ones(1), GRPOLossSettings(beta=0.1))


def test_stats_merge_across_micro_batches():
    a = StepStats(tokens=4, kl=0.4, entropy=8.0, clip_low=1, clip_high=0, clip_low_min=0.0, clip_high_max=0.0)
    b = StepStats(tokens=6, kl=0.2, entropy=6.0, clip_low=0, clip_high=3, clip_low_min=0.0, clip_high_max=0.5)
    means = a.merge(b).means()
    assert means["kl"] == pytest.approx(0.06) and means["entropy"] == pytest.approx(1.4)
    assert means["clip_ratio/region_mean"] == pytest.approx(0.4) and means["clip_ratio/high_max"] == 0.5


def test_chunked_logps_equal_one_pass(tiny_dir, monkeypatch):
    """Chunks of 3 positions, and the recompute-in-backward route, give the one-pass values and gradients."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    batch = collate_completions([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]])
    whole, ent = completion_logps(model, batch, entropy=True)
    whole.sum().backward()
    ref_grad = model.lm_head.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    monkeypatch.setattr("tunelab.train.grpo_math.KEEP_LOGITS_BYTES", 0)  # the checkpointed route
    chunked, ent2 = completion_logps(model, batch, entropy=True, chunk=3)
    chunked.sum().backward()
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(ent2, ent)
    torch.testing.assert_close(model.lm_head.weight.grad, ref_grad)
    # the values themselves: log-softmax of each [prompt | completion] run alone, at the position before each token
    with torch.no_grad():
        first = model(input_ids=torch.tensor([[5, 6, 7, 10, 11, 12, 13]])).logits.log_softmax(-1)
        second = model(input_ids=torch.tensor([[8, 9, 14]])).logits.log_softmax(-1)
    assert whole[0, 0].item() == pytest.approx(float(first[0, 2, 10]), abs=1e-5)
    assert whole[0, 3].item() == pytest.approx(float(first[0, 5, 13]), abs=1e-5)
    assert whole[1, 0].item() == pytest.approx(float(second[0, 1, 14]), abs=1e-5)
    assert whole[1, 1].item() == 0.0 and not batch.mask[1, 1]


@pytest.mark.parametrize("call_pairs, spans", [(10**9, 2), (0, 2 + 2 + 1)])  # one mask per group; apart
def test_a_group_feeds_its_prompt_once_and_scores_as_separate_rows(tiny_dir, monkeypatch, call_pairs, spans):
    """Three completions of one prompt and one of another: the prompt is fed once per group, a
    completion never sees its siblings, and each one's log-probs equal [prompt | completion] run alone,
    with the group under one mask or each completion apart over its prompt's keys (group_spans)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    prompts = [[5, 6, 7, 8]] * 3 + [[9, 10]]
    completions = [[11, 12, 13], [14, 15], [16], [17, 18]]
    monkeypatch.setattr("tunelab.train.grpo_math.CALL_PAIRS", call_pairs)
    batch = collate_completions(prompts, completions)
    assert len(batch.spans) == spans  # apart: each prompt, and each completion that feeds a token
    assert int(batch.doc_ids.max()) + 1 == 2  # two groups
    assert batch.n_tokens == 4 + 2 + 1 + 0 + 2 + 1  # each prompt once; a completion's last token is never fed
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 4, 0, 1, 2]
    logps, _ = completion_logps(model, batch)
    with torch.no_grad():
        for k, (p, c) in enumerate(zip(prompts, completions)):
            alone = model(input_ids=torch.tensor([p + c])).logits.log_softmax(-1)[0]  # (T, V)
            want = torch.stack([alone[len(p) - 1 + j, t] for j, t in enumerate(c)])
            torch.testing.assert_close(logps[k, :len(c)], want, atol=1e-5, rtol=0)
    # the same values and gradients under the CPU's per-span kernel (each completion over its prompt's
    # keys and its own) as under sdpa with the 4D mask
    from tunelab.train.attention import register

    weights = torch.arange(logps.numel(), dtype=torch.float32).reshape(logps.shape)
    (logps * weights).sum().backward()
    masked = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.set_attn_implementation(register())
    spans, _ = completion_logps(model, batch)
    (spans * weights).sum().backward()
    torch.testing.assert_close(spans, logps, atol=1e-5, rtol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, masked[n], atol=1e-5, rtol=1e-4, msg=n)


def test_a_batch_with_nothing_scored_gives_zero_and_a_gradient(tiny_dir):
    """Every completion truncated and masked: loss 0 (TRL's clamp of the counts at 1), backward still runs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    batch = collate_completions([[5, 6], [7]], [[8, 9], [10]], truncated=[True, True])
    logps, entropy = completion_logps(model, batch, entropy=True)
    assert logps.shape == (2, 2) and not logps.any()
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):
        loss, stats = grpo_loss(logps, batch.mask, torch.tensor([1.0, -1.0]),
                                GRPOLossSettings(loss_type=loss_type, beta=0.1), ref_logps=logps.detach(),
                                entropies=entropy)
        assert loss.item() == 0.0 and stats.tokens == 0
        assert stats.means() == {"clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0,
                                 "clip_ratio/region_mean": 0.0, "kl": 0.0, "entropy": 0.0}
    loss.backward()
    assert model.lm_head.weight.grad is not None
