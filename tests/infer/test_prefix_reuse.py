"""Prefix KV reuse in packed multiple-choice scoring: shared few-shot demonstrations run once."""
from __future__ import annotations

import pytest

import tunelab.infer.loglik as loglik
from tunelab.infer.loglik import score_choices, shared_prefix

DEMOS = "".join(f"Question: what comes after {i}?\nAnswer: {i + 1}\n\n" for i in range(5))  # first_n demos
REQUESTS = [
    (DEMOS + "Question: what comes after 7?\nAnswer:", [" 8", " 9", " seven"]),
    (DEMOS + "Question: what comes after 41?\nAnswer:", [" 42", " 40 or so", " 1"]),
    (DEMOS + "Question: is the sky green?\nAnswer:", [" no", " yes, always"]),
    (DEMOS + "Q:", [" x", " y z"]),
]


def _argmax(scores):
    return max(range(len(scores)), key=lambda i: scores[i][0])


def test_shared_prefix_is_the_common_tokens_minus_the_last_context_token():
    a = list(range(40)) + [7, 8]
    b = list(range(40)) + [9]
    assert shared_prefix([a, b]) == list(range(40))
    assert shared_prefix([list(range(20)), list(range(20))]) == list(range(19))  # the last token stays with the item
    assert shared_prefix([a]) == []  # one item: nothing to share
    assert shared_prefix([a, [0, 1, 2] + a]) == []  # too short a common prefix


@pytest.mark.parametrize("batch_size", [1, 16])
def test_reused_prefix_scores_equal_the_no_reuse_path(tiny, batch_size, monkeypatch):
    model, tok = tiny
    runs = []
    real = loglik._prefix_kv
    monkeypatch.setattr(loglik, "_prefix_kv", lambda m, p: runs.append(len(p)) or real(m, p))
    reused = score_choices(model, tok, REQUESTS, batch_size=batch_size, reuse_prefix=True)
    assert len(runs) == 1 and runs[0] >= loglik.MIN_SHARED_PREFIX  # the demos ran once
    plain = score_choices(model, tok, REQUESTS, batch_size=batch_size, reuse_prefix=False)
    assert len(runs) == 1
    for r, p in zip(reused, plain):
        assert [x for x, _ in r] == pytest.approx([x for x, _ in p], abs=1e-4)
        assert [g for _, g in r] == [g for _, g in p]
        assert _argmax(r) == _argmax(p)


def test_reused_prefix_matches_one_sequence_per_choice(tiny):
    model, tok = tiny
    got = score_choices(model, tok, REQUESTS, batch_size=16)
    for (context, conts), scores in zip(REQUESTS, got):
        ref = loglik.score_reference(model, tok, context, conts)
        assert [s for s, _ in scores] == pytest.approx([s for s, _ in ref], abs=1e-4)
