"""Attention over packed scoring rows: one small attention per item, as a transformers implementation.

Log-likelihood scoring packs many items end to end into one row (loglik._score_packed). Each
item is [context | choice 0 | choice 1 | ...]: a choice sees the context and itself, never another
item or another choice. A (T, T) mask over the whole row would cost O(T²) on every layer and
compute the padding of a padded batch; instead every item runs its own
`scaled_dot_product_attention` on its slice of the row, with its own (n, n) mask, or with
`is_causal=True` when plain causal attention is already right (a perplexity window, a single
continuation). Work is O(Σ nᵢ²) and no pad token exists.

The training side has a per-document function of the same kind (train/attention.py, causal
documents only); evaluation needs the per-item masks and must not import train, so this one is
its own. The item spans travel as the `item_spans` keyword of the model's forward, which
transformers hands through every decoder layer to the attention function.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

PACKED_ATTN = "tunelab_items"

Span = tuple[int, int, Optional[torch.Tensor]]  # (start, length, (n, n) bool mask or None = causal)


def items_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    item_spans: Optional[Sequence[Span]] = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (1, H, T, D), key/value (1, Hkv, T, D) -> ((1, T, H, D), None), like transformers' sdpa."""
    if attention_mask is not None or item_spans is None:
        # an ordinary padded batch (generation, the reference path): plain sdpa
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1 or sum(n for _, n, _ in item_spans) != query.shape[2]:
        raise ValueError(f"packed attention expects one row of {sum(n for _, n, _ in item_spans)} tokens, "
                         f"got {tuple(query.shape[:3])}")
    gqa = query.shape[1] != key.shape[1]  # grouped-query attention inside the kernel, no copies
    outs = []
    for start, n, mask in item_spans:
        piece = slice(start, start + n)
        o = F.scaled_dot_product_attention(
            query[:, :, piece], key[:, :, piece], value[:, :, piece],  # (1, H, n, D), (1, Hkv, n, D)
            attn_mask=mask, is_causal=mask is None, scale=scaling, enable_gqa=gqa)  # (1, H, n, D)
        outs.append(o.transpose(1, 2))  # (1, n, H, D)
    return torch.cat(outs, dim=1), None  # (1, T, H, D)


@contextmanager
def packed_attention(model) -> Iterator[None]:
    """Run `model` with PACKED_ATTN inside the block, then restore its own implementation.

    Not for a model another thread is using at the same time (the setting is the model's).
    """
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTN, items_attention_forward)  # idempotent
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None) or "sdpa"
    model.set_attn_implementation(PACKED_ATTN)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
