"""Drift: how far a fine-tune's next-token distributions moved from its base model's, with no labels.

    per_prompt = backend.answer_kl(prompts, answers, base=None)  # infer/divergence.py, through the Backend
    summary = drift_summary(per_prompt, seed=1)                  # {"kl_per_token", "ci95", ...}

For each general prompt x and the base model's own greedy answer y to it, at every answer position
t, the full-vocabulary KL(p_base(· | x, y<t) ‖ p_tuned(· | x, y<t)), in nats. Its mean over all
answer tokens is the drift: 0 for the base model itself, and it grows as fine-tuning moves the
model's answers to things it was not trained on. On the base model's own answers it asks "how
surprised is the fine-tune by what the base model would say": a fine-tune that forgot how to
answer general questions is surprised often.

The forward passes run in infer/ (`LocalBackend.answer_kl`); this module holds the statistics.
"""
from __future__ import annotations

from typing import Optional, Sequence

from tunelab.evaluate.stats import bootstrap_ci


def drift_summary(per_prompt: Sequence[tuple[float, int]], *, seed: int = 1234,
                  n_resamples: int = 1000) -> Optional[dict]:
    """Mean KL per answer token over all prompts, with a 95% CI from resampling the prompts."""
    import numpy as np

    kept = [(s, n) for s, n in per_prompt if n > 0]
    if not kept:
        return None
    sums = np.asarray([s for s, _ in kept], dtype=np.float64)
    counts = np.asarray([n for _, n in kept], dtype=np.float64)

    def ratio(idx: np.ndarray) -> np.ndarray:  # (B, n) resampled prompts -> (B,) tokens-weighted means
        return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)

    lo, hi = bootstrap_ci(list(sums), n_resamples=n_resamples, seed=seed, statistic=ratio)
    return {"kl_per_token": float(sums.sum() / counts.sum()), "ci95": [float(lo), float(hi)],
            "n_prompts": len(kept), "n_tokens": int(counts.sum())}


__all__ = ["drift_summary"]
