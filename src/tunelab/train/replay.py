"""Replay: a share of general instruction data mixed into a fine-tune, so it keeps more of what it knew.

    replay: {data: general.jsonl, ratio: 0.1}

The ratio counts EXAMPLES of the mixed training set: with n task rows and ratio r, round(n·r/(1−r))
replay records join them (n = 256, r = 0.1: 28 replay rows, 10% of 284). Examples rather than tokens
because that is how the practice is reported and how a user thinks of the mix; a replay record is
usually longer than a short task answer, so its share of the tokens is larger (the run's log says
both). The records are drawn once with the run's seed, without repeats while the file has enough.

Why 0.1 by default: rehearsing 1% of earlier data kept most of an instruction-tuned model's earlier
skills in Scialom et al. (2022, "Fine-tuned Language Models are Continual Learners"); Ibrahim et al.
(2024, "Simple and Scalable Strategies to Continually Pre-train LLMs") used 5% replay for a mild
shift of data and up to 25% for a strong one; LLaMA-Factory's standing advice against forgetting is
to mix general data in. A narrow task is a strong shift for a chat model, and small sets make 1%
round to nothing, so the default sits between those: 10%.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


def replay_count(n_task: int, ratio: float) -> int:
    """Replay examples that make `ratio` of the mixed set when joined to n_task task examples."""
    return max(1, round(n_task * ratio / (1.0 - ratio))) if n_task else 0


def draw(n_available: int, k: int, seed: int) -> list[int]:
    """k record indices out of n_available, seeded; without repeats until the file is used up."""
    rng = random.Random(seed)
    out: list[int] = []
    while len(out) < k:
        order = list(range(n_available))
        rng.shuffle(order)
        out += order[: k - len(out)]
    return out


@dataclass
class Mixed:
    """Task examples followed by replay examples, indexable like one encoded set (what the loop reads)."""

    task: object  # EncodedSet (or list[Encoded])
    replay: object

    def __len__(self) -> int:
        return len(self.task) + len(self.replay)

    def __getitem__(self, i: int):
        n = len(self.task)
        return self.task[i] if i < n else self.replay[i - n]

    @property
    def lengths(self) -> np.ndarray:
        def of(s):
            lengths = getattr(s, "lengths", None)
            return np.asarray(lengths if lengths is not None else [len(e.input_ids) for e in s], dtype=np.int64)

        return np.concatenate([of(self.task), of(self.replay)])


__all__ = ["replay_count", "draw", "Mixed"]
