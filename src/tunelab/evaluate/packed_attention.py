"""Attention over packed scoring rows: one small attention per item, as a transformers implementation.

Log-likelihood scoring packs many items end to end into one row (loglik._score_packed). Each
item is [context | choice 0 | choice 1 | ...]: a choice sees the context and itself, never another
item or another choice. A (T, T) mask over the whole row would cost O(T²) on every layer and
compute the padding of a padded batch; instead every item runs its own
`scaled_dot_product_attention` on its slice of the row, with its own (n, n) mask, or with
`is_causal=True` when plain causal attention is already right (a perplexity window, a single
continuation). Work is O(Σ nᵢ²) and no pad token exists.

The per-span kernel is models/attention.py, shared with training's per-document attention
(train/attention.py); this module only names the implementation and switches a model to it.
The item spans travel as the `item_spans` keyword of the model's forward, which transformers
hands through every decoder layer to the attention function.

On CUDA the same visibility goes to `flex_attention` as one BlockMask per row (`block_mask`,
handed in as `item_block_mask`): one kernel per layer that computes only the 128 x 128 blocks
holding an item's own tokens, where a loop of small sdpa calls would cost a kernel launch per
item per layer. The CPU keeps the loop: there flex runs as a reference kernel, and the per-item
sdpa is already the fast path.

Prefix reuse: when every item of a call starts with the same tokens (few-shot demonstrations
chosen with `first_n`, a system prompt), loglik.py runs that prefix once into a KV cache and hands
its keys and values per layer as `item_prefix`; every item then attends to the prefix and to its
own tokens (its (n, P + n) mask), so the prefix is computed once instead of once per item.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from tunelab.models.attention import Span, spans_attention_forward

PACKED_ATTN = "tunelab_items"


def items_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    item_spans: Optional[Sequence[Span]] = None,
    item_prefix: Optional[Sequence[tuple[torch.Tensor, torch.Tensor]]] = None,
    item_block_mask=None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (1, H, T, D), key/value (1, Hkv, T, D) -> ((1, T, H, D), None), like transformers' sdpa.

    `item_prefix[layer]`: the shared prefix's (keys, values), each (1, Hkv, P, D), seen by every span.
    `item_block_mask`: the row's `block_mask(...)`; flex_attention then runs the whole row at once.
    """
    if item_block_mask is not None:
        if item_prefix is not None:
            pk, pv = item_prefix[module.layer_idx]  # (1, Hkv, P, D) each
            key, value = torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)  # (1, Hkv, P + T, D)
        out = _flex(query.is_cuda)(query, key, value, block_mask=item_block_mask, scale=scaling,
                                   enable_gqa=query.shape[1] != key.shape[1])  # (1, H, T, D)
        return out.transpose(1, 2).contiguous(), None  # (1, T, H, D)
    if item_prefix is None or attention_mask is not None or item_spans is None:
        return spans_attention_forward(module, query, key, value, attention_mask, item_spans,
                                       dropout=dropout, scaling=scaling, **kwargs)
    pk, pv = item_prefix[module.layer_idx]  # (1, Hkv, P, D) each
    gqa = query.shape[1] != key.shape[1]
    outs, covered = [], 0
    for start, n, mask in item_spans:
        piece = slice(start, start + n)
        own = mask if mask is not None else torch.ones((n, n), dtype=torch.bool, device=query.device).tril()
        full = torch.cat([own.new_ones((n, pk.shape[2])), own], dim=1)  # (n, P + n): the prefix is always visible
        o = F.scaled_dot_product_attention(
            query[:, :, piece], torch.cat([pk, key[:, :, piece]], dim=2), torch.cat([pv, value[:, :, piece]], dim=2),
            attn_mask=full, dropout_p=dropout, scale=scaling, enable_gqa=gqa)  # (1, H, n, D)
        outs.append(o.transpose(1, 2))  # (1, n, H, D)
        covered += n
    if covered < query.shape[2]:  # nothing is left uncovered in scoring rows; kept for the shape
        outs.append(query.new_zeros(1, query.shape[2] - covered, query.shape[1], query.shape[3]))
    return torch.cat(outs, dim=1), None  # (1, T, H, D)


def _flex(compiled: bool):
    """flex_attention: compiled once per process on CUDA (transformers' wrapper; uncompiled it
    would materialise every score); eager elsewhere, where it only serves the CPU test of this path
    (compiling this mask with torch 2.13's CPU inductor failed here with a C++ codegen error)."""
    if compiled:
        from transformers.integrations.flex_attention import compile_friendly_flex_attention

        return lambda q, k, v, **kw: compile_friendly_flex_attention(q, k, v, training=False, **kw)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def block_mask(spans: Sequence[Span], prefix: int, width: int, device):
    """The row's visibility as a flex_attention BlockMask over (width) queries x (prefix + width) keys.

    A query sees the prefix and what its span's mask allows inside its span (causal where the mask
    is None). The masks are kept flattened, one (n, n) block per span, so the lookup costs O(sum of
    n squared) memory, not O(width squared). A query no span covers (padding) sees only itself.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    start = torch.arange(width)  # per query: its span's first column, length and offset into `flat`
    size = torch.ones(width, dtype=torch.long)
    base = torch.arange(width)  # uncovered columns: a span of one, flat[base] = True
    flat = [torch.ones(width, dtype=torch.bool)]
    offset = width
    for s, n, mask in spans:
        own = mask.cpu() if mask is not None else torch.ones((n, n), dtype=torch.bool).tril()
        start[s : s + n], size[s : s + n], base[s : s + n] = s, n, offset
        flat.append(own.reshape(-1))
        offset += n * n
    start, size, base, flat = (t.to(device) for t in (start, size, base, torch.cat(flat)))

    def visible(b, h, q, kv):
        k = (kv - prefix).clamp(min=0)  # the key's column in the row
        same = (kv >= prefix) & (start[k] == start[q])
        at = (base[q] + (q - start[q]) * size[q] + (k - start[q])).clamp(max=flat.numel() - 1)
        return (kv < prefix) | (same & flat[at])

    return create_block_mask(visible, 1, None, width, prefix + width, device=device)


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
