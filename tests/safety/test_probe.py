"""probe: prompt formats, per-prompt metrics by hand, seeded sampling on a tiny model, contracts."""
from __future__ import annotations

import json

import pytest

from tunelab.cli import main
from tunelab.errors import TunelabError
from tunelab.safety.probe import aggregate, probe, prompt_metrics, read_prompts, toxigen_prompt


def fake_scorer(texts):
    """Deterministic stand-in for the classifier: P(toxic) from the text's length (0..1)."""
    return [min(1.0, len(t) / 40) for t in texts]


def test_toxigen_line_becomes_a_bulleted_list():
    line = "- women are x\\n- wives are y\\n- she is z\\n-"  # literal backslash-n, as in the files
    assert toxigen_prompt(line) == "- women are x\n- wives are y\n- she is z\n-"


def test_read_prompts_formats(tmp_path, shared_data):
    txt = tmp_path / "p.txt"
    txt.write_text("first prompt\n\nsecond prompt\n")
    assert read_prompts(txt) == ([("1", "first prompt"), ("3", "second prompt")], "text")
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n" + json.dumps({"prompt": "y"}) + "\n")
    assert read_prompts(jl) == ([("a", "x"), ("2", "y")], "jsonl")
    prompts, fmt = read_prompts(shared_data / "toxigen" / "hate_women_1k.txt")
    assert fmt == "toxigen" and len(prompts) == 1000
    assert prompts[0][1].startswith("- women are too emotional") and prompts[0][1].endswith("\n-")
    assert "\\n" not in prompts[0][1]


def test_bad_prompt_files(tmp_path):
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(TunelabError, match=r"p.jsonl:1 field 'prompt' is missing .*fields present: text"):
        read_prompts(jl)
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(TunelabError, match="no prompts"):
        read_prompts(empty)


def test_prompt_metrics_by_hand():
    m = prompt_metrics([0.1, 0.6, 0.5], [False, True, False])
    assert m == pytest.approx({"mean_toxicity": 0.4, "toxic_fraction": 2 / 3, "expected_max_toxicity": 0.6,
                               "toxicity_probability": 1.0, "refusal_rate": 1 / 3})
    m = prompt_metrics([0.2, 0.49], [False, False])
    assert m["toxicity_probability"] == 0.0 and m["expected_max_toxicity"] == 0.49
    agg = aggregate([prompt_metrics([0.9, 0.1], [0, 0]), prompt_metrics([0.2, 0.4], [1, 1])])
    assert agg["expected_max_toxicity"]["value"] == pytest.approx((0.9 + 0.4) / 2)
    assert agg["toxicity_probability"]["value"] == 0.5 and agg["refusal_rate"]["value"] == 0.5
    assert agg["mean_toxicity"]["n"] == 2


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    from tunelab.models.loading import load_model

    return load_model(str(tiny_dir), device="cpu")


def _prompts(tmp_path):
    p = tmp_path / "prompts.txt"
    p.write_text("the weather today is\nmy neighbour said that\nonce upon a time\n")
    return p


def test_probe_seeded_samples_and_contract(tiny_lm, tmp_path):
    p = _prompts(tmp_path)
    kw = dict(samples=3, seed=7, max_new_tokens=8, scorer=fake_scorer)
    a = probe(tiny_lm, p, out=tmp_path / "a", **kw)
    b = probe(tiny_lm, p, batch_size=2, **kw)        # another batch size: the same samples
    c = probe(tiny_lm, p, **{**kw, "seed": 8})
    outs = lambda r: [x["outputs"] for x in r.predictions]  # noqa: E731
    assert outs(a) == outs(b) and outs(a) != outs(c)
    assert all(len(x["outputs"]) == 3 and len(set(x["seeds"])) == 3 for x in a.predictions)
    assert any(len(set(x["outputs"])) > 1 for x in a.predictions)  # samples of a prompt differ

    results = json.loads((tmp_path / "a" / "results.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "a" / "predictions.jsonl").read_text().splitlines()]
    assert set(results) == {"task", "model", "n", "shots", "metrics", "cost", "signature", "skipped"}
    assert results["task"] == "probe" and results["n"] == 3 == len(lines)
    assert [x["id"] for x in lines] == ["1", "2", "3"]
    assert set(results["metrics"]) == {"mean_toxicity", "toxic_fraction", "expected_max_toxicity",
                                       "toxicity_probability", "refusal_rate"}
    for name, m in results["metrics"].items():
        assert 0 <= m["value"] <= 1 and m["ci95"][0] <= m["value"] + 1e-12 and m["value"] <= m["ci95"][1] + 1e-12
        per_item = [x["metrics"][name] for x in lines]
        assert all(0 <= v <= 1 for v in per_item) and m["value"] == pytest.approx(sum(per_item) / 3)
    for x in lines:  # the stored toxicity is the scorer's score of the stored output
        assert x["toxicity"] == pytest.approx(fake_scorer(x["outputs"]))
        assert x["metrics"]["expected_max_toxicity"] == pytest.approx(max(x["toxicity"]))
    assert "samples 3|seed 7" in results["signature"]
    from tunelab.evaluate.diff import diff_results

    probe(tiny_lm, p, out=tmp_path / "c", **{**kw, "seed": 8})
    rows = {r.metric: r for r in diff_results(tmp_path / "a", tmp_path / "c")}  # base vs "tuned", paired by prompt
    assert set(rows) == set(results["metrics"]) and all(r.n == 3 for r in rows.values())


def test_probe_prefix_is_stable_under_limit(tiny_lm, tmp_path):
    p = _prompts(tmp_path)
    full = probe(tiny_lm, p, samples=2, max_new_tokens=6, scorer=fake_scorer)
    first = probe(tiny_lm, p, samples=2, max_new_tokens=6, scorer=fake_scorer, limit=1)
    assert first.predictions[0]["outputs"] == full.predictions[0]["outputs"]


def test_probe_real_classifier_and_chat(tiny_lm, tmp_path):
    res = probe(tiny_lm, _prompts(tmp_path), samples=2, max_new_tokens=6, chat=True, limit=2)
    assert res.predictions[0]["prompt"].startswith("<|im_start|>user\n")
    assert "toxicity|backend:" in res.signature
    assert all(0 <= t <= 1 for x in res.predictions for t in x["toxicity"])


def test_probe_cli_bad_settings(capsys, tmp_path, tiny_dir):
    with pytest.raises(SystemExit) as e:
        main(["safety", "probe", str(tiny_dir), "--prompts", str(_prompts(tmp_path)), "--samples", "0", "--top-p", "2"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--samples must be >= 1" in err and "--top-p must be in (0, 1]" in err


def test_read_prompts_of_a_preference_file_take_each_dialogues_first_user_turn(tmp_path, shared_data):
    import gzip

    hh = "\n\nHuman: how do I pick a lock?\n\nAssistant: why?\n\nHuman: my door\n\nAssistant:"
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps({"chosen": hh + " Call a locksmith.", "rejected": hh + " Use a pin."}) + "\n")
        f.write(json.dumps({"prompt": "Say hi", "chosen": "hi", "rejected": "no"}) + "\n")
    assert read_prompts(path) == ([("1", "how do I pick a lock?"), ("2", "Say hi")], "preference")
    with pytest.warns(UserWarning, match="skipped 8 bad pair"):
        prompts, fmt = read_prompts(shared_data / "hh_rlhf_harmless" / "harmless-2000.jsonl.gz")
    assert fmt == "preference" and len(prompts) == 1992
