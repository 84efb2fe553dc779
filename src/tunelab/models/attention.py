"""Attention over one packed row, one small attention per span: the kernel training and scoring share.

A packed row holds several independent pieces end to end (training documents, or scoring items
[context | choice 0 | choice 1 | ...]). A (T, T) mask over the whole row makes the CPU kernel
visit all T × T score blocks and only then mask them: O(T²) per layer for work that needs
O(Σ nᵢ²). Here every span runs its own `scaled_dot_product_attention` on its slice of the row,
with `is_causal=True` (the kernel skips the blocks above the diagonal) or with the span's own
(n, n) boolean mask. A span may also see pieces of the row before it, its ancestors: a GRPO
completion sees its prompt (train/grpo_math.py), a scoring item the context segments it shares
with others (infer/token_tree.py); its queries then run against [ancestors' keys | its own keys]
with an (n, A + n) mask, O(n (A + n)) work, never the whole row's. A trailing stretch no span
covers (the pad document of a fixed-width training row) is never computed: its output is zeros,
nothing reads it and nothing trains on it.

Callers wrap `spans_attention_forward` in a transformers attention implementation
(train/attention.py, infer/packed_attention.py) and pass the spans through the model's
forward as a keyword, which transformers hands through every decoder layer to the function.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

# (start, length, bool mask or None = causal[, ancestors]): a span's queries see its own keys, and
# with ancestors ((start, length) pieces elsewhere in the row) first theirs: the mask is then (n, A + n)
Span = tuple


def causal_spans(lengths: Sequence[int]) -> list[Span]:
    """Documents of these lengths, end to end from the row's start, each causal."""
    spans, start = [], 0
    for n in lengths:
        spans.append((start, n, None))
        start += n
    return spans


def spans_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    spans: Optional[Sequence[Span]],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    prefix: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (1, H, T, D), key/value (1, Hkv, T, D) -> ((1, T, H, D), None), like transformers' sdpa.

    With a 4D mask handed in, or no spans (an ordinary padded batch, generation), this is plain
    sdpa. Spans must cover the row from its start, in order. `prefix`: (keys, values), each
    (1, Hkv, P, D), of tokens run before the row (a KV cache) that every span sees first, its
    mask's first P columns.
    """
    if attention_mask is not None or spans is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    B, _, T, _ = query.shape
    covered = sum(span[1] for span in spans)
    if B != 1 or covered > T:
        raise ValueError(f"packed attention expects one row of at least {covered} tokens, "
                         f"got a batch of {B} × {T}")
    pk, pv = prefix if prefix is not None else (None, None)
    gqa = query.shape[1] != key.shape[1]  # grouped-query attention inside the kernel, no copies
    outs = []
    for span in spans:
        start, n, mask = span[:3]
        above = span[3] if len(span) > 3 else ()
        k, v = key[:, :, start:start + n], value[:, :, start:start + n]  # (1, Hkv, n, D)
        if above or pk is not None:  # [prefix | ancestors | own] keys, in the mask's column order
            ks = ([pk] if pk is not None else []) + [key[:, :, a:a + m] for a, m in above] + [k]
            vs = ([pv] if pv is not None else []) + [value[:, :, a:a + m] for a, m in above] + [v]
            k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)  # (1, Hkv, P + A + n, D)
        o = F.scaled_dot_product_attention(
            query[:, :, start:start + n], k, v, attn_mask=mask, dropout_p=dropout,
            is_causal=mask is None, scale=scaling, enable_gqa=gqa)  # (1, H, n, D)
        outs.append(o.transpose(1, 2))  # (1, n, H, D)
    if covered < T:  # the trailing pad document: zeros, no attention computed
        outs.append(query.new_zeros(1, T - covered, query.shape[1], query.shape[3]))  # (1, pad, H, D)
    return torch.cat(outs, dim=1), None  # (1, T, H, D), contiguous
