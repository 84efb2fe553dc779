"""Parity with the reference tools.

Checked against sacrebleu 2.6.0 (`sacrebleu.corpus_bleu / corpus_chrf / corpus_ter`,
`sacrebleu.sentence_bleu`) and rouge-score 0.1.2 (`rouge_scorer.RougeScorer(...).score`),
the versions installed in /work/venv; the tools are called here, not their numbers pasted.
"""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tunelab.evaluate.metrics import get_metric

HYPS = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog",
        "Hello world", "It rained all day in Paris, so we stayed inside.", ""]
REFS = ["The cat is sitting on the mat.", "The quick brown fox jumped over the lazy dog.",
        "Hello, world!", "It was raining all day in Paris and we stayed in.", "Nothing here."]
REFS2 = ["A cat sat on the mat.", "A fast brown fox leaps over a lazy dog.", "hello world",
         "We stayed inside because it rained in Paris.", "Empty."]


@pytest.mark.parametrize("name,options,fn,kwargs", [
    ("bleu", {}, sacrebleu.corpus_bleu, {}),
    ("bleu", {"tokenize": "intl", "lowercase": True}, sacrebleu.corpus_bleu, {"tokenize": "intl", "lowercase": True}),
    ("chrf", {}, sacrebleu.corpus_chrf, {}),
    ("chrf", {"word_order": 2}, sacrebleu.corpus_chrf, {"word_order": 2}),
    ("ter", {}, sacrebleu.corpus_ter, {}),
])
@pytest.mark.parametrize("multi", [False, True])
def test_corpus_scores_match_sacrebleu(name, options, fn, kwargs, multi):
    refs = [[r, r2] for r, r2 in zip(REFS, REFS2)] if multi else [[r] for r in REFS]
    streams = [REFS, REFS2] if multi else [REFS]
    r = get_metric({name: options}).compute(HYPS, refs)
    assert r.value == pytest.approx(fn(HYPS, streams, **kwargs).score, abs=1e-9)
    assert "sacrebleu:" + sacrebleu.__version__ in r.signature


def test_bleu_sentence_scores_match_sentence_bleu():
    r = get_metric("bleu").compute(HYPS, [[x] for x in REFS])
    expected = [sacrebleu.sentence_bleu(h, [x]).score for h, x in zip(HYPS, REFS)]
    assert r.item_values == pytest.approx(expected)
    # the corpus score is not the mean of sentence scores
    assert r.value != pytest.approx(float(np.mean(expected)))


def test_corpus_bootstrap_ci_brackets_value_and_is_seeded():
    m = get_metric("bleu")
    a = m.compute(HYPS * 4, [[x] for x in REFS] * 4, seed=7)
    b = m.compute(HYPS * 4, [[x] for x in REFS] * 4, seed=7)
    assert a.ci95 == b.ci95 and a.ci95[0] <= a.value <= a.ci95[1] and a.stderr > 0


@pytest.mark.parametrize("rouge_type", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
@pytest.mark.parametrize("stem", [False, True])
def test_rouge_matches_rouge_score(rouge_type, stem):
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=stem)
    hyps = [h.replace(", ", ",\n") for h in HYPS]  # newlines matter for rougeLsum
    expected = [scorer.score(ref, h)[rouge_type].fmeasure for h, ref in zip(hyps, REFS)]
    r = get_metric({rouge_type: {"use_stemmer": stem}}).compute(hyps, [[x] for x in REFS])
    assert r.item_values == pytest.approx(expected)
    assert r.value == pytest.approx(float(np.mean(expected)))
    assert 0.0 <= r.value <= 1.0


def test_rouge_multi_reference_takes_best():
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    r = get_metric("rouge1").item_score(HYPS[1], [REFS[1], REFS2[1]], {})
    assert r == pytest.approx(max(scorer.score(x, HYPS[1])["rouge1"].fmeasure for x in (REFS[1], REFS2[1])))
