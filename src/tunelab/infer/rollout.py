"""Sampling completions from a model while it trains (GRPO's rollouts), with the engine's decoder.

The model is the live one (a PEFT model's adapter as it is now: no copy, no reload). Training may
run it under an attention kernel made for packed rows (train/attention.py), which ignores a
padding mask; sampling needs left-padded rows, so the model decodes under sdpa and gets its
kernel back afterwards. Each completion has its own seeded generator (generate.py), so what is
sampled depends on the weights and the seeds only, not on the batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tunelab.infer.generate import generate


@dataclass
class Sample:
    """One completion, with the ids a trainer scores (train/rollouts.py reads these attributes)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool  # cut at max_tokens


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# Rows x (longest prompt + max_tokens) of one decode batch. A step's rollouts decode together: a
# decode step reads every weight once whatever the rows, so on CPU more rows are nearly free (the
# default model on the 2-core CPU, GRPO's 64 rollouts of builtin:dates: 112 tok/s at 16 rows, 160
# at 32, 222 at 64); the cap keeps the KV cache to ~0.4 GB for the default model (~3 GB for a 1.7B).
ROLLOUT_TOKENS = 8192


def batch_size(tokenizer, texts: Sequence[str], max_tokens: int) -> int:
    """How many rows of `texts` decode together: all of them, within ROLLOUT_TOKENS."""
    longest = max((len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts), default=0)
    return max(1, min(len(texts), ROLLOUT_TOKENS // max(longest + max_tokens, 1)))


def sample(model, tokenizer, texts: Sequence[str], seeds: Sequence[int], sampling) -> list[Sample]:
    """One sampled completion per text; `sampling` has max_tokens, temperature, top_p and stop.
    method: grpo's `rollout` provider (evaluate/rewards.py passes it). The G copies of a prompt are
    prefilled once (decode.DecodeBatch.prefill) and every row decodes in one batch (batch_size)."""
    base = _base(model)
    kernel = base.config._attn_implementation
    if kernel not in ("sdpa", "eager", "flash_attention_2"):
        base.set_attn_implementation("sdpa")
    try:
        gens = generate(model, tokenizer, list(texts), max_new_tokens=sampling.max_tokens, stop=list(sampling.stop),
                        temperature=sampling.temperature, top_p=sampling.top_p, seeds=list(seeds),
                        batch_size=batch_size(tokenizer, texts, sampling.max_tokens))
    finally:
        if base.config._attn_implementation != kernel:
            base.set_attn_implementation(kernel)
    return [Sample(g.prompt_ids, g.ids, g.text, g.finish == "length") for g in gens]
