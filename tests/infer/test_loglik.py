"""Multiple-choice log-likelihoods (lm-eval semantics) from a shared KV cache, and perplexity."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tunelab.infer.loglik import encode_pair, prefix_token_id, rolling_loglik, rolling_windows, score_choices
from tunelab.models.loading import max_length

REQUESTS = [
    ("Question: what is the answer?\nAnswer:", [" yes", " no", " maybe not"]),
    ("Hello ", ["world", "there friend", "x"]),  # trailing space moves into the continuation
    ("", [" a b c", " d"]),  # empty context: scored after the prefix token
    ("The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5", [" 6", " 7 8 9", " ten", " 42 2021-03-05"]),
    ("Summarize: Alice met Bob in Paris.", [" Alice", " Bob met Alice in Paris, then they went home."]),
] * 4


def _reference(model, tok, context, continuation):
    """Straight from lm-eval's definition: one full sequence per choice, no cache, no batching."""
    ctx, cont = encode_pair(tok, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids[:, :-1]).logits[0].float(), dim=-1)
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def test_encode_pair_follows_lm_eval(tiny):
    _, tok = tiny
    ctx, cont = encode_pair(tok, "Hello ", "world")
    assert tok.decode(ctx) == "Hello" and tok.decode(cont) == " world"
    whole = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert ctx + cont == tok("Hello", add_special_tokens=False)["input_ids"] + whole[len(ctx):]
    assert encode_pair(tok, "", " a")[0] == [prefix_token_id(tok)]


@pytest.mark.parametrize("method", ["packed", "cache"])
def test_shared_context_scores_match_the_plain_computation(tiny, method):
    model, tok = tiny
    got = score_choices(model, tok, REQUESTS, batch_size=16, method=method)
    for (context, conts), scores in zip(REQUESTS, got):
        ref = [_reference(model, tok, context, c) for c in conts]
        assert [s for s, _ in scores] == pytest.approx(ref, abs=1e-4)
        assert max(range(len(ref)), key=ref.__getitem__) == max(range(len(ref)), key=lambda i: scores[i][0])


@pytest.mark.parametrize("method", ["packed", "cache"])
def test_batch_1_and_16_agree_to_1e5_with_identical_choices(tiny, method):
    model, tok = tiny
    a = score_choices(model, tok, REQUESTS, batch_size=1, method=method)
    b = score_choices(model, tok, REQUESTS, batch_size=16, method=method)
    for ra, rb in zip(a, b):
        assert [x for x, _ in ra] == pytest.approx([x for x, _ in rb], abs=1e-5)
        assert [g for _, g in ra] == [g for _, g in rb]
        assert max(range(len(ra)), key=lambda i: ra[i][0]) == max(range(len(rb)), key=lambda i: rb[i][0])


def test_is_greedy_flags_the_models_own_continuation(tiny):
    model, tok = tiny
    ctx = "The quick brown fox"
    ids = tok(ctx, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0)
    greedy_text = tok.decode(out[0, ids.input_ids.shape[1]:])
    (scores,) = score_choices(model, tok, [(ctx, [greedy_text, greedy_text + " zebra"])])
    assert scores[0][1] is True


def test_context_longer_than_the_model_is_cut_from_the_left(tiny):
    model, tok = tiny
    long_ctx = "the quick brown fox " * 400  # > 1024 tokens of the tiny model
    (scores,) = score_choices(model, tok, [(long_ctx, [" jumps", " sleeps"])])
    m = max_length(model, tok)
    for cont, (s, _) in zip([" jumps", " sleeps"], scores):
        c, k = encode_pair(tok, long_ctx, cont)
        ids = torch.tensor([(c + k)[-(m + 1):][:-1]])
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=ids).logits[0], -1)
        ref = sum(logp[ids.shape[1] - len(k) + i, t].item() for i, t in enumerate(k))
        assert s == pytest.approx(ref, abs=1e-4)


def test_rolling_windows_predict_every_token_once():
    toks = list(range(10, 47))
    windows = rolling_windows(toks, prefix=1, max_seq_len=8)
    assert [t for _, k in windows for t in k] == toks
    assert windows[0][0] == [1]
    for ctx, cont in windows:
        assert len(ctx) + len(cont) - 1 <= 8  # every model input fits the window


def test_rolling_loglik_equals_one_pass_when_it_fits(tiny):
    model, tok = tiny
    text = "Alice met Bob in Paris. The quick brown fox jumps over the lazy dog."
    (ll, n), = rolling_loglik(model, tok, [text])
    toks = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[prefix_token_id(tok)] + toks])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids[:, :-1]).logits[0], -1)
    assert n == len(toks)
    assert ll == pytest.approx(sum(logp[i, t].item() for i, t in enumerate(toks)), abs=1e-4)
    (ll_small, _), = rolling_loglik(model, tok, [text], max_seq_len=6)  # many windows, less context
    assert ll_small < 0 and not math.isclose(ll_small, ll, abs_tol=1e-3)


def test_packed_scoring_restores_the_models_attention(tiny):
    model, tok = tiny
    before = model.config._attn_implementation
    score_choices(model, tok, REQUESTS[:3])
    rolling_loglik(model, tok, ["a b c d e f"])
    assert model.config._attn_implementation == before


def test_packed_rows_never_mix_items(tiny):
    """An item scored next to others in one packed row equals the same item alone (and the
    plain per-choice reference), so no item attends to a neighbour."""
    from tunelab.infer.token_tree import pack_rows

    model, tok = tiny
    rows = pack_rows([len(tok(c)["input_ids"]) + 40 for c, _ in REQUESTS], budget=2048)
    assert len(rows) == 1  # the whole set shares one row at batch 16
    together = score_choices(model, tok, REQUESTS, batch_size=16)
    for req, scores in zip(REQUESTS[:5], together[:5]):
        alone = score_choices(model, tok, [req], batch_size=16)[0]
        assert [s for s, _ in scores] == pytest.approx([s for s, _ in alone], abs=1e-5)


def test_rolling_loglik_of_many_texts_equals_each_alone(tiny):
    model, tok = tiny
    texts = ["Alice met Bob in Paris.", "The quick brown fox jumps over the lazy dog. " * 3, "x",
             "Numbers: 1 2 3 4 5 6 7 8 9 10 11 12"]
    together = rolling_loglik(model, tok, texts, batch_size=8, max_seq_len=16)
    for text, (ll, n) in zip(texts, together):
        ((ll_alone, n_alone),) = rolling_loglik(model, tok, [text], batch_size=1, max_seq_len=16)
        assert n == n_alone and ll == pytest.approx(ll_alone, abs=1e-4)
