"""The SQLite request cache: keyed by model, adapter and request; a rerun does no model work."""
from __future__ import annotations

import json

import yaml

from tunelab.infer import loglik
from tunelab.evaluate.cache import RequestCache, cached_call
from tunelab.evaluate.runner import evaluate


def test_keys_depend_on_model_adapter_and_request(tmp_path):
    a = RequestCache("sha-a", None, tmp_path / "c.sqlite")
    assert a.key("loglik", ["ctx", [" x"]]) == RequestCache("sha-a", None, tmp_path / "c.sqlite").key("loglik", ["ctx", [" x"]])
    assert a.key("loglik", ["ctx", [" x"]]) != a.key("loglik", ["ctx", [" y"]])
    assert a.key("loglik", ["ctx", [" x"]]) != RequestCache("sha-b", None, tmp_path / "c.sqlite").key("loglik", ["ctx", [" x"]])
    assert a.key("loglik", ["ctx", [" x"]]) != RequestCache("sha-a", "adapter", tmp_path / "c.sqlite").key("loglik", ["ctx", [" x"]])


def test_cached_call_computes_only_misses(tmp_path):
    c = RequestCache("m", None, tmp_path / "c.sqlite")
    calls = []

    def compute(reqs):
        calls.append(list(reqs))
        return [{"n": len(r)} for r in reqs]

    assert cached_call(c, "k", ["a", "bb"], compute) == [{"n": 1}, {"n": 2}]
    assert cached_call(c, "k", ["bb", "ccc", "a"], compute) == [{"n": 2}, {"n": 3}, {"n": 1}]
    assert calls == [["a", "bb"], ["ccc"]]
    c.close()
    reopened = RequestCache("m", None, tmp_path / "c.sqlite")  # persisted on disk
    assert cached_call(reopened, "k", ["ccc"], compute) == [{"n": 3}] and len(calls) == 2


def test_rerun_with_cache_skips_the_model(tiny_dir, tmp_path, monkeypatch):
    rows = [{"q": f"Is {i} even?", "options": ["yes", "no"], "label": i % 2} for i in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({"name": "t", "data": "d.jsonl", "type": "multiple_choice",
                                                     "prompt": "{{ q }}", "choices": "{{ options }}",
                                                     "answer": "{{ label }}", "metrics": ["acc"]}))
    first = evaluate(str(tiny_dir), tmp_path / "t.yaml", cache=True)

    def no_model(*a, **k):
        raise AssertionError("the model ran although every request was cached")

    monkeypatch.setattr(loglik, "score_choices", no_model)
    second = evaluate(str(tiny_dir), tmp_path / "t.yaml", cache=True)
    assert second.metrics == first.metrics
    assert [p["choice_logliks"] for p in second.predictions] == [p["choice_logliks"] for p in first.predictions]
    # a changed prompt is a miss, not a stale hit
    (tmp_path / "t.yaml").write_text((tmp_path / "t.yaml").read_text().replace("'{{ q }}'", "'Q: {{ q }}'"))
    try:
        evaluate(str(tiny_dir), tmp_path / "t.yaml", cache=True)
        raise RuntimeError("expected the model to run")
    except AssertionError as e:
        assert "the model ran" in str(e)
