"""`tune:` on a fine-tuned arm: a sweep chosen on a validation split of the pool, never on test items."""
from __future__ import annotations

import json

import pytest
import yaml

from tunelab.compare.estimate import estimate
from tunelab.compare.plan import make_plan
from tunelab.compare.run import compare
from tunelab.compare.tune import TUNE_JSON, VAL_LOSS, label, settings
from tunelab.config import TuneSpec
from tunelab.errors import TunelabError

TINY_TRAIN = {"train": {"max_steps": 2, "batch_tokens": 256, "save_every": 1, "keep_checkpoints": 1},
              "data": {"max_length": 128}}


def config(tiny_dir, **over):
    base = {"name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
            "limit": 4, "retention_prompts": None, "train": TINY_TRAIN,
            "arms": ["zero_shot", {"lora": {"n": [8], "tune": {"lr": [1e-4, 1e-2], "val": 8}}}]}
    base.update(over)
    return base


def test_the_grid_is_every_lr_and_epochs_pair_with_readable_labels():
    grid = settings(TuneSpec(lr=[1e-4, 3e-4], epochs=[3, 6]))
    assert grid == [{"lr": 1e-4, "epochs": 3}, {"lr": 1e-4, "epochs": 6}, {"lr": 3e-4, "epochs": 3},
                    {"lr": 3e-4, "epochs": 6}]
    assert [label(s) for s in grid] == ["lr1e-04-ep3", "lr1e-04-ep6", "lr3e-04-ep3", "lr3e-04-ep6"]
    assert settings(TuneSpec(epochs=[2.5])) == [{"epochs": 2.5}]


def test_validation_split_is_never_in_a_tuned_arm_s_training_subset(tiny_dir, tmp_path):
    plan = make_plan(config(tiny_dir), out=tmp_path / "c")
    arm = plan.arms[1]
    val = {json.dumps(r.data, sort_keys=True) for r in plan.validation(arm.tune.val)}
    train = {json.dumps(r.data, sort_keys=True) for r in plan.subset(len(plan.pool) - arm.tune.val)}
    assert len(val) == 8 and not val & train
    # the tune: key is part of the arm's identity: adding it later retrains the arm
    assert "tune" in arm.describe() and "tune" not in plan.arms[0].describe()


@pytest.mark.parametrize("tune, message", [
    ({"lr": [1e-4], "val": 40}, "tune.val: n=8 training plus 40 validation records exceed the train pool (40"),
    ({"lr": [2.0]}, "tune.lr: every learning rate must be in (0, 1)"),
    ({}, "give lr: [...] or epochs: [...]"),
    ({"lr": [1e-4, 2e-4, 3e-4, 4e-4, 5e-4], "epochs": [1, 2, 3, 4]}, "at most 16 settings"),
    ({"lr": [1e-4], "tries": 3}, "tries"),
])
def test_bad_tune_keys_are_one_line_before_anything_runs(tiny_dir, tmp_path, tune, message):
    cfg = config(tiny_dir, arms=["zero_shot", {"lora": {"n": [8], "tune": tune}}])
    with pytest.raises(TunelabError) as e:
        make_plan(cfg, out=tmp_path / "c")
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "c").exists()


def test_dry_run_counts_every_run_of_the_sweep(tiny_dir, tmp_path):
    plain = estimate(make_plan(config(tiny_dir, arms=[{"lora": {"n": [8]}}]), out=tmp_path / "a"))[0]
    tuned = estimate(make_plan(config(tiny_dir, arms=[{"lora": {"n": [8], "tune": {"lr": [1e-4, 1e-2, 1e-3],
                                                                                    "val": 8}}}]),
                               out=tmp_path / "b"))[0]
    assert tuned.train_tokens == 3 * plain.train_tokens and tuned.seconds > plain.seconds


@pytest.fixture(scope="module")
def done(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "c"
    return compare(config(tiny_dir), out=out, say=lambda m: None)


def test_sweep_trains_every_setting_keeps_the_best_and_costs_the_whole_sweep(done):
    arm_dir = done.out / "arms" / "lora-n8"
    record = json.loads((arm_dir / TUNE_JSON).read_text())
    assert record["on"] == "exact_match" and record["val"] == 8
    assert [c["label"] for c in record["candidates"]] == ["lr1e-04", "lr1e-02"]
    values = [c["value"] for c in record["candidates"]]
    assert all(0.0 <= v <= 1.0 for v in values)
    best = max(record["candidates"], key=lambda c: c["value"])  # the first wins a tie
    assert record["chosen"] == best["label"]
    # the chosen run is the arm's run, trained with the chosen lr; the other stays in tune/
    cfg = yaml.safe_load((arm_dir / "train" / "config.yaml").read_text())
    assert cfg["train"]["lr"] == best["setting"]["lr"]
    assert (arm_dir / "train" / "adapter").is_dir() and not (arm_dir / "tune" / best["label"] / "train").exists()
    other = next(c for c in record["candidates"] if c is not best)
    assert (arm_dir / other["train_dir"] / "summary.json").is_file()
    # validation items were scored, 8 of them, with the compare's metric; the test items once
    val = json.loads((arm_dir / "tune" / other["label"] / "val" / "results.json").read_text())
    assert val["n"] == 8
    row = next(a for a in done.summary["arms"] if a["id"] == "lora-n8")
    t = row["tune"]
    assert t["chosen"] == best["setting"] and t["runs"] == 2
    own = [json.loads((d / "summary.json").read_text())["wall_s"]
           for d in (arm_dir / "train", arm_dir / other["train_dir"])]
    assert row["train_cost"]["wall_s"] == pytest.approx(sum(own), abs=1e-2)
    assert row["training"]["lr"] == best["setting"]["lr"]
    said = " ".join(done.summary["sentences"])
    assert "lora-n8 was tuned on 8 validation records from the pool (never test items)" in said
    assert "whole sweep's (2 runs" in said


def test_a_finished_sweep_is_not_run_again(tiny_dir, done):
    again = compare(config(tiny_dir), out=done.out, say=lambda m: None)
    assert again.ran == [] and again.reused == ["zero_shot", "lora-n8"]


def test_a_pool_in_its_own_format_is_tuned_on_validation_loss(tiny_dir, tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": f"Q{i}: what is {i}+{i}?", "completion": f" {2 * i}"}) + "\n"
                            for i in range(24)))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"a": i, "sum": 2 * i}) + "\n" for i in range(4)))
    task = {"name": "sums", "data": str(tmp_path / "test.jsonl"), "type": "generate", "chat": False,
            "prompt": "What is {{ a }}+{{ a }}?", "answer": "{{ sum }}", "metrics": ["exact_match"]}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(task))
    cfg = config(tiny_dir, train_data=str(pool), task=str(tmp_path / "task.yaml"),
                 arms=["zero_shot", {"lora": {"n": [8], "tune": {"lr": [1e-4, 1e-3], "val": 8}}}])
    res = compare(cfg, out=tmp_path / "c", say=lambda m: None)
    record = json.loads((res.out / "arms" / "lora-n8" / TUNE_JSON).read_text())
    assert record["on"] == VAL_LOSS and record["higher_is_better"] is False
    assert all(isinstance(c["value"], float) and c["value"] > 0 for c in record["candidates"])
    assert record["chosen"] == min(record["candidates"], key=lambda c: c["value"])["label"]
