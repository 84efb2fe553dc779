"""Attention over packed scoring rows: one small attention per segment, as a transformers implementation.

Log-likelihood scoring packs many items end to end into one row (loglik._score_packed), laid out
as token trees (token_tree.py): a segment is either context tokens several items share, or one
item's [rest of context | choice 0 | choice 1 | ...], where a choice sees the context and itself,
never another item or another choice. A (T, T) mask over the whole row would cost O(T²) on every
layer; instead every segment runs its own `scaled_dot_product_attention`: its queries against
[the keys of its ancestor segments | its own keys], with the (n, A + n) mask token_tree.lay_out
built once per row, or `is_causal=True` when a segment has no ancestors and plain causal attention
is right (a perplexity window, a single continuation). Work is O(Σ nᵢ (Aᵢ + nᵢ)), no pad token.

The spans travel as the `item_spans` keyword of the model's forward, which transformers hands
through every decoder layer to the attention function.

Prefix reuse: when every item of a call starts with the same tokens (few-shot demonstrations
chosen with `first_n`, a system prompt), loglik.py runs that prefix once into a KV cache and hands
its keys and values per layer as `item_prefix`; every segment's mask then starts with the
prefix's columns, so the prefix is computed once for the whole call.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from tunelab.models.attention import spans_attention_forward

PACKED_ATTN = "tunelab_items"
# (start, length, bool mask (n, P + A + n) or None = causal, ancestors' (start, length) in the row)
TreeSpan = tuple[int, int, Optional[torch.Tensor], Sequence[tuple[int, int]]]


def items_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    item_spans: Optional[Sequence[TreeSpan]] = None,
    item_prefix: Optional[Sequence[tuple[torch.Tensor, torch.Tensor]]] = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (1, H, T, D), key/value (1, Hkv, T, D) -> ((1, T, H, D), None), like transformers' sdpa.

    `item_prefix[layer]`: the shared prefix's (keys, values), each (1, Hkv, P, D), seen by every span.
    """
    if attention_mask is not None or item_spans is None:  # an ordinary batch: plain sdpa
        return spans_attention_forward(module, query, key, value, attention_mask, None,
                                       dropout=dropout, scaling=scaling, **kwargs)
    pk, pv = item_prefix[module.layer_idx] if item_prefix is not None else (None, None)  # (1, Hkv, P, D)
    gqa = query.shape[1] != key.shape[1]  # grouped-query attention inside the kernel, no copies
    outs, covered = [], 0
    for start, n, mask, above in item_spans:
        k, v = key[:, :, start : start + n], value[:, :, start : start + n]  # (1, Hkv, n, D)
        if above or pk is not None:  # [prefix | ancestors | own] keys, in the mask's column order
            ks = ([pk] if pk is not None else []) + [key[:, :, a : a + m] for a, m in above] + [k]
            vs = ([pv] if pv is not None else []) + [value[:, :, a : a + m] for a, m in above] + [v]
            k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)  # (1, Hkv, P + A + n, D)
        o = F.scaled_dot_product_attention(
            query[:, :, start : start + n], k, v, attn_mask=mask, dropout_p=dropout,
            is_causal=mask is None, scale=scaling, enable_gqa=gqa)  # (1, H, n, D)
        outs.append(o.transpose(1, 2))  # (1, n, H, D)
        covered += n
    if covered < query.shape[2]:  # nothing is left uncovered in scoring rows; kept for the shape
        outs.append(query.new_zeros(1, query.shape[2] - covered, query.shape[1], query.shape[3]))
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
