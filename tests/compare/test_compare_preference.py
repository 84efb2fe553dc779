"""A compare on a pool of preference pairs: base vs SFT on the chosen answers vs DPO vs ORPO, scored by pref_acc."""
from __future__ import annotations

import json
import random

import pytest
import yaml

from tunelab.compare.run import compare
from tunelab.errors import TunelabError

TINY = {"train": {"max_steps": 2, "batch_tokens": 256, "save_every": 10, "lr": 1e-3}, "data": {"max_length": 128}}


def _pairs(path, n, seed):
    r = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            a, b = r.randint(0, 50), r.randint(0, 50)
            f.write(json.dumps({"id": f"{seed}-{i}", "prompt": f"What is {a} plus {b}?",
                                "chosen": f"The answer is {a + b}.", "rejected": f"Go away, {a}."}) + "\n")
    return path


@pytest.fixture
def setup(tmp_path, tiny_dir):
    _pairs(tmp_path / "pool.jsonl", 24, 0)
    _pairs(tmp_path / "test.jsonl", 6, 1)
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"name": "pairs", "type": "preference", "data": "test.jsonl"}))
    return {"name": "pref", "model": str(tiny_dir), "task": str(tmp_path / "task.yaml"),
            "train_data": str(tmp_path / "pool.jsonl"),
            "arms": ["zero_shot", {"lora": {"n": [8]}}, {"dpo": {"n": [8]}}, {"orpo": {"n": [8]}}], "train": TINY,
            "retention_prompts": None}


def test_base_sft_dpo_orpo_on_pairs(setup, tmp_path):
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(setup))
    res = compare(str(path), out=tmp_path / "out", say=lambda m: None)
    s = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert s["main_metric"] == "pref_acc"
    arms = {a["id"]: a for a in s["arms"]}
    assert set(arms) == {"zero_shot", "lora-n8", "dpo-n8", "orpo-n8"} and res.ran == list(arms)
    for a in arms.values():
        assert 0.0 <= a["metric"]["value"] <= 1.0 and len(a["metric"]["ci95"]) == 2
    for arm in ("dpo-n8", "orpo-n8"):
        rows = [json.loads(x) for x in (tmp_path / "out" / arms[arm]["run_dir"] / "metrics.jsonl").read_text().splitlines()]
        assert "rewards/accuracies" in rows[0]
        assert arms[arm]["training"]["train_reward_acc_q4"] == round(rows[-1]["rewards/accuracies"], 4)  # 2 steps: the last
    assert "train_reward_acc_q4" not in arms["lora-n8"]["training"]
    cfg = yaml.safe_load((tmp_path / "out" / arms["lora-n8"]["run_dir"] / "config.yaml").read_text())
    assert cfg["data"]["format"] == "chosen" and cfg["method"] == "lora"
    assert yaml.safe_load((tmp_path / "out" / arms["dpo-n8"]["run_dir"] / "config.yaml").read_text())["method"] == "dpo"


def test_dpo_arms_need_a_preference_task(setup, tmp_path):
    setup["task"] = "builtin:dates"
    with pytest.raises(TunelabError, match=r"arms dpo-n8, orpo-n8 train on preference pairs: give a task of type: preference"):
        compare(setup, out=tmp_path / "out2", say=lambda m: None)


def test_grpo_arms_need_a_task_that_generates(setup, tmp_path):
    """A GRPO arm samples answers to reward them: on pairs (no answer is generated) it is refused before
    any arm runs (GRPO arms on a generate task: test_compare_grpo.py)."""
    from tunelab.compare.plan import make_plan

    setup["arms"] = ["zero_shot", {"grpo": {"n": [8]}}]
    with pytest.raises(TunelabError, match=r"arms\[1\]\.grpo: a grpo arm samples answers and rewards them, and task "
                                           r"'pairs' is a preference task, which generates none"):
        make_plan(setup)


def test_train_split_keeps_the_test_pairs_out_of_the_pool(setup, tmp_path):
    from tunelab.compare.plan import make_plan

    setup["train_split"] = "0:20"
    plan = make_plan(setup)
    assert len(plan.pool) == 20 and plan.pool[-1].data["id"] == "0-19"
    setup["arms"] = ["zero_shot", {"few_shot": {"k": [1]}}]
    with pytest.raises(TunelabError, match="train_split applies to the fine-tuned arms. pool"):
        make_plan(setup)


def test_the_example_plans(capsys):
    """examples/compare_harmless.yaml reads and plans (its run takes hours on this CPU)."""
    from pathlib import Path

    from tunelab.compare.plan import make_plan

    example = Path(__file__).resolve().parents[2] / "examples" / "compare_harmless.yaml"
    if not (example.parents[2] / "shared" / "data" / "hh_rlhf_harmless").is_dir():
        pytest.skip("shared data not here")
    plan = make_plan(str(example))
    assert [a.id for a in plan.arms] == ["zero_shot", "lora-n128", "dpo-n128", "orpo-n128", "dpo-n1024"]
    # HH-RLHF's first 1700 pairs hold a few broken ones (an empty answer): the plan draws from the rest
    assert 1690 <= len(plan.pool) < 1700 and "bad pair(s); first: " in plan.rendering.note


def test_broken_pairs_stop_the_plan_or_are_left_out_of_every_arm(setup, tmp_path):
    """A broken pair in the pool: named before anything runs; with skip_bad, no arm's subset holds it."""
    from tunelab.compare.plan import make_plan

    with open(tmp_path / "pool.jsonl", "a") as f:
        f.write(json.dumps({"id": "empty", "prompt": "Hi?", "chosen": " ", "rejected": "No."}) + "\n")
        f.write(json.dumps({"id": "same", "prompt": "Hi?", "chosen": "Yes.", "rejected": "Yes."}) + "\n")
    setup["arms"] = ["zero_shot", {"lora": {"n": [24]}}, {"dpo": {"n": [24]}}]
    with pytest.raises(TunelabError, match=r"pool.jsonl:25: the chosen answer is empty; .*fix it, or set train: {data: {skip_bad: true}} to skip bad records$"):
        make_plan(setup)
    setup["train"] = {**TINY, "data": {**TINY["data"], "skip_bad": True}}
    plan = make_plan(setup)
    assert len(plan.pool) == 24 and "pool.jsonl: skipped 2 bad pair(s); first: " in plan.rendering.note
    setup["arms"] = [{"lora": {"n": [24]}}]  # every good pair: the SFT arm reads its subset without a skip
    compare(setup, out=tmp_path / "out", say=lambda m: None)
    ids = [json.loads(x)["id"] for x in (tmp_path / "out" / "data" / "train-n24.jsonl").read_text().splitlines()]
    assert len(ids) == 24 and not {"empty", "same"} & set(ids)
    summary = json.loads((tmp_path / "out" / "arms" / "lora-n24" / "train" / "summary.json").read_text())
    assert summary["train_rows"] == 24 and summary["stopped"] == "completed"


def test_implicit_reward_of_adapter_and_full_weights_arms(setup, tmp_path):
    """reward_acc in the task: an adapter arm measures against its base inside the same weights, a
    full-weights DPO arm against the model it started from, loaded beside it; the base has none."""
    (tmp_path / "task.yaml").write_text(yaml.safe_dump({"name": "pairs", "type": "preference", "data": "test.jsonl",
                                                        "metrics": ["pref_acc", "reward_acc"]}))
    setup["arms"] = ["zero_shot", {"dpo": {"n": [8]}},
                     {"dpo": {"n": [8], "tag": "full", "train": {"preference": {"weights": "full"}}}}]
    compare(setup, out=tmp_path / "out", say=lambda m: None)
    res = {a: json.loads((tmp_path / "out" / "arms" / a / "eval" / "results.json").read_text())
           for a in ("zero_shot", "dpo-n8", "dpo-n8-full")}
    assert res["zero_shot"]["metrics"]["reward_acc"]["value"] is None
    for arm in ("dpo-n8", "dpo-n8-full"):
        assert 0.0 <= res[arm]["metrics"]["reward_acc"]["value"] <= 1.0
    assert "|reference tiny-llama sha256:" in res["dpo-n8-full"]["signature"]
    assert (tmp_path / "out" / "arms" / "dpo-n8-full" / "train" / "model").is_dir()


def test_safety_probe_of_every_arm_on_the_test_prompts(setup, tmp_path, capsys):
    """safety: true on a preference task: each arm answers the test pairs' first user turns (the probe),
    compare.json and the sentences give toxicity and refusals against the base; adding it to a finished
    compare probes only."""
    from tunelab.cli.compare import print_compare

    setup["arms"] = ["zero_shot", {"dpo": {"n": [8]}}]
    out = tmp_path / "out"
    compare(setup, out=out, say=lambda m: None)
    assert not (out / "arms" / "dpo-n8" / "probe").exists()
    before = (out / "arms" / "dpo-n8" / "eval" / "results.json").stat().st_mtime_ns
    said = []
    compare({**setup, "safety": True, "probe_limit": 3}, out=out, say=said.append)
    assert any("dpo-n8: finished earlier, running its safety probe" in m for m in said)
    assert (out / "arms" / "dpo-n8" / "eval" / "results.json").stat().st_mtime_ns == before  # not evaluated again
    prompts = [json.loads(x) for x in (out / "data" / "probe-prompts.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()][:3]
    assert [p["prompt"] for p in prompts] == [t["prompt"] for t in test]
    s = json.loads((out / "compare.json").read_text())
    arms = {a["id"]: a for a in s["arms"]}
    base, tuned = arms["zero_shot"]["probe"], arms["dpo-n8"]["probe"]
    assert base["n_prompts"] == tuned["n_prompts"] == 3 and base["vs"] is None and "diff" not in base
    assert tuned["vs"] == "zero_shot" and set(tuned["diff"]) == {"mean_toxicity", "toxic_fraction", "refusal_rate"}
    assert tuned["diff"]["refusal_rate"]["n"] == 3 and 0.0 <= tuned["refusal_rate"]["value"] <= 1.0
    res = json.loads((out / "arms" / "dpo-n8" / "probe" / "results.json").read_text())
    assert "chat yes" in res["signature"] and "adapter sha256:" in res["signature"]
    assert any(x.startswith("On the safety probe (3 test prompts, answered in chat)") for x in s["sentences"])
    said.clear()
    compare({**setup, "safety": True, "probe_limit": 3}, out=out, say=said.append)
    assert any("dpo-n8: finished earlier, kept" in m for m in said)
    print_compare(s)
    assert "safety probe" in capsys.readouterr().out
    from tunelab.report import render

    html = render(out)
    table = html[html.index('<table id="probe-table">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 3 and "<td>zero_shot</td><td>3</td>" in table and "<td>dpo-n8</td><td>3</td>" in table
