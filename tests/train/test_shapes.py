"""Fixed shapes: every packed micro-batch reaches the model as one shape, padding is inert and cheap."""
from __future__ import annotations

import json
import random

import pytest
import torch

from tunelab.models import attention  # the per-span kernel training attention runs on
from tunelab.train.attention import DOC_ATTN
from tunelab.train.attention import register as register_doc_attention
from tunelab.train.loop import Recipe
from tunelab.train.loss import PackedCausalLM
from tunelab.train.packing import IGNORE, SHAPE_MULTIPLE, collate, model_inputs, plan_batches, row_width

from .conftest import metrics
from .helpers import random_examples

# documented in docs/training.md ("Fixed shapes"): packed training and evaluation rows, one shape per run
SHAPES_PER_RUN = 1


def test_row_width_rounds_the_budget_up_to_the_shape_multiple():
    assert SHAPE_MULTIPLE == 128
    assert row_width(1) == 128 and row_width(128) == 128 and row_width(129) == 256 and row_width(8192) == 8192


def test_an_epoch_of_random_lengths_has_one_shape():
    r = random.Random(5)
    lengths = [r.randint(3, 700) for _ in range(400)]
    docs = random_examples(1)  # the shape does not depend on the content: reuse one document's ids
    width = row_width(1000)
    shapes = set()
    for batch in plan_batches(lengths, 1000, seed=1):
        ex = [type(docs[0])([5] * lengths[i], [5] * lengths[i]) for i in batch]
        b = collate(ex, width=width)
        shapes.add(tuple(b.input_ids.shape))
        assert b.n_tokens == sum(lengths[i] for i in batch)
        pad = b.doc_ids[0] < 0
        # the pad document: never trained, positions restart at 0
        assert bool((b.targets[0][pad] == IGNORE).all())
        if pad.any():
            assert int(b.position_ids[0][pad][0]) == 0
    assert shapes == {(1, width)}


@pytest.mark.parametrize("impl", ["sdpa", DOC_ATTN])
def test_padded_packed_loss_equals_documents_one_by_one(tiny, impl):
    model, _ = tiny
    register_doc_attention()
    model.set_attn_implementation(impl)
    try:
        lm = PackedCausalLM(model)
        docs = random_examples(6, seed=11)
        with torch.no_grad():
            packed = collate(docs, width=row_width(sum(len(d.input_ids) for d in docs) + 1))
            assert bool((packed.doc_ids < 0).any())  # there is padding to ignore
            s_packed, n_packed = lm(**model_inputs(packed, impl), targets=packed.targets)
            s_alone, n_alone = 0.0, 0
            for d in docs:
                b = collate([d])
                s, n = lm(**model_inputs(b, "sdpa"), targets=b.targets)
                s_alone, n_alone = s_alone + s, n_alone + n
        assert n_packed == n_alone
        assert torch.allclose(s_packed / n_packed, s_alone / n_alone, atol=1e-5, rtol=0)
    finally:
        model.set_attn_implementation("sdpa")


def test_per_document_attention_never_computes_the_pad_document(tiny, monkeypatch):
    model, _ = tiny
    register_doc_attention()
    docs = random_examples(3, seed=12)
    real = sum(len(d.input_ids) for d in docs)
    packed = collate(docs, width=real + 300)
    inputs = model_inputs(packed, DOC_ATTN)
    assert inputs["doc_lengths"] == tuple(len(d.input_ids) for d in docs)  # the pad is not a document here
    seen = []
    sdpa = attention.F.scaled_dot_product_attention

    def counting(q, *a, **kw):
        seen.append(q.shape[2])
        return sdpa(q, *a, **kw)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting)
    model.set_attn_implementation(DOC_ATTN)
    try:
        with torch.no_grad():
            PackedCausalLM(model)(**inputs, targets=packed.targets)
    finally:
        model.set_attn_implementation("sdpa")
    layers = model.config.num_hidden_layers
    assert sum(seen) == real * layers  # query rows attended: the real tokens only, in every layer


def _random_length_data(path, n=48, seed=3):
    r = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            words = " ".join(r.choice(["one", "two", "three", "plus", "is", "the"]) for _ in range(r.randint(1, 60)))
            f.write(json.dumps({"prompt": f"Say {r.randint(0, 99)}", "completion": words}) + "\n")
    return path


def test_a_compiled_run_feeds_the_model_one_shape(make_config, tmp_path, monkeypatch):
    """End to end: over an epoch of random lengths (training and evaluation) the decoder sees ≤ SHAPES_PER_RUN shapes."""
    monkeypatch.setenv("TUNELAB_COMPILE_BACKEND", "aot_eager")  # no C++ build: keeps the test fast
    data = _random_length_data(tmp_path / "random.jsonl")
    cfg = make_config("shapes", data={"train": str(data), "eval": 0.2},
                      train={"max_steps": None, "epochs": 1, "batch_tokens": 300, "eval_every": 3, "save_every": 100,
                             "compile": True})
    from tunelab.config import load_train_config

    recipe = Recipe(load_train_config(cfg))
    recipe.setup()
    shapes = set()
    decoder = recipe._inner().get_base_model().get_decoder()
    decoder.register_forward_pre_hook(lambda m, a, kw: shapes.add(tuple(kw["input_ids"].shape)), with_kwargs=True)
    res = recipe.train()
    assert res.summary["steps"] >= 3 and res.summary["row_width"] == 384
    assert len(shapes) <= SHAPES_PER_RUN and shapes == {(1, 384)}
    rows = metrics(res.run_dir)
    # tokens are real tokens only: the padding is not counted
    assert sum(r["tokens"] for r in rows) == res.summary["tokens_seen"] < res.summary["steps"] * 384
    assert 1 <= res.summary["compiles"] <= 4  # once per shape (and mode), not once per step


def test_eager_cpu_rows_keep_their_length(make_config):
    """Without compile on CPU shapes cost nothing, so no row is padded (no MLP work on pad tokens)."""
    from tunelab.config import load_train_config

    recipe = Recipe(load_train_config(make_config("exact", train={"max_steps": 1})))
    recipe.setup()
    assert recipe.data.row_width is None and recipe.facts.compile is False
