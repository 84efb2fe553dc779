"""Retention in compare: what each arm kept of general ability, checked before any arm runs, shared by prompted arms."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunelab.compare.run import compare
from tunelab.compare.sentences import retention_cost_sentence, retention_sentences
from tunelab.errors import TunelabError

TINY_TRAIN = {"train": {"max_steps": 3, "batch_tokens": 256}, "data": {"max_length": 128}}


@pytest.fixture()
def files(tmp_path):
    mc = tmp_path / "evens.jsonl"
    mc.write_text("".join(json.dumps({"id": f"e{i}", "q": f"Is {i} even?", "choices": ["yes", "no"], "gold": i % 2}) + "\n"
                          for i in range(12)))
    (tmp_path / "evens.yaml").write_text(yaml.safe_dump({
        "name": "evens", "data": "evens.jsonl", "type": "multiple_choice", "prompt": "{{ q }}",
        "choices": "{{ choices }}", "answer": "{{ gold }}", "metrics": ["acc"]}))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({
        "name": "search", "type": "retrieval", "corpus": "c.jsonl", "queries": "q.jsonl", "qrels": "r.txt",
        "metrics": ["map"]}))
    (tmp_path / "general.jsonl").write_text("".join(json.dumps({"instruction": f"Name a {w}.", "output": w}) + "\n"
                                                    for w in ("colour", "fruit", "tree", "river", "city")))
    return tmp_path


def config(tiny_dir, files, **over):
    base = {"name": "r", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
            "limit": 4, "arms": ["zero_shot", {"few_shot": {"k": [1]}}, {"lora": {"n": [8]}}],
            "train": TINY_TRAIN, "retention": [str(files / "evens.yaml")],
            "retention_prompts": {"limit": 4, "max_new_tokens": 6}}
    base.update(over)
    return base


@pytest.mark.parametrize("over, message", [
    ({"retention": ["builtin:dates"]}, "retention[0]: builtin:dates is the compare's own task"),
    ({"retention": ["SEARCH"]}, "retention[0]: task 'search' is a retrieval task"),
    ({"retention": ["nope.yaml"]}, "retention[0]: nope.yaml not found"),
    ({"retention": [{"task": "EVENS", "limit": 0}]}, "retention[0].limit: must be greater than or equal to 1"),
    ({"arms": [{"lora": {"n": [8], "train": {"replay": {"data": "GENERAL", "ratio": 1.5}}}}]},
     "replay.ratio: must be less than 1"),
    ({"arms": [{"lora": {"n": [8], "train": {"replay": {"data": "BROKEN"}}}}]},
     "train.replay.data: cannot be read as training data"),
    ({"arms": [{"lora": {"n": [8], "train": {"replay": {"data": "missing.jsonl"}}}}]}, "train.replay.data: "),
    ({"retention_prompts": "none.jsonl"}, "retention_prompts: none.jsonl not found"),
    # issue 34 item 8: the dry run read these, the real run only when it first scored retention
    ({"retention": ["NODATA"]}, "data file not found: looked for missing.jsonl"),
    ({"retention": ["BADFIELD"]}, "question"),
])
def test_bad_retention_input_is_one_line_before_any_arm_runs(tiny_dir, files, over, message):
    (files / "broken.jsonl").write_text('{"instruction": "x", "output": "y"}\n{not json\n')
    evens = yaml.safe_load((files / "evens.yaml").read_text())
    (files / "nodata.yaml").write_text(yaml.safe_dump(dict(evens, name="nodata", data="missing.jsonl")))
    (files / "badfield.yaml").write_text(yaml.safe_dump(dict(evens, name="badfield", prompt="{{ question.text }}")))
    names = {"SEARCH": str(files / "search.yaml"), "EVENS": str(files / "evens.yaml"),
             "GENERAL": str(files / "general.jsonl"), "BROKEN": str(files / "broken.jsonl"),
             "NODATA": str(files / "nodata.yaml"), "BADFIELD": str(files / "badfield.yaml")}
    text = json.dumps(over)
    for k, v in names.items():
        text = text.replace(f'"{k}"', json.dumps(v))
    with pytest.raises(TunelabError) as e:
        compare(config(tiny_dir, files, **json.loads(text)), out=files / "out", say=lambda m: None)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (files / "out" / "arms").exists()  # nothing ran


@pytest.fixture()
def done(tiny_dir, files):
    arms = ["zero_shot", {"few_shot": {"k": [1]}}, {"lora": {"n": [8]}},
            {"full": {"n": [8], "train": {"train": {"lr": 5e-3}}}},
            {"lora": {"n": [8], "train": {"replay": {"data": str(files / "general.jsonl"), "ratio": 0.2}}}}]
    return compare(config(tiny_dir, files, arms=arms), out=files / "c", say=lambda m: None)


def test_prompted_arms_share_one_base_score_fine_tunes_have_their_own(done):
    s, out = done.summary, done.out
    by_id = {a["id"]: a for a in s["arms"]}
    assert set(by_id) == {"zero_shot", "few_shot-k1-random", "lora-n8", "full-n8", "lora-n8-replay"}
    base = out / "retention" / "tiny-llama" / "evens"
    assert (base / "results.json").is_file()
    for aid in ("zero_shot", "few_shot-k1-random"):
        e = by_id[aid]["retention"][0]
        assert e["shared_base"] and e["dir"] == "retention/tiny-llama/evens" and e["value"] == e["base_value"]
        assert e["diff_vs_base"] == {"delta": 0.0, "ci95": [0.0, 0.0], "p": 1.0, "n": 12}
        assert by_id[aid]["drift"] == {"kl_per_token": 0.0, "ci95": [0.0, 0.0], "shared_base": True}
        assert not (out / "arms" / aid / "retention").exists()
    for aid in ("lora-n8", "full-n8", "lora-n8-replay"):
        e = by_id[aid]["retention"][0]
        assert not e["shared_base"] and (out / e["dir"] / "predictions.jsonl").is_file()
        assert e["diff_vs_base"]["n"] == 12 and 0.0 <= e["diff_vs_base"]["p"] <= 1.0
        d = by_id[aid]["drift"]
        assert d["n_prompts"] == 4 and d["kl_per_token"] > 0 and d["ci95"][0] <= d["kl_per_token"] <= d["ci95"][1]
    # the full fine-tune at a high learning rate was scored with its own weights, not the base's
    lines = lambda p: [json.loads(x) for x in (p / "predictions.jsonl").read_text().splitlines()]  # noqa: E731
    full = lines(out / by_id["full-n8"]["retention"][0]["dir"])
    assert any(abs(a - b) > 1e-3 for f, b_ in zip(full, lines(base)) for a, b in zip(f["choice_logliks"], b_["choice_logliks"]))
    # the time retention added: the base model's share once, each fine-tune's own
    wall = s["retention"]["wall_s"]
    assert len(wall["base"]) == 1  # one base model: its retention is scored once, for both prompted arms
    assert set(wall["arms"]) == {"lora-n8", "full-n8", "lora-n8-replay"}
    assert wall["total"] == pytest.approx(sum(wall["base"].values()) + sum(wall["arms"].values()), abs=1e-6)
    assert s["retention"]["tasks"] == [{"name": "evens", "metric": "acc", "higher_is_better": True, "limit": None,
                                        "n_items": 12}]


def test_replay_arm_trains_on_its_share_of_general_records(done):
    summary = json.loads((done.out / "arms" / "lora-n8-replay" / "train" / "summary.json").read_text())
    assert summary["train_rows"] == 8 + 2  # round(8 * 0.2 / 0.8) = 2 replay rows: 20% of the 10 examples
    plain = json.loads((done.out / "arms" / "lora-n8" / "train" / "summary.json").read_text())
    assert plain["train_rows"] == 8


def test_adding_retention_to_a_finished_compare_scores_only_retention(tiny_dir, files):
    cfg = config(tiny_dir, files, retention=[], retention_prompts=None)
    first = compare(cfg, out=files / "c2", say=lambda m: None)
    assert first.summary["retention"] is None
    said = []
    second = compare(config(tiny_dir, files), out=files / "c2", say=said.append)
    assert second.ran == [] and {a["id"] for a in second.summary["arms"]} == {"zero_shot", "few_shot-k1-random", "lora-n8"}
    assert any("finished earlier, scoring its retention" in m for m in said)
    assert not any("training" in m for m in said)
    assert second.summary["retention"]["tasks"][0]["name"] == "evens"
    base = files / "c2" / "retention" / "tiny-llama" / "evens" / "results.json"
    stamp = base.stat().st_mtime_ns
    third = compare(config(tiny_dir, files), out=files / "c2", say=lambda m: None)
    assert len(third.reused) == 3 and base.stat().st_mtime_ns == stamp  # nothing scored twice


def test_kl_drift_is_the_full_vocabulary_kl_per_answer_token(tiny_dir):
    """Against a hand computation; zero for the base model itself and for an untrained (zero) adapter."""
    from peft import LoraConfig, get_peft_model

    from tunelab.evaluate.drift import drift_summary
    from tunelab.infer.divergence import answer_kl as kl_drift
    from tunelab.models.loading import load_model
    from tunelab.templates import encode_prompt

    base, other = load_model(tiny_dir), load_model(tiny_dir)
    with torch.no_grad():
        for p in other.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prompts, answers = ["Name a colour.", "What is two plus two?"], ["Blue is a colour.", "Four."]
    got = kl_drift(other, prompts, answers, base=base)
    tok = base.tokenizer
    for (s, n), prompt, answer in zip(got, prompts, answers):
        p = encode_prompt(tok, [{"role": "user", "content": prompt}])
        a = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a])
        with torch.no_grad():
            lb = torch.log_softmax(base.model(ids).logits[0].double(), -1)
            lt = torch.log_softmax(other.model(ids).logits[0].double(), -1)
        want = sum(float((lb[t].exp() * (lb[t] - lt[t])).sum()) for t in range(len(p) - 1, len(p) + len(a) - 1))
        assert n == len(a) and s == pytest.approx(want, rel=1e-4)
    assert all(s == pytest.approx(0.0, abs=1e-6) for s, _ in kl_drift(base, prompts, answers, base=load_model(tiny_dir)))
    peft = load_model(tiny_dir)
    peft.model = get_peft_model(peft.model, LoraConfig(r=4, target_modules="all-linear"))  # B = 0: no change yet
    peft.adapter = "fresh"
    assert all(s == pytest.approx(0.0, abs=1e-6) for s, _ in kl_drift(peft, prompts, answers))
    summary = drift_summary(got, seed=1)
    assert summary["n_prompts"] == 2 and summary["kl_per_token"] == pytest.approx(
        sum(s for s, _ in got) / sum(n for _, n in got))


def _row(aid, method, entries, drift=None, worse=()):
    return {"id": aid, "method": method, "retention": entries, "drift": drift,
            "retention_overall": {"worse": list(worse), "better": [], "mean_change_pct": -8.0}}


def _entry(task, value, base, delta, ci, p, shared=False):
    return {"task": task, "metric": "acc", "higher_is_better": True, "value": value, "base_value": base,
            "ci95": [value - 0.05, value + 0.05], "diff_vs_base": {"delta": delta, "ci95": list(ci), "p": p, "n": 300},
            "shared_base": shared}


def test_sentences_say_a_win_that_lost_elsewhere_and_the_cost_beside_the_break_even():
    summary = {"task": "dates", "best": "full-n256", "retention": {"tasks": [{"name": "piqa"}]},
               "break_even": {"fine_tuned": "full-n256", "few_shot": "few_shot-k3-random"},
               "arms": [_row("zero_shot", "zero_shot", [_entry("piqa", 0.68, 0.68, 0.0, (0, 0), 1.0, True)],
                             {"kl_per_token": 0.0, "ci95": [0.0, 0.0], "shared_base": True}),
                        _row("full-n256", "full", [_entry("piqa", 0.60, 0.68, -0.08, (-0.12, -0.04), 0.001)],
                             {"kl_per_token": 0.41, "ci95": [0.3, 0.5], "shared_base": False}, worse=["piqa"]),
                        _row("lora-n256", "lora", [_entry("piqa", 0.67, 0.68, -0.01, (-0.04, 0.02), 0.5)],
                             {"kl_per_token": 0.02, "ci95": [0.01, 0.03], "shared_base": False})]}
    text = retention_sentences(summary)
    assert text[0].startswith("zero_shot change no weights") or "change no weights" in text[0]
    assert any(t.startswith("full-n256 won dates but lost significantly on piqa acc 0.600 vs 0.680 for the base "
                            "model, change -0.08 (95% CI -0.120 to -0.040, p = 0.001)") for t in text)
    assert any(t.startswith("lora-n256 kept its base model's general ability") for t in text)
    cost = retention_cost_sentence(summary)
    assert cost.startswith("Cost in retention of full-n256: significantly worse on piqa; mean change -8.0%")
    assert "drift 0.41 nats per token" in cost and "few_shot-k3-random changes no weights" in cost
