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


def sample(model, tokenizer, texts: Sequence[str], seeds: Sequence[int], sampling, *,
           batch_size: int = 16) -> list[Sample]:
    """One sampled completion per text; `sampling` has max_tokens, temperature, top_p and stop.
    method: grpo's `rollout` provider (evaluate/rewards.py passes it)."""
    base = _base(model)
    kernel = base.config._attn_implementation
    if kernel not in ("sdpa", "eager", "flash_attention_2"):
        base.set_attn_implementation("sdpa")
    try:
        gens = generate(model, tokenizer, list(texts), max_new_tokens=sampling.max_tokens, stop=list(sampling.stop),
                        temperature=sampling.temperature, top_p=sampling.top_p, seeds=list(seeds),
                        batch_size=batch_size)
    finally:
        if base.config._attn_implementation != kernel:
            base.set_attn_implementation(kernel)
    return [Sample(g.prompt_ids, g.ids, g.text, g.finish == "length") for g in gens]
