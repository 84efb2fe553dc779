"""The CUDA path of packed scoring (one flex_attention call per layer, packed_attention.block_mask),
forced onto the CPU: same scores as the per-item sdpa path the CPU uses."""
from __future__ import annotations

import pytest
import torch

import tunelab.evaluate.loglik as loglik
from tunelab.evaluate.packed_attention import block_mask

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
TEXTS = ["The cat sat on the mat. " * 9, "Short one.", "Numbers: " + " ".join(map(str, range(60)))]


def test_block_mask_is_each_spans_own_mask():
    """Dense check of the lookup: the prefix is visible to every covered query, a span's mask inside
    the span, nothing across spans; an uncovered (padding) query sees itself."""
    item = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)  # choice 2 skips choice 1
    spans, prefix, width = [(0, 3, item), (3, 2, None)], 4, 6
    bm = block_mask(spans, prefix, width, "cpu")
    want = torch.zeros((width, prefix + width), dtype=torch.bool)
    want[:5, :prefix] = True
    want[0:3, prefix + 0 : prefix + 3] = item
    want[3:5, prefix + 3 : prefix + 5] = torch.ones((2, 2), dtype=torch.bool).tril()
    want[5, :prefix] = True  # padding may look at the prefix: nothing reads its output
    want[5, prefix + 5] = True
    q, kv = torch.meshgrid(torch.arange(width), torch.arange(prefix + width), indexing="ij")
    got = bm.mask_mod(torch.tensor(0), torch.tensor(0), q, kv)
    assert torch.equal(got, want)


@pytest.mark.parametrize("reuse", [True, False])
def test_flex_rows_score_like_the_per_item_path(tiny, monkeypatch, reuse):
    model, tok = tiny
    plain = loglik.score_choices(model, tok, REQUESTS, batch_size=2, reuse_prefix=reuse)
    calls = []
    real = loglik.block_mask
    monkeypatch.setattr(loglik, "block_mask", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(loglik, "FLEX_DEVICES", ("cpu",))
    flex = loglik.score_choices(model, tok, REQUESTS, batch_size=2, reuse_prefix=reuse)
    assert calls and (calls[0][1] > 0) == reuse  # the flex path ran, with the prefix's keys when reused
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
