"""evaluate() end to end on a tiny model: the results contracts (DESIGN 2.2) and bad inputs."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.runner import evaluate

MC_ROWS = [{"id": f"q{i}", "question": f"What comes after {i}?", "options": [str(i + 1), str(i + 2), "none"],
            "label": 0} for i in range(12)]
GEN_ROWS = [{"q": f"Reverse the words: {w}", "a": " ".join(reversed(w.split()))}
            for w in ["hello world", "the quick fox", "alice met bob", "yes no maybe", "one two", "a b c"]]


def _task(tmp_path, name, rows, **spec):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"name": name, "data": data.name, **spec}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _mc_task(tmp_path, **extra):
    return _task(tmp_path, "mc", MC_ROWS, type="multiple_choice", prompt="Q: {{ question }}\nA:",
                 choices="{{ options }}", answer="{{ label }}", metrics=["acc", "acc_norm", "acc_bytes"], **extra)


def test_multiple_choice_writes_both_artifacts(tiny_dir, tmp_path):
    res = evaluate(str(tiny_dir), _mc_task(tmp_path), out=tmp_path / "out", shots=2)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results) == {"task", "model", "n", "shots", "metrics", "cost", "signature", "skipped"}
    assert results["skipped"] is None  # no skip_bad, nothing left out
    assert results["task"] == "mc" and results["n"] == 12 and results["shots"] == 2
    assert set(results["model"]) == {"name", "sha256", "adapter"} and len(results["model"]["sha256"]) == 64
    for name in ("acc", "acc_norm", "acc_bytes"):
        m = results["metrics"][name]
        assert 0 <= m["value"] <= 1 and m["ci95"][0] <= m["value"] <= m["ci95"][1] and m["stderr"] is not None
    cost = results["cost"]
    assert set(cost) == {"wall_s", "tokens", "prompt_tokens", "generated_tokens", "tokens_per_s", "peak_mem_mib"}
    assert cost["tokens"] == cost["prompt_tokens"] > 0 and cost["generated_tokens"] == 0  # scoring generates nothing
    sig = results["signature"]
    assert sig.startswith(f"tunelab 0.1.0|model {results['model']['name']} sha256:{results['model']['sha256'][:16]}|task sha256:")
    assert "|shots 2|sampler random|seed 1234|metric acc" in sig
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [r["id"] for r in MC_ROWS]
    for line, row in zip(lines, MC_ROWS):
        assert len(line["choice_logliks"]) == 3 and line["gold"] == 0 and len(line["demos"]) == 2
        assert line["metrics"]["acc"] == float(line["pred"] == 0)  # the per-item value diff reads
        assert line["prompt"].endswith(f"Q: {row['question']}\nA:")
    assert res.metrics["acc"]["value"] == pytest.approx(sum(x["metrics"]["acc"] for x in lines) / 12)


def test_batch_size_does_not_change_results(tiny_dir, tmp_path):
    task = _mc_task(tmp_path)
    a = evaluate(str(tiny_dir), task, batch_size=1)
    b = evaluate(str(tiny_dir), task, batch_size=16)
    c = evaluate(str(tiny_dir), task, batch_size="auto")
    assert a.metrics == b.metrics == c.metrics and a.signature == b.signature == c.signature
    for other in (b, c):  # 1 vs 16 vs auto: same choices, log-likelihoods within 1e-4
        assert [p["pred"] for p in a.predictions] == [p["pred"] for p in other.predictions]
        for p, q in zip(a.predictions, other.predictions):
            assert p["choice_logliks"] == pytest.approx(q["choice_logliks"], abs=1e-4)


def test_generate_task_with_response_metrics(tiny_dir, tmp_path):
    task = _task(tmp_path, "gen", GEN_ROWS, prompt="{{ q }}", answer="{{ a }}", metrics=["exact_match", "chrf"],
                 generation={"max_new_tokens": 6, "stop": ["\n"]})
    res = evaluate(str(tiny_dir), task, out=tmp_path / "g", limit=4)
    assert res.n == 4 and set(res.metrics) == {"exact_match", "chrf"}
    line = json.loads((tmp_path / "g" / "predictions.jsonl").read_text().splitlines()[0])
    for key in ("id", "prompt", "output", "gold", "metrics", "length_chars", "length_tokens", "latency_s",
                "tokens_per_s", "refusal", "toxicity"):
        assert key in line
    assert line["gold"] == ["world hello"] and "\n" not in line["output"] and line["length_tokens"] <= 6
    lines = [json.loads(x) for x in (tmp_path / "g" / "predictions.jsonl").read_text().splitlines()]
    # generated tokens are counted apart from prompt tokens (inference cost per query)
    assert res.cost["generated_tokens"] == sum(x["length_tokens"] for x in lines) > 0
    assert res.cost["prompt_tokens"] > 0 and res.cost["tokens"] == res.cost["prompt_tokens"] + res.cost["generated_tokens"]


def test_perplexity_task(tiny_dir, tmp_path):
    rows = [{"text": "The quick brown fox jumps over the lazy dog."}, {"text": "Alice met Bob in Paris."}]
    task = _task(tmp_path, "ppl", rows, type="perplexity", text="{{ text }}",
                 metrics=["token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"])
    res = evaluate(str(tiny_dir), task)
    lines = res.predictions
    ll, ntok, nbytes = sum(x["loglik"] for x in lines), sum(x["n_tokens"] for x in lines), sum(x["n_bytes"] for x in lines)
    import math
    assert res.metrics["token_perplexity"]["value"] == pytest.approx(math.exp(-ll / ntok))
    assert res.metrics["bits_per_byte"]["value"] == pytest.approx(-ll / nbytes / math.log(2))


def test_retrieval_task(tmp_path):
    corpus = [{"id": "d1", "text": "cats purr and sleep"}, {"id": "d2", "text": "dogs bark loudly"},
              {"id": "d3", "text": "stock prices fell"}]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"id": "1", "text": "why do cats purr"}) + "\n"
                                            + json.dumps({"id": "2", "text": "prices"}) + "\n")
    (tmp_path / "qrels.txt").write_text("1 0 d1 1\n2 0 d2 1\n2 0 d3 0\n")
    spec = {"name": "r", "type": "retrieval", "corpus": "corpus.jsonl", "queries": "queries.jsonl",
            "qrels": "qrels.txt", "metrics": ["map", "P_1", "recip_rank"]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    res = evaluate("unused", tmp_path / "r.yaml", out=tmp_path / "ro")
    # query 1 finds its document first (AP 1); query 2 only matches the non-relevant d3 (AP 0)
    assert res.metrics["map"]["value"] == pytest.approx(0.5)
    assert res.metrics["P_1"]["value"] == pytest.approx(0.5)
    assert res.metrics["recip_rank"]["value"] == pytest.approx(0.5)
    assert [p["metrics"]["map"] for p in res.predictions] == [1.0, 0.0]
    assert json.loads((tmp_path / "ro" / "results.json").read_text())["n"] == 2


# ---------------------------------------------------------------- bad input
def test_missing_field_is_reported_with_record(tiny_dir, tmp_path):
    task = _task(tmp_path, "mc2", MC_ROWS, type="multiple_choice", prompt="{{ context }}",
                 choices="{{ options }}", answer="{{ label }}", metrics=["acc"])
    with pytest.raises(TunelabError, match=r"mc2.jsonl:1: the 'prompt' template .* uses field 'context'.*id, label, options, question"):
        evaluate(str(tiny_dir), task)


def test_empty_data_file(tiny_dir, tmp_path):
    task = _mc_task(tmp_path)
    (tmp_path / "mc.jsonl").write_text("")
    with pytest.raises(TunelabError, match="no records in the file"):
        evaluate(str(tiny_dir), task)


def test_unknown_metric_lists_known_ones_before_loading_the_model(tmp_path):
    task = _task(tmp_path, "g", GEN_ROWS, prompt="{{ q }}", answer="{{ a }}", metrics=["exact_match", "accuracy"])
    with pytest.raises(TunelabError, match=r"unknown metric 'accuracy'; known metrics: .*exact_match"):
        evaluate("no-such-model-folder", task)


def test_bad_arguments_name_the_parameters(tmp_path):
    """The library words its checks with its own parameter names; the CLI shows flags instead."""
    with pytest.raises(TunelabError, match="^limit must be at least 1"):
        evaluate("unused", _mc_task(tmp_path), limit=0)
    with pytest.raises(TunelabError, match="^batch_size must be a whole number >= 1 or 'auto', got 0"):
        evaluate("no-such-model-folder", _mc_task(tmp_path), batch_size=0)  # checked before any model loads
    with pytest.raises(TunelabError, match="^shots must be >= 0"):
        evaluate("unused", _mc_task(tmp_path), shots=-1)


def test_gold_out_of_range_and_choices_not_a_list(tiny_dir, tmp_path):
    bad = [dict(MC_ROWS[0], label=5)]
    with pytest.raises(TunelabError, match=r"bad.jsonl:1: gold index 5 is out of range for 3 choices"):
        evaluate(str(tiny_dir), _task(tmp_path, "bad", bad, type="multiple_choice", prompt="{{ question }}",
                                      choices="{{ options }}", answer="{{ label }}", metrics=["acc"]))
    bad = [dict(MC_ROWS[0], options="1 2 3")]
    with pytest.raises(TunelabError, match=r"bad2.jsonl:1: 'choices' must give a list"):
        evaluate(str(tiny_dir), _task(tmp_path, "bad2", bad, type="multiple_choice", prompt="{{ question }}",
                                      choices="{{ options }}", answer="{{ label }}", metrics=["acc"]))
