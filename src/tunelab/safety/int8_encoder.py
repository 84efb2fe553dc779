"""An int8 copy of the shared MiniLM encoder for the toxicity classifier (CPU speed).

The toxicity scan embeds every text with MiniLM; in fp32 that is ~12 ms per short text on a
2-core CPU, compute-bound in the transformer's Linear layers. Here those layers run as int8 x int8
matrix products with int32 accumulation (`torch._int_mm`), about 2.5x faster end to end.

Why by hand rather than `torch.ao.quantization.quantize_dynamic`: that quantises the activations
with ONE scale per call, i.e. over every token of every text in the batch, so a text's embedding
(and its toxicity score) changes with the texts it happens to be batched with (cosine as low as
0.85 between a text embedded alone and in a batch of 16, measured here). Below, each token row
gets its own activation scale and each weight row (output channel) its own weight scale, so a
text's features do not depend on its batch-mates, and training (which embeds the corpus in one
batching) and scanning (another) see the same features. torchao offers the same scheme, but as
a new dependency for one 30-line layer.

The shared fp32 encoder (tunelab.models.encoders) is not touched: retrieval and few-shot sampling
keep their embeddings; this module deep-copies it once per process.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tunelab.errors import TunelabError
from tunelab.models.encoders import MINILM_DIM, load_minilm

QUANTISATION = "int8 per-token activations x int8 per-channel weights (Linear layers)"
BATCH_SIZE = 16  # measured on 2 cores: 16 beats 8 (per-batch overhead) and 32+ (padding, cache)


class Int8Linear(nn.Module):
    """Stand-in for an nn.Linear: symmetric int8 weights per output row, activations quantised
    per token row at call time."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.register_buffer("w_t", q.t().contiguous())  # (in, out), so y = x @ w_t
        self.register_buffer("w_scale", scale)
        self.register_buffer("bias", None if lin.bias is None else lin.bias.detach().float().clone())
        self.in_features, self.out_features = lin.in_features, lin.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()  # (tokens, in)
        s = x2.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # (tokens, 1)
        q = torch.round(x2 / s).to(torch.int8)
        y = torch._int_mm(q, self.w_t).float().mul_(s).mul_(self.w_scale)  # (tokens, out), exact int32 sums
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features)


def quantise_linears(module):
    """Replace every nn.Linear inside `module` (in place) by its int8 version; returns module."""
    if not hasattr(torch, "_int_mm"):
        raise TunelabError(f"torch {torch.__version__} lacks int8 matrix products (torch._int_mm); "
                           "upgrade torch (pip install -U torch) to use the MiniLM toxicity backend")
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            quantise_linears(child)
    return module


@functools.lru_cache(maxsize=1)
def toxicity_encoder():
    """A deep copy of the shared MiniLM with int8 Linear layers, built once per process."""
    import copy

    model = copy.deepcopy(load_minilm())
    with torch.no_grad():
        return quantise_linears(model).eval()


def toxicity_embed(texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Unit-norm int8-encoder embeddings, shape (N, 384), float32: the toxicity features."""
    if not texts:
        return np.zeros((0, MINILM_DIM), dtype=np.float32)
    emb = toxicity_encoder().encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    show_progress_bar=False, normalize_embeddings=True)
    return np.asarray(emb, dtype=np.float32)
