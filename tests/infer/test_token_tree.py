"""Cross-item prefix sharing: items whose contexts share tokens run them once, as a token tree,
and every item still scores exactly as it does alone."""
from __future__ import annotations

import random

import pytest

import tunelab.infer.loglik as loglik
from tunelab.infer import token_tree
from tunelab.infer.loglik import score_choices

A = list(range(10, 40))  # 30 tokens that several contexts start with
D = list(range(60, 80))  # 20 more that extend some of them (BBQ's disambiguated context)


def _items():
    """Token-level items sharing prefixes of various lengths, in a scrambled order."""
    rng = random.Random(3)
    choices = lambda: [[rng.randrange(3, 500) for _ in range(rng.randrange(1, 6))] for _ in range(3)]  # noqa: E731
    items = [
        (A + [100, 101, 102], choices()),            # A + question 1
        (A + [100, 101, 103, 104], choices()),       # A + question 2 (shares 2 more tokens)
        (A + D + [100, 101, 102], choices()),        # A + D + question 1
        (A + D + [100, 101, 103, 104], choices()),   # A + D + question 2
        (A, choices()),                              # its whole context is a prefix of the others'
        (A[:12] + [200 + t for t in range(15)], choices()),  # shares only 12 tokens with A
        (A[:3] + [300, 301], choices()),             # shares too little to be worth a segment
        ([7] * 40, [[8, 9], [9]]),                   # shares nothing
        ([7] * 40, [[5, 9, 9], [6]]),                # the same context twice
    ]
    rng.shuffle(items)
    return items


def _walk(seg, above=()):
    yield seg, above
    for c in seg.children:
        yield from _walk(c, above + (seg,))


def test_shared_tokens_form_segments_run_once():
    items = _items()
    forest = token_tree.build(items)
    leaves = {seg.item: above for root in forest for seg, above in _walk(root) if seg.item >= 0}
    assert sorted(leaves) == list(range(len(items)))  # every item is one leaf
    for i, (ctx, conts) in enumerate(items):
        above = leaves[i]
        shared = [t for seg in above for t in seg.tokens]
        leaf = next(s for r in forest for s, _ in _walk(r) if s.item == i)
        assert shared + leaf.tokens[: leaf.n_ctx] == ctx  # ancestors + own context = the item's context
        assert leaf.n_ctx >= 1  # the last context token stays with the item
        assert leaf.positions[0] == len(shared)  # positions continue from the parent's end
    by_ctx = {tuple(c): i for i, (c, _) in enumerate(items)}
    assert sum(len(s.tokens) for s in leaves[by_ctx[tuple(A)]]) == len(A) - 1  # its last token stays its own
    ad = leaves[by_ctx[tuple(A + D + [100, 101, 102])]]
    assert sum(len(s.tokens) for s in ad) == len(A) + len(D) + 2  # A, D and the shared 100 101, once
    assert leaves[by_ctx[tuple(A[:3] + [300, 301])]] == ()  # 3 shared tokens: alone
    twice = leaves[by_ctx[(7,) * 40]]
    assert [len(s.tokens) for s in twice] == [39]
    total = sum(r.size() for r in forest)
    alone = sum(len(token_tree.layout(c, k)[0]) for c, k in items)
    # A[:12] runs once instead of 6 times, the rest of A once instead of 5, D once instead of 2,
    # the repeated context once instead of twice
    assert alone - total == 5 * 12 + 4 * 17 + (len(D) + 3) + 39


def test_the_tree_does_not_depend_on_input_order():
    items = _items()
    perm = list(range(len(items)))
    random.Random(5).shuffle(perm)

    def shape(forest, original):  # (tokens, original item or -1, depth) of every segment
        return sorted((tuple(seg.tokens), original(seg.item) if seg.item >= 0 else -1, len(above))
                      for root in forest for seg, above in _walk(root))

    assert shape(token_tree.build(items), lambda i: i) == \
        shape(token_tree.build([items[p] for p in perm]), lambda i: perm[i])


@pytest.mark.parametrize("budget", [16, 40, 128, 4096])
def test_trees_larger_than_a_row_are_split_between_children(budget):
    items = _items()
    units = token_tree.units(items, budget)
    leaves = sorted(s.item for u in units for s, _ in _walk(u) if s.item >= 0)
    assert leaves == list(range(len(items)))  # every item still scored exactly once
    for u in units:  # a unit over the budget cannot be split further: one path from its root
        assert u.size() <= budget or all(len(seg.children) <= 1 for seg, _ in _walk(u))
    # 3 trees when all fit (the repeated context, the A family, the item sharing 3 tokens); at 16
    # tokens every item is a unit of its own
    assert len(units) == {16: 9, 4096: 3}.get(budget, len(units)) >= 3


def test_a_row_shows_each_segment_only_its_ancestors():
    """The spans name, as keys a segment sees, exactly the segments on its path to the root: a
    sibling branch (or another tree in the row) in `above` would leak its tokens into the scores."""
    units = token_tree.units(_items(), 4096)
    row = token_tree.lay_out(units)
    spans = iter(row.spans)
    offset = 0
    placed = {}

    def check(seg, above):
        nonlocal offset
        start, n, mask, seen = next(spans)
        assert (start, n) == (offset, len(seg.tokens))
        placed[id(seg)] = (start, n)
        assert list(seen) == [placed[id(a)] for a in above]
        if seen:
            assert mask.shape == (n, sum(m for _, m in seen) + n) and bool(mask[:, : -n].all())
        offset += n
        for c in seg.children:
            check(c, above + (seg,))

    for u in units:
        check(u, ())
    assert offset == len(row.ids) == len(row.positions) == len(row.keep)


def _plain(model, items):
    """Each item in its own row, nothing shared: the path without the tree."""
    return [loglik._score_packed(model, [it], 10_000, share=False)[0] for it in items]


def test_tree_scores_equal_each_item_alone(tiny):
    model, _ = tiny
    items = _items()
    shared = loglik._score_packed(model, items, 4096)
    assert loglik.packed_token_count(items, reuse_prefix=False) > loglik.packed_token_count(items)
    for got, ref, (ctx, conts) in zip(shared, _plain(model, items), items):
        assert [x for x, _ in got] == pytest.approx([x for x, _ in ref], abs=1e-4)
        assert [g for _, g in got] == [g for _, g in ref]
        ref_pairs = loglik.score_pairs(model, [(ctx, k) for k in conts], max_len=10_000)  # one sequence per choice
        assert [x for x, _ in got] == pytest.approx([x for x, _ in ref_pairs], abs=1e-4)


def test_a_mask_that_lets_a_sibling_in_changes_the_scores(tiny, monkeypatch):
    """The equality above can fail: when a leaf also sees the keys of the tree's other branches
    (here: every earlier segment of the row), the scores move well beyond the tolerance."""
    model, _ = tiny
    items = _items()
    honest = loglik._score_packed(model, items, 4096)
    real = token_tree.lay_out

    def leaky(trees, prefix_len=0, device=None):
        import torch

        row = real(trees, prefix_len, device)
        spans = []
        for start, n, mask, above in row.spans:
            if above:  # see everything earlier in the row, siblings included
                above = ((0, start),)
                mask = torch.cat([torch.ones((n, prefix_len + start), dtype=torch.bool), mask[:, -n:]], dim=1)
            spans.append((start, n, mask, above))
        row.spans = spans
        return row

    monkeypatch.setattr(token_tree, "lay_out", leaky)
    leaked = loglik._score_packed(model, items, 4096)
    gap = max(abs(a[0] - b[0]) for x, y in zip(honest, leaked) for a, b in zip(x, y))
    assert gap > 1e-3


REQUESTS = [
    ("The meeting was at noon. Two people came, an old man and a young woman.\nQuestion: Who was late?\nAnswer:",
     [" The old man", " The young woman", " Unknown"]),
    ("The meeting was at noon. Two people came, an old man and a young woman. The old man ran in at one."
     "\nQuestion: Who was late?\nAnswer:", [" The old man", " The young woman", " Unknown"]),
    ("The meeting was at noon. Two people came, an old man and a young woman.\nQuestion: Who was early?\nAnswer:",
     [" The old man", " The young woman", " Unknown"]),
    ("The meeting was at noon. Two people came, an old man and a young woman.", [" Yes", " No"]),
    ("A different story entirely.", [" a", " b c"]),
]


DEMOS = "".join(f"Example {i}: the answer is {i + 1}.\n" for i in range(4))  # a prefix all share


@pytest.mark.parametrize("demos", ["", DEMOS], ids=["tree", "prefix+tree"])
def test_shared_contexts_are_batch_size_and_order_invariant(tiny, demos, monkeypatch):
    model, tok = tiny
    requests = [(demos + c, k) for c, k in REQUESTS]
    hoisted = []
    real = loglik._prefix_kv
    monkeypatch.setattr(loglik, "_prefix_kv", lambda m, p: hoisted.append(len(p)) or real(m, p))
    runs = {bs: score_choices(model, tok, requests, batch_size=bs) for bs in (1, 2, 16)}
    assert bool(hoisted) == bool(demos)  # with demos: the global prefix runs once, the tree below it
    backwards = score_choices(model, tok, requests[::-1], batch_size=16)[::-1]
    plain = score_choices(model, tok, requests, batch_size=16, reuse_prefix=False)
    for other in (runs[2], runs[16], backwards, plain):
        for a, b in zip(runs[1], other):
            assert [x for x, _ in a] == pytest.approx([x for x, _ in b], abs=1e-5)
            assert [g for _, g in a] == [g for _, g in b]
    for (context, conts), got in zip(requests, runs[16]):
        ref = loglik.score_reference(model, tok, context, conts)
        assert [x for x, _ in got] == pytest.approx([x for x, _ in ref], abs=1e-4)
