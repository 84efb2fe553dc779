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

On CUDA the same visibility goes to `flex_attention` as one BlockMask per row (`block_mask`,
handed in as `item_block_mask`): one kernel per layer that computes only the 128 x 128 blocks
holding visible pairs, where a loop of small sdpa calls would cost a kernel launch per segment
per layer. The CPU keeps the loop: there flex runs as a reference kernel, and the per-segment
sdpa is already the fast path.

Prefix reuse: when every item of a call starts with the same tokens (few-shot demonstrations
chosen with `first_n`, a system prompt), loglik.py runs that prefix once into a KV cache and hands
its keys and values per layer as `item_prefix`; every segment's mask then starts with the
prefix's columns, so the prefix is computed once for the whole call.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch

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
    # the CPU: one sdpa call per segment (an ordinary batch, with a mask or no spans: plain sdpa)
    prefix = item_prefix[module.layer_idx] if item_prefix is not None else None  # (1, Hkv, P, D) each
    return spans_attention_forward(module, query, key, value, attention_mask, item_spans, dropout=dropout,
                                   scaling=scaling, prefix=prefix, **kwargs)


def _flex(compiled: bool):
    """flex_attention: compiled once per process on CUDA (transformers' wrapper; uncompiled it
    would materialise every score); eager elsewhere, where it only serves the CPU test of this path
    (compiling this mask with torch 2.13's CPU inductor failed here with a C++ codegen error)."""
    if compiled:
        from transformers.integrations.flex_attention import compile_friendly_flex_attention

        return lambda q, k, v, **kw: compile_friendly_flex_attention(q, k, v, training=False, **kw)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def block_mask(spans: Sequence[TreeSpan], prefix: int, width: int, device, block: int = 128):
    """The row's visibility as a flex_attention BlockMask: `width` queries x (`prefix` + `width`) keys.

    A query in segment j sees what j's own mask (columns [prefix | ancestors | own], as the sdpa
    path uses it) allows. The masks are kept flattened, one block per segment, and a small
    (segments x segments) table gives where each ancestor's columns start in j's mask, so the
    lookup costs what the masks already cost. The block lists come from the spans (`_kv_blocks`),
    not from evaluating the mask on every (query, key) pair as `create_block_mask` does: a
    perplexity row on a GPU holds batch x context-length tokens, whose pairs would not fit in memory.
    """
    from torch.nn.attention.flex_attention import BlockMask

    index = {s: j for j, (s, *_rest) in enumerate(spans)}
    seg = torch.zeros(width, dtype=torch.long)
    start, cols, base, lead = [], [], [], []  # per segment
    column = torch.full((len(spans), len(spans)), -1, dtype=torch.long)  # [j, g]: g's first column in j's mask
    flat, offset = [], 0
    for j, (s, n, mask, above) in enumerate(spans):
        own = mask if mask is not None else torch.ones((n, n), dtype=torch.bool, device=device).tril()
        c = own.shape[1] - n - sum(m for _, m in above)  # the prefix's columns come first
        lead.append(c)
        for a, m in above:
            column[j, index[a]] = c
            c += m
        column[j, j] = c
        seg[s : s + n] = j
        start.append(s), cols.append(own.shape[1]), base.append(offset)
        flat.append(own.reshape(-1).to(device))
        offset += own.numel()
    flat = torch.cat(flat)
    seg, column = seg.to(device), column.to(device)
    start, cols, base, lead = (torch.tensor(x, device=device) for x in (start, cols, base, lead))

    def visible(b, h, q, kv):
        j = seg[q]
        row = base[j] + (q - start[j]) * cols[j]  # q's row of j's mask, in `flat`
        k = (kv - prefix).clamp(min=0)  # the key's column in the packed row
        g = seg[k]
        in_prefix = (kv < prefix) & (lead[j] > 0) & flat[(row + kv).clamp(max=flat.numel() - 1)]
        at = (row + column[j, g] + k - start[g]).clamp(min=0, max=flat.numel() - 1)
        return in_prefix | ((kv >= prefix) & (column[j, g] >= 0) & flat[at])

    counts, indices = _kv_blocks(spans, prefix, width, block)
    return BlockMask.from_kv_blocks(counts.to(device), indices.to(device), BLOCK_SIZE=block, mask_mod=visible,
                                    seq_lengths=(width, prefix + width))


def _kv_blocks(spans: Sequence[TreeSpan], prefix: int, width: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block of `block` queries: the key blocks it may see (its segments' prefix, ancestors and
    own columns), as flex_attention's (1, 1, Q blocks) counts and (1, 1, Q blocks, K blocks) indices.
    Every listed block is a partial one (the mask decides inside it); a block with no visible pair
    may be listed (the upper corner of a causal segment), one with a visible pair never left out."""
    n_q, n_k = -(-width // block), -(-(prefix + width) // block)
    seen: list[set[int]] = [set() for _ in range(n_q)]
    for start, n, mask, above in spans:
        keys = set(range(-(-prefix // block))) if mask is not None and prefix else set()
        for a, m in [*above, (start, n)]:
            keys.update(range((prefix + a) // block, (prefix + a + m - 1) // block + 1))
        for b in range(start // block, (start + n - 1) // block + 1):
            seen[b] |= keys
    counts = torch.tensor([[[len(k) for k in seen]]], dtype=torch.int32)  # (1, 1, n_q)
    indices = torch.zeros((1, 1, n_q, n_k), dtype=torch.int32)
    for b, k in enumerate(seen):
        indices[0, 0, b, : len(k)] = torch.tensor(sorted(k), dtype=torch.int32)
    return counts, indices


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
