"""DPO / ORPO: pairs packed after one copy of their prompt, the loop, its metrics, reference cache and resume."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.train import checkpoint as ckpt
from tunelab.train.attention import DOC_ATTN, register
from tunelab.train.loop import train
from tunelab.train.preference import PreferenceLM, batch_forward, collate_pairs, pair_length
from tunelab.templates.preference import EncodedPair

from .conftest import metrics, subprocess_env, write_config

STATS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    r = random.Random(0)
    with open(path, "w") as f:
        for _ in range(40):
            a, b = r.randint(0, 99), r.randint(0, 99)
            f.write(json.dumps({"prompt": f"What is {a} plus {b}?", "chosen": f"The answer is {a + b}.",
                                "rejected": f"The answer is {a + b + r.randint(1, 9)}, I think."}) + "\n")
    return path


@pytest.fixture
def pref_config(make_config, pair_data):
    def make(name: str, method: str = "dpo", **sections):
        cfg = make_config(name, method=method, data={"train": str(pair_data), "eval": 0.1},
                          train={"max_steps": 4, "batch_tokens": 240, "lr": 1e-3, "eval_every": 2, "save_every": 2,
                                 "warmup": 0}, **sections)
        cfg["lora"]["dropout"] = 0.0
        return cfg
    return make


def _alone(model, prompt, answer):
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float().log_softmax(-1)  # (T, V)
    return sum(float(logits[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))


@pytest.mark.parametrize("impl", [DOC_ATTN, "sdpa", "eager"])
def test_packed_pairs_score_each_answer_as_if_alone(tiny, impl):
    """The prompt runs once; each answer sees it and itself only: the sums equal separate runs."""
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(3, 500, (n,), generator=g).tolist()  # noqa: E731
    pairs = [EncodedPair(str(i), rand(p), rand(c), rand(r)) for i, (p, c, r) in enumerate([(7, 5, 9), (12, 1, 4), (3, 8, 8)])]
    register()
    model.set_attn_implementation(impl)
    try:
        batch = collate_pairs(pairs, width=64 if impl != DOC_ATTN else None)
        assert batch.n_tokens == sum(pair_length(p) for p in pairs)
        with torch.no_grad():
            logps = batch_forward(PreferenceLM(model).eval(), batch, impl)
    finally:
        model.set_attn_implementation("sdpa")
    expected = [_alone(model, p.prompt, side) for p in pairs for side in (p.chosen, p.rejected)]
    torch.testing.assert_close(logps, torch.tensor(expected), atol=1e-4, rtol=0)


def test_dpo_lora_run_starts_at_ln2_and_logs_rewards(pref_config):
    res = train(pref_config("dpo"))
    rows = metrics(res.run_dir)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # zero-initialised adapter: policy = reference
    assert rows[0]["rewards/margins"] == 0.0
    for row in rows:
        assert all(k in row for k in STATS)
    assert "eval_rewards/accuracies" in rows[1] and "eval_loss" in rows[1]
    assert rows[-1]["loss"] != rows[0]["loss"]
    assert (res.run_dir / "adapter" / "adapter_config.json").is_file()
    ref = json.loads((res.run_dir / "reference_logps.json").read_text())
    assert len(ref["train"]) == res.summary["train_rows"] and len(ref["eval"]) == res.summary["eval_rows"]
    meta = json.loads((res.run_dir / "adapter" / "tunelab_adapter.json").read_text())
    assert (meta["method"], meta["preference"]) == ("lora", "dpo")
    from tunelab.report import render

    page = render(res.run_dir)  # the run's report: the loss page gains the rewards plot
    assert "Preference rewards" in page and "preference rewards per step" in page


def test_orpo_logs_its_terms(pref_config):
    res = train(pref_config("orpo", method="orpo", preference={"lambda": 0.5}))
    row = metrics(res.run_dir)[0]
    assert all(k in row for k in STATS + ("nll_loss", "log_odds_ratio", "log_odds_chosen"))
    assert row["loss"] == pytest.approx(row["nll_loss"] - 0.5 * row["log_odds_ratio"], abs=1e-5)
    assert not (res.run_dir / "reference_logps.json").exists()  # ORPO has no reference model


def test_full_weights_dpo_resumes_without_recomputing_the_reference(pref_config, tmp_path, monkeypatch):
    cfg = pref_config("full", preference={"weights": "full"})
    straight = train(pref_config("straight", preference={"weights": "full"}))
    assert metrics(straight.run_dir)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert (straight.run_dir / "model" / "config.json").is_file()
    path = write_config(cfg, tmp_path / "full.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="kill@3"), timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert ckpt.latest(tmp_path / "full").name == "step-2"
    cached = (tmp_path / "full" / "reference_logps.json").read_text()

    def no_second_pass(*a, **k):
        raise AssertionError("the reference pass ran again on resume")

    monkeypatch.setattr("tunelab.train.preference.reference_logps", no_second_pass)
    resumed = train(path, resume=True)
    assert (tmp_path / "full" / "reference_logps.json").read_text() == cached
    assert [m["loss"] for m in metrics(resumed.run_dir)] == [m["loss"] for m in metrics(straight.run_dir)]


def test_method_dpo_on_sft_data_says_which_format_it_found(make_config):
    with pytest.raises(TunelabError, match=r"arith.jsonl:1: method: dpo needs preference pairs .*format 'prompt_completion'"):
        train(make_config("nopairs", method="dpo"))


def test_dpo_refuses_what_it_does_not_apply(pref_config):
    cfg = pref_config("tox")
    cfg["data"]["max_toxicity"] = 0.5
    with pytest.raises(TunelabError, match=r"data.max_toxicity is not supported with method: dpo"):
        train(cfg)


def test_sft_on_the_chosen_answers_is_a_data_format(make_config, pair_data):
    """The SFT baseline next to DPO: method lora on the preference file with data.format: chosen."""
    res = train(make_config("sft_chosen", data={"train": str(pair_data), "format": "chosen", "eval": None},
                            train={"max_steps": 2}))
    assert res.summary["train_rows"] == 40 and res.summary["tokens_trained"] > 0


def _big_pair_file(path, n: int):
    r = random.Random(1)
    with open(path, "w") as f:
        for i in range(n):
            a, b = r.randint(0, 99), r.randint(0, 99)
            f.write(json.dumps({"prompt": f"What is {a} plus {b}?", "chosen": f"The answer is {a + b}.",
                                "rejected": f"It is {a + b + r.randint(1, 9)}."}) + "\n")
    return path


def _count_reference_pairs(monkeypatch) -> list[int]:
    """The indices of the pairs whose reference log-probabilities are computed from now on, in order."""
    from tunelab.train import preference

    seen = []
    real = preference.reference_logps

    def counting(module, examples, plan, **kw):
        seen.extend(i for b in plan for i in b)
        return real(module, examples, plan, **kw)

    monkeypatch.setattr(preference, "reference_logps", counting)
    return seen


def test_dpo_computes_the_reference_only_for_the_pairs_its_steps_use(pref_config, tmp_path, monkeypatch):
    """Issue 34 item 9: a 2-step run on 300 pairs runs the reference forward for the pairs of its
    two steps (and the held-out pairs it evaluates), not for the whole file first."""
    from tunelab.config import load_train_config
    from tunelab.train.loop import Recipe

    seen = _count_reference_pairs(monkeypatch)
    data = _big_pair_file(tmp_path / "big.jsonl", 300)
    cfg = pref_config("lazy")
    cfg["data"].update(train=str(data), eval=None)
    cfg["train"]["max_steps"] = 2
    recipe = Recipe(load_train_config(cfg))
    recipe.setup()
    res = recipe.train()
    used = sorted(i for b in recipe.data.plan(0)[:2 * recipe.data.per_step] for i in b)
    assert sorted(seen) == used and 0 < len(used) < 30  # every pair of the two steps, once; nothing else
    assert res.summary["reference_pairs"] == len(used) and res.summary["train_rows"] == 300
    ref = json.loads((res.run_dir / "reference_logps.json").read_text())
    assert [i for i, row in enumerate(ref["train"]) if row is not None] == used
    assert metrics(res.run_dir)[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_lora_dpo_resume_computes_only_the_reference_it_never_kept(pref_config, tmp_path, monkeypatch):
    """Killed after step 3 (checkpoint at 2): the resumed run reads the kept reference rows back,
    computes only the rows of batches never used before the checkpoint, and ends on the same losses."""

    straight = train(pref_config("straight_lora"))
    cfg = pref_config("killed")
    path = write_config(cfg, tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="kill@3"), timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    kept = json.loads((tmp_path / "killed" / "reference_logps.json").read_text())
    known = {i for i, row in enumerate(kept["train"]) if row is not None}
    assert known and len(known) < len(kept["train"])  # the pairs of steps 1-2, written with step-2
    seen = _count_reference_pairs(monkeypatch)
    resumed = train(path, resume=True)
    assert seen and not known & set(seen)  # nothing kept is computed again
    after = json.loads((tmp_path / "killed" / "reference_logps.json").read_text())
    assert all(after["train"][i] == kept["train"][i] for i in known)
    assert [m["loss"] for m in metrics(resumed.run_dir)] == [m["loss"] for m in metrics(straight.run_dir)]
    assert [m.get("eval_loss") for m in metrics(resumed.run_dir)] == [m.get("eval_loss") for m in metrics(straight.run_dir)]


def test_a_reference_file_of_earlier_versions_reads_back(pref_config, tmp_path):
    """Files written before the reference went lazy hold every row: a resume reads them as they are."""
    from tunelab.train.preference import ReferenceStore

    old = {"train": [[-1.5, -2.5], [-3.0, -4.0]], "eval": [[-0.5, -0.25]]}
    (tmp_path / "ref.json").write_text(json.dumps(old))
    store = ReferenceStore(2, 1)
    store.read(tmp_path / "ref.json")
    assert store.computed("train") == 2 and store.get("train", [1, 0]).tolist() == [-3.0, -4.0, -1.5, -2.5]
    with pytest.raises(TunelabError, match="holds 2 \\+ 1 pairs but the data has 3 \\+ 1"):
        ReferenceStore(3, 1).read(tmp_path / "ref.json")
