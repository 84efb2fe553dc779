"""Hand-built encoded examples for the training tests (no data pipeline needed)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Ex:
    input_ids: list[int]
    labels: list[int]


def random_examples(n: int, *, vocab: int = 512, lo: int = 5, hi: int = 40, seed: int = 0,
                    prompt_frac: float = 0.4) -> list[Ex]:
    """Random documents; the first `prompt_frac` of each is prompt (label -100), the rest trained."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        L = int(torch.randint(lo, hi + 1, (1,), generator=g))
        ids = torch.randint(3, vocab, (L,), generator=g).tolist()
        cut = max(1, int(L * prompt_frac))
        out.append(Ex(ids, [-100] * cut + ids[cut:]))
    return out
