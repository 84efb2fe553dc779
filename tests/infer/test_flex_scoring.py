"""The CUDA path of packed scoring (one flex_attention call per layer, packed_attention.block_mask),
forced onto the CPU: same scores as the per-item sdpa path the CPU uses."""
from __future__ import annotations

import pytest
import torch

import tunelab.infer.loglik as loglik
from tunelab.infer.packed_attention import block_mask

pytest.importorskip("torch.nn.attention.flex_attention")
# eager flex on the CPU is the reference kernel; CUDA compiles it (packed_attention._flex)
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

DEMOS = "".join(f"Question: what comes after {i}?\nAnswer: {i + 1}\n\n" for i in range(5))
REQUESTS = [
    (DEMOS + "Question: what comes after 7?\nAnswer:", [" 8", " 9", " seven"]),
    (DEMOS + "Question: what comes after 41?\nAnswer:", [" 42", " 40 or so", " 1"]),
    (DEMOS + "Question: is the sky green?\nAnswer:", [" no", " yes, always"]),
    (DEMOS + "Q:", [" x", " y z w"]),
]
CTX = "The two friends met at the old library near the river on a rainy Sunday afternoon. "
MORE = "One of them had brought a large umbrella and a flask of tea for both. "
TREE = [  # contexts that share tokens with some items, not all: a token tree, no global prefix
    (CTX + "Question: who was late?\nAnswer:", [" the first", " the second", " unknown"]),
    (CTX + "Question: who was early?\nAnswer:", [" the first", " nobody at all"]),
    (CTX + MORE + "Question: who was late?\nAnswer:", [" the first", " unknown"]),
    (CTX + MORE, [" Then", " It rained."]),
    ("Q:", [" x", " y z w"]),
]
TEXTS = ["The cat sat on the mat. " * 9, "Short one.", "Numbers: " + " ".join(map(str, range(60)))]


def _dense(bm, width, keys):
    q, kv = torch.meshgrid(torch.arange(width), torch.arange(keys), indexing="ij")
    return bm.mask_mod(torch.tensor(0), torch.tensor(0), q, kv)


def test_block_mask_follows_the_token_tree():
    """A shared context segment, then two items under it: each item sees the prefix, the shared
    segment and its own mask, never its sibling (the dense lookup, checked pair by pair)."""
    tril = lambda n: torch.ones((n, n), dtype=torch.bool).tril()  # noqa: E731
    item = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)  # choice 2 skips choice 1
    ones = lambda r, c: torch.ones((r, c), dtype=torch.bool)  # noqa: E731
    prefix, width = 2, 6
    spans = [(0, 2, torch.cat([ones(2, 2), tril(2)], 1), ()),
             (2, 3, torch.cat([ones(3, 4), item], 1), ((0, 2),)),
             (5, 1, ones(1, 5), ((0, 2),))]
    want = torch.zeros((width, prefix + width), dtype=torch.bool)
    want[:, :prefix] = True
    want[0:2, 2:4] = tril(2)
    want[2:5, 2:4] = True
    want[2:5, 4:7] = item
    want[5, 2:4] = True
    want[5, 7] = True  # not columns 4..6: the sibling item
    assert torch.equal(_dense(block_mask(spans, prefix, width, "cpu"), width, prefix + width), want)


def test_block_mask_without_prefix_is_causal_per_segment():
    spans = [(0, 3, None, ()), (3, 2, None, ())]
    want = torch.zeros((5, 5), dtype=torch.bool)
    want[0:3, 0:3] = torch.ones((3, 3), dtype=torch.bool).tril()
    want[3:5, 3:5] = torch.ones((2, 2), dtype=torch.bool).tril()
    assert torch.equal(_dense(block_mask(spans, 0, 5, "cpu"), 5, 5), want)


@pytest.mark.parametrize("requests,reuse", [(REQUESTS, True), (REQUESTS, False), (TREE, True)],
                         ids=["shared-prefix", "no-sharing", "token-tree"])
def test_flex_rows_score_like_the_per_item_path(tiny, monkeypatch, requests, reuse):
    model, tok = tiny
    plain = loglik.score_choices(model, tok, requests, batch_size=2, reuse_prefix=reuse)
    calls = []
    real = loglik.block_mask
    monkeypatch.setattr(loglik, "block_mask", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(loglik, "FLEX_DEVICES", ("cpu",))
    flex = loglik.score_choices(model, tok, requests, batch_size=2, reuse_prefix=reuse)
    assert calls and (calls[0][1] > 0) == (requests is REQUESTS and reuse)  # the flex path ran; prefix keys when shared
    if requests is TREE:  # shared context segments really occurred (items with ancestors)
        assert any(above for c in calls for *_, above in c[0])
    for f, p in zip(flex, plain):
        assert [x for x, _ in f] == pytest.approx([x for x, _ in p], abs=1e-4)
        assert [g for _, g in f] == [g for _, g in p]


def test_flex_rows_give_the_same_perplexity(tiny, monkeypatch):
    model, tok = tiny
    plain = loglik.rolling_loglik(model, tok, TEXTS, batch_size=2, max_seq_len=32)
    monkeypatch.setattr(loglik, "FLEX_DEVICES", ("cpu",))
    flex = loglik.rolling_loglik(model, tok, TEXTS, batch_size=2, max_seq_len=32)
    assert [n for _, n in flex] == [n for _, n in plain]
    assert [x for x, _ in flex] == pytest.approx([x for x, _ in plain], abs=1e-4)


@pytest.mark.parametrize("prefix", [0, 6])
def test_block_lists_cover_every_visible_pair(prefix):
    """The key blocks listed per query block (from the spans) include every block in which the mask
    has a visible pair (torch's create_block_mask evaluates the mask everywhere: the reference), and
    leave blocks out (a sibling item's): small blocks, a random token forest."""
    import random

    from torch.nn.attention.flex_attention import create_block_mask

    from tunelab.infer import token_tree

    rng = random.Random(5)
    stem = [rng.randrange(3, 500) for _ in range(30)]
    items = []
    for i in range(12):
        ctx = stem[: rng.choice([10, 20, 30])] + [rng.randrange(3, 500) for _ in range(rng.randrange(1, 9))]
        items.append((ctx, [[rng.randrange(3, 500) for _ in range(rng.randrange(1, 5))] for _ in range(3)]))
    row = token_tree.lay_out(token_tree.units(items, 10_000), prefix)
    width = len(row.ids)
    assert any(above for *_, above in row.spans)  # a real tree
    bm = block_mask(row.spans, prefix, width, "cpu", block=4)
    ref = create_block_mask(bm.mask_mod, 1, None, width, prefix + width, device="cpu", BLOCK_SIZE=4)
    listed, needed = bm.to_dense().bool(), ref.to_dense().bool()  # (1, 1, Q blocks, K blocks)
    assert not (needed & ~listed).any()
    assert listed.float().mean() < 0.5
