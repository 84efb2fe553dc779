"""Evaluation reads the encoded-data cache: a perplexity task's documents are tokenised once per
(texts, tokenizer); a rerun does not tokenise again, a change of what renders the texts does."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.infer import loglik
from tunelab.evaluate.runner import evaluate
from tunelab.models.tiny import tiny_tokenizer
from tunelab.templates import cache as cache_mod
from tunelab.templates.cache import entries, token_lists

ROWS = [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "Alice met Bob in Paris."},
        {"text": "Zoë's café — naïve résumé."}, {"text": "one two three " * 20}]


@pytest.fixture
def tokenised(monkeypatch):
    """Texts tokenised by the cache, and texts tokenised by loglik's own per-text path."""
    seen = {"cache": [], "loglik": []}
    real_many, real_one = cache_mod.tokenize_many, loglik._encode

    def many(tok, texts):
        seen["cache"] += texts
        return real_many(tok, texts)

    def one(tok, text):
        seen["loglik"].append(text)
        return real_one(tok, text)

    monkeypatch.setattr(cache_mod, "tokenize_many", many)
    monkeypatch.setattr(loglik, "_encode", one)
    return seen


def _ppl_task(tmp_path, text="{{ text }}", name="ppl"):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "data": "docs.jsonl", "type": "perplexity", "text": text,
                                    "metrics": ["token_perplexity"]}))
    return path


def test_second_eval_does_not_tokenise_again(tiny_dir, tmp_path, tokenised):
    task = _ppl_task(tmp_path)
    first = evaluate(str(tiny_dir), task)
    assert len(tokenised["cache"]) == len(ROWS) and tokenised["loglik"] == []
    again = evaluate(str(tiny_dir), task)
    assert len(tokenised["cache"]) == len(ROWS)  # read back from the memory-mapped entry
    assert [p["loglik"] for p in again.predictions] == [p["loglik"] for p in first.predictions]
    assert [p["n_tokens"] for p in again.predictions] == [p["n_tokens"] for p in first.predictions]
    assert [m["spec"] for _, _, m in entries()] == [f"{len(ROWS)} perplexity texts"]


def test_changed_text_template_or_limit_tokenises_again(tiny_dir, tmp_path, tokenised):
    evaluate(str(tiny_dir), _ppl_task(tmp_path))
    n = len(tokenised["cache"])
    evaluate(str(tiny_dir), _ppl_task(tmp_path, text="Document: {{ text }}", name="ppl2"))
    assert len(tokenised["cache"]) == n + len(ROWS)
    assert tokenised["cache"][-1].startswith("Document: ")
    evaluate(str(tiny_dir), _ppl_task(tmp_path), limit=2)  # other texts: a new entry
    assert len(tokenised["cache"]) == n + len(ROWS) + 2 and len(entries()) == 3


def test_cached_scores_equal_the_per_text_path(tiny):
    model, tok = tiny
    texts = [r["text"] for r in ROWS] + [""]
    cached = token_lists(tok, texts)
    assert [cached[i] for i in range(len(texts))] == [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    want = loglik.rolling_loglik(model, tok, texts, max_seq_len=16)
    got = loglik.rolling_loglik(model, tok, texts, max_seq_len=16, tokens=token_lists(tok, texts))
    assert got == want


def test_tokenizer_and_version_are_in_the_key(tokenised, monkeypatch):
    texts = ["a few words", "and some more"]
    assert not token_lists(tiny_tokenizer(), texts).hit
    assert token_lists(tiny_tokenizer(), texts).hit
    assert not token_lists(tiny_tokenizer(vocab_size=300), texts).hit
    assert not token_lists(tiny_tokenizer(), ["a few wordsand", " some more"]).hit  # same characters, other texts
    monkeypatch.setattr(cache_mod, "ENCODING_VERSION", cache_mod.ENCODING_VERSION + 1)
    assert not token_lists(tiny_tokenizer(), texts).hit
