"""`compare` end to end on a tiny model: the folder contract, pairing, resume, refusals, the CLI."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.cli import main
from tunelab.compare.lock import ArmBusy, arm_lock
from tunelab.compare.quickstart import run_quickstart
from tunelab.compare.run import compare
from tunelab.errors import Interrupted, TunelabError

TINY_TRAIN = {"train": {"max_steps": 2, "batch_tokens": 256, "save_every": 1, "keep_checkpoints": 1},
              "data": {"max_length": 128}}


def config(tiny_dir, **over):
    base = {"name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
            "limit": 5, "arms": ["zero_shot", {"few_shot": {"k": [2]}}, {"lora": {"n": [8, 16]}}],
            "train": TINY_TRAIN}
    base.update(over)
    return base


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def done(tiny_dir, tmp_path_factory):
    """One finished tiny compare, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("cmp") / "c"
    return compare(config(tiny_dir, safety=True), out=out, say=lambda m: None)


def test_folder_contract(done):
    out = done.out
    assert done.ran == ["zero_shot", "few_shot-k2-random", "lora-n8", "lora-n16"] and done.reused == []
    s = json.loads((out / "compare.json").read_text())
    assert s == json.loads(json.dumps(done.summary))
    assert set(s) >= {"name", "task", "main_metric", "higher_is_better", "best", "arms", "sentences", "break_even",
                      "signature"}
    assert s["main_metric"] == "exact_match" and s["best"] in [a["id"] for a in s["arms"]]
    assert (out / "compare.yaml").is_file()
    for a in s["arms"]:
        assert set(a) >= {"id", "method", "model", "n_train", "k", "sampler", "metric", "diff_vs_best", "train_cost",
                          "infer_cost_per_1k", "toxicity", "eval_dir", "run_dir"}
        assert (out / a["eval_dir"] / "results.json").is_file() and (out / a["eval_dir"] / "predictions.jsonl").is_file()
        assert 0.0 <= a["metric"]["value"] <= 1.0 and len(a["metric"]["ci95"]) == 2
        assert a["infer_cost_per_1k"]["prompt_tokens"] > 0
        assert 0.0 <= a["toxicity"]["mean"] <= a["toxicity"]["max"] <= 1.0
        if a["method"] == "lora":
            assert (out / a["run_dir"] / "adapter" / "adapter_config.json").is_file()
            assert a["train_cost"]["tokens"] > 0 and a["train_cost"]["wall_s"] > 0 and a["train_cost"]["flops"] > 0
        else:
            assert a["train_cost"] is None and a["run_dir"] is None
    by_id = {a["id"]: a for a in s["arms"]}
    # few-shot prompts carry their demonstrations: that cost shows per 1,000 queries
    assert by_id["few_shot-k2-random"]["infer_cost_per_1k"]["prompt_tokens"] > by_id["zero_shot"]["infer_cost_per_1k"]["prompt_tokens"]
    assert by_id[s["best"]]["diff_vs_best"] == {"delta": 0.0, "ci95": [0.0, 0.0], "p": 1.0, "n": 5}
    assert s["break_even"]["few_shot"] == "few_shot-k2-random" and s["sentences"]


def test_every_arm_scores_the_same_items(done):
    ids = None
    for arm in done.summary["arms"]:
        lines = [json.loads(x) for x in (done.out / arm["eval_dir"] / "predictions.jsonl").read_text().splitlines()]
        got = [x["id"] for x in lines]
        assert ids is None or got == ids
        ids = got
    assert len(ids) == 5


def test_nested_training_sets_on_disk(done):
    small = (done.out / "data" / "train-n8.jsonl").read_text().splitlines()
    big = (done.out / "data" / "train-n16.jsonl").read_text().splitlines()
    assert big[:8] == small and len(big) == 16


def test_resume_keeps_finished_arms_and_refuses_another_config(done, tiny_dir):
    again = compare(config(tiny_dir, safety=True), out=done.out, say=lambda m: None)
    assert again.ran == [] and len(again.reused) == 4
    assert again.summary["arms"] == done.summary["arms"]
    with pytest.raises(TunelabError) as e:
        compare(config(tiny_dir, limit=4), out=done.out, say=lambda m: None)
    msg = str(e.value)
    assert "was made by a different compare config (changed: limit)" in msg
    assert f"Delete {done.out} to start fresh, or set out=<another folder>" in msg


def test_an_arm_another_worker_holds_is_skipped_and_the_table_not_gathered(done, tiny_dir):
    with arm_lock(done.out / "arms" / "lora-n8", "lora-n8"):
        said = []
        res = compare(config(tiny_dir, safety=True), out=done.out, say=said.append)
        assert res.pending == ["lora-n8"] and res.summary == {} and "lora-n8" not in res.reused
        assert any("lora-n8: another worker is running it, skipped" in m for m in said)
        with pytest.raises(ArmBusy, match=r"arm lora-n8: another worker \(pid \d+\) is running it"):
            compare(config(tiny_dir, safety=True), out=done.out, say=lambda m: None, arm="lora-n8")


def test_interrupted_training_resumes_from_its_checkpoint(tiny_dir, tmp_path, monkeypatch):
    cfg = config(tiny_dir, arms=["zero_shot", {"lora": {"n": [16]}}],
                 train={**TINY_TRAIN, "train": {**TINY_TRAIN["train"], "max_steps": 3, "batch_tokens": 128}})
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@2")  # Ctrl-C during step 2: a checkpoint of step 1 or 2 is saved
    said = []
    with pytest.raises(Interrupted, match="run the same command again to resume"):
        compare(cfg, out=tmp_path / "c", say=said.append)
    ckpts = list((tmp_path / "c" / "arms" / "lora-n16" / "train" / "checkpoints").glob("step-*"))
    assert ckpts
    monkeypatch.delenv("TUNELAB_FAULT")
    said.clear()
    res = compare(cfg, out=tmp_path / "c", say=said.append)
    assert res.reused == ["zero_shot"] and res.ran == ["lora-n16"]
    assert any("resuming lora" in m for m in said)
    summary = json.loads((tmp_path / "c" / "arms" / "lora-n16" / "train" / "summary.json").read_text())
    assert summary["steps"] == 3


def test_cli_dry_run_and_run(capsys, tiny_dir, tmp_path):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tiny_dir, out=str(tmp_path / "out"))))
    code, out, err = run_cli(capsys, "compare", str(path), "--dry-run")
    assert code == 0, err
    assert "dry run" in out and "lora-n16" in out and "estimated total" in out
    assert not (tmp_path / "out" / "arms").exists()  # nothing ran
    code, out, err = run_cli(capsys, "compare", str(path), "arms=[zero_shot]")
    assert code == 0, err
    assert "zero_shot" in out and "Only one arm ran" in out and "compare folder:" in out


def test_cli_bad_input_is_one_line(capsys, tiny_dir, tmp_path):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tiny_dir, arms=[{"lora": {"n": 41}}])))
    code, out, err = run_cli(capsys, "compare", str(path))
    assert code == 2
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "arms[0].lora.n: 41 exceeds the train pool (40 records in builtin:dates?n=40)" in " ".join(err.split())


def test_quickstart_fast_on_a_tiny_model(tiny_dir, tmp_path, capsys):
    res = run_quickstart(model=str(tiny_dir), fast=True, out=tmp_path / "qs", say=lambda m: None)
    assert [a["id"] for a in res.summary["arms"]] == ["zero_shot", "few_shot-k3-random", "lora-n8", "lora-n16"]
    assert res.summary["n_items"] == 6 and res.summary["sentences"]
    assert all(a["toxicity"] is not None for a in res.summary["arms"])  # the quickstart screens outputs
    # drift but no retention task: the drift alone, not five columns of "-" per arm (issue 34 item 8)
    from tunelab.cli.compare import print_retention

    assert res.summary["retention"]["tasks"] == [] and res.summary["retention"]["drift_prompts"]
    print_retention(res.summary)
    out = capsys.readouterr().out
    assert "drift: how far each arm moved" in out and "Δ vs base" not in out and "95% CI" not in out
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if line.startswith("│ ")}
    assert set(rows) == {"zero_shot", "few_shot-k3-random", "lora-n8", "lora-n16"}
    assert rows["zero_shot"] == "0 (shared)" and float(rows["lora-n8"]) >= 0


def test_dry_run_with_max_steps_and_no_batch_tokens(capsys, tiny_dir, tmp_path):
    """Issue 26 case 3: train.train.max_steps without batch_tokens crashed the estimate (int * None)."""
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tiny_dir, train={"train": {"max_steps": 5}}, out=str(tmp_path / "out"))))
    code, out, err = run_cli(capsys, "compare", str(path), "--dry-run")
    assert code == 0, err
    assert "lora-n16" in out and "estimated total" in out


def test_dry_run_fails_on_a_pool_the_arms_cannot_read(capsys, tiny_dir, tmp_path):
    """Issue 26 case 3: the dry run must fail on what the real run would fail on."""
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps({"question": f"q{i}", "reply": f"a{i}"}) + "\n" for i in range(20)))
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(config(tiny_dir, train_data="pool.jsonl", arms=["zero_shot", {"lora": {"n": [8]}}])))
    code, out, err = run_cli(capsys, "compare", str(path), "--dry-run")
    assert code == 2 and "pool.jsonl:1" in err and "no training format either" in err
    assert err.strip().count("\n") == 0
