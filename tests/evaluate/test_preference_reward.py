"""reward_acc / reward_margin: DPO's implicit reward on held-out pairs, the reference being the base
(the evaluated adapter switched off), with CIs and per-pair values like every other metric."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from tunelab.errors import TunelabError
from tunelab.evaluate.runner import evaluate

PAIRS = [{"prompt": f"What is {i} plus {i}?", "chosen": f"The answer is {2 * i}.", "rejected": f"No idea {i}, sorry."}
         for i in range(8)]
REWARD = ["pref_acc", "reward_acc", {"reward_margin": {"beta": 0.5}}]


def _task(tmp_path, metrics, name="pref", type_="preference"):
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    path = tmp_path / f"{name}.yaml"
    spec = {"name": name, "type": type_, "data": data.name, "metrics": metrics}
    if type_ != "preference":
        spec.update(prompt="{{ prompt }}", answer="{{ chosen }}")
    path.write_text(yaml.safe_dump(spec))
    return path


def _adapter(tiny_dir, out, *, zero: bool):
    """A LoRA adapter on the tiny model: PEFT's default init (B = 0, the model unchanged) or random."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=True if zero else False)
    get_peft_model(model, cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("pref-adapters")
    return {"zero": _adapter(tiny_dir, root / "zero", zero=True), "lively": _adapter(tiny_dir, root / "lively", zero=False)}


def test_an_adapter_initialised_to_zero_has_no_reward_and_no_wins(tiny_dir, adapters, tmp_path):
    """B = 0: the model is its reference, every implicit reward is 0, and a tie is not a win."""
    res = evaluate(str(tiny_dir), _task(tmp_path, REWARD), adapter=str(adapters["zero"]))
    for line in res.predictions:
        assert line["ref_pair_logliks"] == line["pair_logliks"]
        assert line["metrics"]["reward_acc"] == 0.0 and line["metrics"]["reward_margin"] == 0.0
    assert res.metrics["reward_acc"]["value"] == 0.0 and res.metrics["reward_margin"]["value"] == 0.0
    assert res.metrics["reward_acc"]["signature"] == "reward_acc"
    assert res.metrics["reward_margin"]["signature"] == "reward_margin|beta:0.5"


def _direct_logps(model, tokenizer, prompt: str, answer: str) -> float:
    """log p(answer | prompt) by one plain forward pass: no packing, no token tree."""
    from tunelab.infer.loglik import encode_pair

    ctx, cont = encode_pair(tokenizer, prompt, answer)
    ids = torch.tensor([ctx + cont])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return float(logp[len(ctx) - 1:].gather(-1, ids[0, len(ctx):, None]).sum())


def test_reward_acc_equals_the_log_ratios_computed_by_hand(tiny_dir, adapters, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = evaluate(str(tiny_dir), _task(tmp_path, REWARD), adapter=str(adapters["lively"]), out=tmp_path / "out")
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                                      adapters["lively"]).eval()
    wins, margins = [], []
    with torch.no_grad():
        for line in res.predictions:
            pol = [_direct_logps(model, tok, line["prompt"], line[k]) for k in ("chosen", "rejected")]
            with model.disable_adapter():
                ref = [_direct_logps(model, tok, line["prompt"], line[k]) for k in ("chosen", "rejected")]
            assert line["pair_logliks"] == pytest.approx(pol, abs=1e-4)
            assert line["ref_pair_logliks"] == pytest.approx(ref, abs=1e-4)
            rc, rr = pol[0] - ref[0], pol[1] - ref[1]
            wins.append(float(rc > rr))
            margins.append(0.5 * (rc - rr))
            assert line["metrics"]["reward_acc"] == wins[-1]
            assert line["metrics"]["reward_margin"] == pytest.approx(margins[-1], abs=1e-4)
    assert any(m != 0 for m in margins)  # the adapter really moved the model
    acc = res.metrics["reward_acc"]
    assert acc["value"] == pytest.approx(sum(wins) / len(wins))
    assert acc["ci95"][0] <= acc["value"] <= acc["ci95"][1] and acc["n"] == len(PAIRS)
    assert res.metrics["reward_margin"]["value"] == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    # the reference is the base model itself: its own evaluation scores the pairs the same way
    base = evaluate(str(tiny_dir), _task(tmp_path, ["pref_acc"], name="base"))
    for a, b in zip(base.predictions, res.predictions):
        assert a["pair_logliks"] == pytest.approx(b["ref_pair_logliks"], abs=1e-5)
    # per-pair values: written to predictions.jsonl and paired by `tunelab diff` like any metric
    written = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [w["metrics"]["reward_acc"] for w in written] == wins


def test_two_adapters_compare_pair_by_pair(tiny_dir, adapters, tmp_path):
    from tunelab.evaluate.diff import diff_results

    evaluate(str(tiny_dir), _task(tmp_path, REWARD), adapter=str(adapters["zero"]), out=tmp_path / "a")
    b = evaluate(str(tiny_dir), _task(tmp_path, REWARD), adapter=str(adapters["lively"]), out=tmp_path / "b")
    rows = {r.metric: r for r in diff_results(tmp_path / "a", tmp_path / "b")}
    assert rows["reward_acc"].n == len(PAIRS) and rows["reward_acc"].a == 0.0
    assert rows["reward_acc"].b == pytest.approx(b.metrics["reward_acc"]["value"])


def test_reference_scores_come_from_the_cache_on_a_rerun(tiny_dir, adapters, tmp_path, monkeypatch):
    from tunelab.infer.backend import LocalBackend

    task = _task(tmp_path, REWARD)
    first = evaluate(str(tiny_dir), task, adapter=str(adapters["lively"]), cache=True)
    # the reference's entries live under the base model's scope, never the adapter's own scores
    assert all(line["ref_pair_logliks"] != line["pair_logliks"] for line in first.predictions)
    calls = []
    real = LocalBackend.score_choices
    monkeypatch.setattr(LocalBackend, "score_choices", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    again = evaluate(str(tiny_dir), task, adapter=str(adapters["lively"]), cache=True)
    assert calls == [] and again.predictions == first.predictions


def test_without_an_adapter_the_reward_is_not_computed_and_says_why(tiny_dir, tmp_path):
    from tunelab.evaluate.results import read_results

    res = evaluate(str(tiny_dir), _task(tmp_path, REWARD), out=tmp_path / "out")
    entry = res.metrics["reward_acc"]
    assert entry["value"] is None and entry["ci95"] is None and entry["n"] == 0
    assert entry["note"].startswith("not computed: model ") and "has no adapter" in entry["note"]
    assert "\n" not in entry["note"] and res.metrics["reward_margin"]["note"] == entry["note"]
    assert res.metrics["pref_acc"]["value"] is not None and "note" not in res.metrics["pref_acc"]
    back = read_results(tmp_path / "out")
    assert back.metrics["reward_acc"]["note"] == entry["note"] and back.value("reward_acc") is None
    assert all(x["reward_acc"] is None for x in back.items.values())
    assert all("ref_pair_logliks" not in line for line in back.predictions)


def test_an_endpoint_has_no_reference_and_says_so():
    from types import SimpleNamespace

    from tunelab.infer.endpoint import EndpointBackend

    fake = SimpleNamespace(spec="openai:http://127.0.0.1:8000/v1#m")
    reason = EndpointBackend.no_reference(fake)
    assert reason.startswith("openai:http://127.0.0.1:8000/v1#m: an endpoint serves one model") and "\n" not in reason
    with pytest.raises(TunelabError, match="no reference model"):
        EndpointBackend.reference(SimpleNamespace(spec=fake.spec, no_reference=lambda: reason))


def test_bad_reward_metrics_are_one_line_errors(tiny_dir, tmp_path):
    with pytest.raises(TunelabError, match=r"^unknown metric 'reward_accuracy'; known metrics: .*reward_acc"):
        evaluate(str(tiny_dir), _task(tmp_path, ["reward_accuracy"]))
    with pytest.raises(TunelabError, match=r"^metric 'reward_margin': option beta must be a number > 0, got 0$"):
        evaluate(str(tiny_dir), _task(tmp_path, [{"reward_margin": {"beta": 0}}]))
    with pytest.raises(TunelabError, match=r"^metric 'reward_acc' in .*mc.yaml needs preference pairs .* type: generate"):
        evaluate(str(tiny_dir), _task(tmp_path, ["reward_acc"], name="mc", type_="generate"))


def _full_finetune(tiny_dir, out):
    """A full-weights 'fine-tune' of the tiny model: every weight nudged, saved as a model folder."""
    import shutil

    from transformers import AutoModelForCausalLM

    shutil.copytree(tiny_dir, out)
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    return out


def test_a_full_fine_tune_measures_its_reward_against_the_given_reference(tiny_dir, tmp_path):
    """No adapter to switch off: the reference is the model the fine-tune started from, loaded beside it."""
    tuned = _full_finetune(tiny_dir, tmp_path / "full")
    res = evaluate(str(tuned), _task(tmp_path, REWARD), reference=str(tiny_dir), out=tmp_path / "out")
    base = evaluate(str(tiny_dir), _task(tmp_path, ["pref_acc"], name="base"))
    alone = evaluate(str(tuned), _task(tmp_path, ["pref_acc"], name="alone"))
    wins = []
    for line, b, a in zip(res.predictions, base.predictions, alone.predictions):
        assert line["ref_pair_logliks"] == pytest.approx(b["pair_logliks"], abs=1e-5)
        assert line["pair_logliks"] == pytest.approx(a["pair_logliks"], abs=1e-5)
        rc, rr = (line["pair_logliks"][i] - line["ref_pair_logliks"][i] for i in (0, 1))
        wins.append(float(rc > rr))
        assert line["metrics"]["reward_acc"] == wins[-1]
    assert any(line["pair_logliks"] != line["ref_pair_logliks"] for line in res.predictions)
    assert res.metrics["reward_acc"]["value"] == pytest.approx(sum(wins) / len(wins))
    # the reference is part of what was measured: the signature names it; without it, no reward
    assert "|reference tiny-llama sha256:" in res.signature
    plain = evaluate(str(tuned), _task(tmp_path, REWARD))
    assert plain.metrics["reward_acc"]["value"] is None and "--reference MODEL" in plain.metrics["reward_acc"]["note"]
    assert "reference" not in plain.signature
    # the model as its own reference: every implicit reward is 0, and a tie is not a win
    same = evaluate(str(tuned), _task(tmp_path, REWARD), reference=str(tuned))
    assert same.metrics["reward_acc"]["value"] == 0.0 and same.metrics["reward_margin"]["value"] == 0.0


def test_a_bad_reference_is_a_one_line_error(tiny_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from tunelab.infer.backend import LocalBackend

    other = tmp_path / "other"
    import shutil

    shutil.copytree(tiny_dir, other)
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    tok.add_tokens(["<an-extra-token>"])
    tok.save_pretrained(other)
    calls = []
    real = LocalBackend.score_choices
    monkeypatch.setattr(LocalBackend, "score_choices", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    with pytest.raises(TunelabError, match=r"^reference .*other: its tokenizer differs from .*give the model the fine-tune started from$"):
        evaluate(str(tiny_dir), _task(tmp_path, REWARD), reference=str(other))
    assert calls == []  # refused before the model scored a single pair
    with pytest.raises(TunelabError, match=r"^reference is the model implicit-reward metrics measure against, and .*asks for none"):
        evaluate(str(tiny_dir), _task(tmp_path, ["pref_acc"]), reference=str(tiny_dir))
    with pytest.raises(TunelabError, match=r"^reference: openai:http://127.0.0.1:9/v1#m is scored by its own backend \(openai:\); a reference model is scored beside a local model only"):
        evaluate("openai:http://127.0.0.1:9/v1#m", _task(tmp_path, REWARD), reference=str(tiny_dir))


def test_the_cli_names_the_flag(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from tunelab.cli import app

    r = CliRunner().invoke(app, ["eval", str(tiny_dir), "--task", str(_task(tmp_path, ["pref_acc"])),
                                 "--reference", str(tiny_dir)])
    assert isinstance(r.exception, TunelabError) and r.exception.exit_code == 2
    assert str(r.exception).startswith("--reference is the model implicit-reward metrics measure against")
