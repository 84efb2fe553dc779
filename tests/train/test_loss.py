"""Chunked supervised loss: equals plain cross-entropy; invariant to micro-batching."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tunelab.train.loss import KEEP_LOGITS_BYTES, PackedCausalLM, supervised_ce_sum
from tunelab.train.packing import collate, model_inputs

from .helpers import random_examples

torch.set_num_threads(2)


# 0: every chunk is recomputed in the backward (checkpointed); the default keeps these small logits
@pytest.mark.parametrize("keep_logits_bytes", [0, KEEP_LOGITS_BYTES])
def test_chunked_loss_equals_plain_cross_entropy(keep_logits_bytes):
    g = torch.Generator().manual_seed(0)
    H, V, B, T = 16, 97, 2, 50
    head = torch.nn.Linear(H, V, bias=False)
    hidden = torch.randn(B, T, H, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[torch.rand(B, T, generator=g) < 0.4] = -100
    total, n = supervised_ce_sum(hidden, targets, head, chunk=7,  # 7: chunks do not divide S
                                 keep_logits_bytes=keep_logits_bytes)
    ref = F.cross_entropy(head(hidden).reshape(-1, V), targets.reshape(-1), ignore_index=-100, reduction="mean")
    assert n == int((targets != -100).sum())
    assert torch.allclose(total / n, ref, atol=1e-5, rtol=0)
    (g1,) = torch.autograd.grad(total / n, hidden)
    (g2,) = torch.autograd.grad(ref, hidden)
    assert torch.allclose(g1, g2, atol=1e-5, rtol=0)


def test_model_loss_equals_hf_loss(tiny):
    """Against the model's own forward(labels=...) for a single document."""
    model, _ = tiny
    ex = random_examples(1, seed=5)[0]
    b = collate([ex])
    with torch.no_grad():
        total, n = PackedCausalLM(model, chunk=5)(**model_inputs(b, "sdpa"), targets=b.targets)
        ref = model(input_ids=b.input_ids, labels=torch.tensor([ex.labels])).loss
    assert torch.allclose(total / n, ref, atol=1e-5, rtol=0)


def _grads(lm, micro_batches):
    """Accumulate like the loop does: each micro-batch's sum divided by the global count."""
    lm.zero_grad(set_to_none=True)
    n_global = sum(b.n_supervised for b in micro_batches)
    loss = 0.0
    for b in micro_batches:
        s, _ = lm(**model_inputs(b, "sdpa"), targets=b.targets)
        (s / n_global).backward()
        loss += float(s.detach()) / n_global
    return loss, {k: p.grad.clone() for k, p in lm.named_parameters() if p.grad is not None}


def test_batch8_accum1_equals_batch1_accum8(tiny):
    model, _ = tiny
    lm = PackedCausalLM(copy.deepcopy(model).train())
    docs = random_examples(8, seed=6)
    loss_a, grads_a = _grads(lm, [collate(docs)])
    loss_b, grads_b = _grads(lm, [collate([d]) for d in docs])
    assert abs(loss_a - loss_b) < 1e-5
    assert grads_a.keys() == grads_b.keys() and grads_a
    for k in grads_a:
        assert torch.allclose(grads_a[k], grads_b[k], atol=1e-5, rtol=0), k
