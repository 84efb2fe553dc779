"""Scoring items laid out as a token tree: context tokens several items share run once.

Packed scoring (loglik._score_packed) runs each item as [context | choice 0 | choice 1 | ...].
Items often share context tokens: BBQ asks two questions about each context, and its
disambiguated context extends the ambiguous one; a benchmark's items may start with the same
instruction. Here the items' contexts become a tree of segments:

    internal segment   tokens that every item below it shares (run once, causal within itself)
    leaf               one item: [the rest of its context | its choices], under the item's own mask

A token sees exactly its ancestor segments and the earlier tokens of its own segment (a choice
token: its own choice and the context, never a sibling choice), and its position continues from
its parent's end, so each item's scores are those of the item scored alone. The attention of one
segment is one call over [ancestors' keys | its own keys] (packed_attention.py).

Only context[:-1] is shared: the last context token predicts every choice's first token, so it
stays in the item's leaf (an item whose whole context is a prefix of another's still has a leaf
of at least one context token). Grouping is by sorted token lists and does not depend on the
batch size or the input order; a tree larger than a packed row is split between its children,
each part repeating the segments above it. Radix trees are standard; this one is written here
because it also carries positions, masks and the packing of rows, which no library does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

# A run of context tokens becomes its own segment when at least this many tokens would be shared
# (counting short stretches carried down from above). Each segment costs one more small attention
# call per layer; a shared token saves a whole token of the model (~2 ms on 2 CPU cores for 135M).
MIN_BRANCH = 8
# Segments deeper than this are not split off again (bounds recursion on adversarial inputs).
MAX_DEPTH = 32

Item = tuple[list[int], list[list[int]]]  # (context token ids, one token list per choice)


@dataclass
class Segment:
    tokens: list[int]  # the tokens this segment feeds to the model
    positions: list[int]  # their positions in the item's own sequence (continuing from the parent)
    children: list["Segment"] = field(default_factory=list)
    item: int = -1  # a leaf: the item's index; its tokens are [rest of context | choice inputs]
    owner: Optional[list[int]] = None  # a leaf: -1 for context tokens, j for choice j
    n_ctx: int = 0  # a leaf: how many of its tokens are context

    def size(self) -> int:
        return len(self.tokens) + sum(c.size() for c in self.children)


def layout(ctx: list[int], conts: list[list[int]]) -> tuple[list[int], list[int], list[int]]:
    """One item as a single sequence: [context | choice 0 | choice 1 | ...] (tokens, positions, owner).

    owner is -1 for context tokens and j for choice j. A choice's last token is predicted, never
    fed; its positions continue from the context's end, as in its own sequence.
    """
    seq, pos, owner = list(ctx), list(range(len(ctx))), [-1] * len(ctx)
    for j, k in enumerate(conts):
        inp = k[:-1]
        seq += inp
        pos += range(len(ctx), len(ctx) + len(inp))
        owner += [j] * len(inp)
    return seq, pos, owner


def item_mask(owner: list[int], n_choices: int) -> Optional[torch.Tensor]:
    """(n, n) boolean: causal, and a choice sees the context and itself, never another choice.

    None when plain causal attention is already right (one continuation, or choices that add no
    fed tokens): the kernel then skips the blocks above the diagonal.
    """
    own = torch.tensor(owner)
    if n_choices == 1 or bool((own == -1).all()):
        return None
    visible = (own[None, :] == -1) | (own[None, :] == own[:, None])  # (n, n)
    return torch.ones((len(owner), len(owner)), dtype=torch.bool).tril() & visible


def _leaf(items: Sequence[Item], i: int, start: int) -> Segment:
    ctx, conts = items[i]
    seq, pos, owner = layout(ctx[start:], conts)
    return Segment(seq, [start + p for p in pos], item=i, owner=owner, n_ctx=len(ctx) - start)


def _runs(members: list[int], keys: list[list[int]], d: int) -> list[list[int]]:
    """`members` (sorted by key, all sharing key[:d]) cut into runs with the same token at d
    (the keys that end at d form one run, first)."""
    runs: list[list[int]] = []
    last: object = object()
    for i in members:
        t = keys[i][d] if len(keys[i]) > d else None
        if not runs or t != last:
            runs.append([])
            last = t
        runs[-1].append(i)
    return runs


def _common(a: list[int], b: list[int], d: int) -> int:
    k, n = d, min(len(a), len(b))
    while k < n and a[k] == b[k]:
        k += 1
    return k


def build(items: Sequence[Item], min_branch: int = MIN_BRANCH) -> list[Segment]:
    """The forest of `items` (contexts of >= 1 token): an item that shares nothing is a lone leaf.

    Keys are context[:-1], sorted (ties by index). A run of items sharing the next token shares
    the keys' common stretch up to where the first and the last of the run differ (they are
    sorted); that stretch becomes a segment when it, with what was carried down, reaches
    `min_branch` tokens, else it is carried down into the segments below.
    """
    keys = [list(ctx[:-1]) for ctx, _ in items]
    roots: list[Segment] = []
    # (members sharing key[:d], d, start s of the tokens not yet in a segment, where to put
    # what is built, segment depth)
    todo = [(sorted(range(len(items)), key=lambda i: (keys[i], i)), 0, 0, roots, 0)]
    while todo:
        members, d, s, out, depth = todo.pop()
        for run in _runs(members, keys, d):
            if len(run) == 1 or len(keys[run[0]]) == d:
                out.extend(_leaf(items, i, s) for i in run)
                continue
            end = _common(keys[run[0]], keys[run[-1]], d)  # > d: the run shares the token at d
            if end - s >= min_branch and depth < MAX_DEPTH:
                node = Segment(keys[run[0]][s:end], list(range(s, end)))
                out.append(node)
                todo.append((run, end, end, node.children, depth + 1))
            else:
                todo.append((run, end, s, out, depth))
    return roots


def fit(seg: Segment, budget: int) -> list[Segment]:
    """`seg` as trees of at most `budget` tokens where it can be: a larger tree is split between
    its children, each part repeating `seg`'s own tokens (a single leaf may exceed the budget)."""
    if seg.item >= 0 or seg.size() <= budget:
        return [seg]
    room = max(budget - len(seg.tokens), 1)
    parts: list[list[Segment]] = []
    used = 0
    for piece in (p for c in seg.children for p in fit(c, room)):
        n = piece.size()
        if not parts or used + n > room:
            parts.append([])
            used = 0
        parts[-1].append(piece)
        used += n
    return [Segment(seg.tokens, seg.positions, part) for part in parts]


def units(items: Sequence[Item], budget: int, min_branch: int = MIN_BRANCH) -> list[Segment]:
    """The trees packed rows are made of, each of at most `budget` tokens where it can be."""
    return [u for root in build(items, min_branch) for u in fit(root, budget)]


def pack_rows(lengths: list[int], budget: int) -> list[list[int]]:
    """Indices grouped into rows of at most `budget` tokens, longest first (one longer than the
    budget gets a row of its own). Deterministic: ties keep the input order."""
    rows: list[list[int]] = []
    used = 0
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if not rows or used + lengths[i] > budget:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += lengths[i]
    return rows


@dataclass
class Row:
    """One packed row: model inputs, attention spans and where each item's scores are read."""
    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    keep: list[bool] = field(default_factory=list)  # positions whose logits are projected
    # (start, length, mask over [prefix | ancestors | own] or None = causal, ancestor (start, length)s)
    spans: list[tuple] = field(default_factory=list)
    leaves: list[tuple[int, int]] = field(default_factory=list)  # (item, index among kept logits)


def lay_out(trees: Sequence[Segment], prefix_len: int = 0, device=None) -> Row:
    """`trees` end to end in one row, depth first; every position is shifted by `prefix_len`
    (a prefix run once before the row, whose keys every segment sees)."""
    row = Row()
    n_kept = 0

    def visit(seg: Segment, above: tuple[tuple[int, int], ...]) -> None:
        nonlocal n_kept
        start, n = len(row.ids), len(seg.tokens)
        row.ids += seg.tokens
        row.positions += [prefix_len + p for p in seg.positions]
        own = item_mask(seg.owner, 1 + max(seg.owner)) if seg.item >= 0 else None
        seen = prefix_len + sum(m for _, m in above)
        if seen:  # the ancestors (and the prefix) are visible to every token of the segment
            own = own if own is not None else torch.ones((n, n), dtype=torch.bool).tril()
            own = torch.cat([torch.ones((n, seen), dtype=torch.bool), own], dim=1)  # (n, seen + n)
        row.spans.append((start, n, None if own is None else own.to(device), above))
        if seg.item >= 0:  # the last context token predicts each choice's first token
            row.keep += [False] * (seg.n_ctx - 1) + [True] * (n - seg.n_ctx + 1)
            row.leaves.append((seg.item, n_kept))
            n_kept += n - seg.n_ctx + 1
        else:
            row.keep += [False] * n
        for child in seg.children:
            visit(child, above + ((start, n),))

    for tree in trees:
        visit(tree, ())
    return row
