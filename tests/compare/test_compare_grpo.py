"""GRPO arms in a compare (compare/rl.py): the arm trains on the compare's own task's prompts, rendered from
its pool records, rewarded by the task's metric; the plan refuses what cannot run; a finished compare is
kept; --dry-run counts the rollouts."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from tunelab.cli import main
from tunelab.compare.plan import make_plan
from tunelab.compare.run import compare
from tunelab.errors import TunelabError

G = 4
# no train.max_steps / epochs / batch_tokens: the automatic schedule's prompt rule decides (n = 8: 3 epochs)
GRPO_TRAIN = {"grpo": {"num_generations": G}, "data": {"max_length": 256},
              "train": {"save_every": 2, "keep_checkpoints": 1, "lr": 1e-3}}


def config(tiny_dir, **over):
    base = {"name": "rl", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
            "limit": 4, "arms": ["zero_shot", {"grpo": {"n": [8]}}], "train": GRPO_TRAIN,
            "retention_prompts": {"limit": 3, "max_new_tokens": 6}}
    base.update(over)
    return base


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def done(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rl") / "c"
    return compare(config(tiny_dir), out=out, say=lambda m: None)


def test_grpo_arm_trains_on_the_tasks_prompts_with_its_metric_as_reward(done):
    assert done.ran == ["zero_shot", "grpo-n8"]
    run = done.out / "arms" / "grpo-n8" / "train"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    # the reward is the compare's metric; completions are as long as the task's answers and stop where they stop
    assert cfg["method"] == "grpo"
    assert [(r["metric"], r["weight"]) for r in cfg["grpo"]["rewards"]] == [("exact_match", 1.0)]
    assert cfg["grpo"]["max_completion_length"] == 16 and cfg["grpo"]["stop"] == ["\n"]
    assert cfg["data"]["train"] == str((done.out / "data" / "pool-n8.jsonl").resolve())
    rows = read_rows(run / "metrics.jsonl")
    assert {"reward", "reward_std", "rewards/exact_match/mean", "frac_reward_zero_std"} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    # the prompt rule: 8 prompts, 2 per step, 3 epochs (every prompt sampled G times in each)
    assert summary["schedule"]["epochs"] == 3 and "epochs" in summary["schedule"]["auto"]
    assert summary["steps"] == len(rows) >= 8
    # the prompts are the task's prompt template over the arm's pool records (the first 8 of the permutation)
    pool = read_rows(done.out / "data" / "pool-n8.jsonl")
    samples = read_rows(run / "completions.jsonl")
    assert samples and all(any(r["prompt"] in s["prompt"] for r in pool) for s in samples)
    assert set(samples[0]["rewards"]) == {"exact_match"}
    first = (done.out / "arms" / "grpo-n8" / "first_example.txt").read_text()
    assert first.startswith("# first training prompt") and pool[0]["prompt"] in first


def test_grpo_arm_in_the_table_with_cost_and_drift(done):
    s = json.loads((done.out / "compare.json").read_text())
    arm = next(a for a in s["arms"] if a["id"] == "grpo-n8")
    assert arm["method"] == "grpo" and arm["n_train"] == 8
    assert arm["train_cost"]["tokens"] > 0 and arm["train_cost"]["wall_s"] > 0
    assert arm["training"]["steps"] >= 8 and arm["training"]["reward_q4"] is not None
    assert "diff_vs_zero_shot" in arm
    assert (done.out / "arms" / "grpo-n8" / "train" / "adapter" / "adapter_config.json").is_file()
    assert s["retention"]["drift_prompts"]["n"] == 3 and arm["drift"]["shared_base"] is False
    assert arm["drift"]["kl_per_token"] >= 0.0


def test_a_finished_compare_is_kept_not_retrained(done, tiny_dir):
    summary = done.out / "arms" / "grpo-n8" / "train" / "summary.json"
    before = summary.stat().st_mtime_ns
    again = compare(config(tiny_dir), out=done.out, say=lambda m: None)
    assert again.ran == [] and again.reused == ["zero_shot", "grpo-n8"]
    assert summary.stat().st_mtime_ns == before


def test_a_worker_runs_the_grpo_arm_and_an_interrupted_one_resumes(tiny_dir, tmp_path, monkeypatch):
    """`tunelab compare --arm grpo-n8` (a worker) builds the providers as the plain run does; Ctrl-C
    during its training keeps a checkpoint, and the next run resumes the arm from it."""
    from tunelab.errors import Interrupted

    cfg = config(tiny_dir, retention_prompts=None,
                 train={**GRPO_TRAIN, "train": {"max_steps": 4, "save_every": 1, "keep_checkpoints": 1}})
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@3")
    with pytest.raises(Interrupted, match="run the same command again to resume"):
        compare(cfg, out=tmp_path / "c", say=lambda m: None, arm="grpo-n8")
    assert list((tmp_path / "c" / "arms" / "grpo-n8" / "train" / "checkpoints").glob("step-*"))
    monkeypatch.delenv("TUNELAB_FAULT")
    said = []
    res = compare(cfg, out=tmp_path / "c", say=said.append, arm="grpo-n8")
    assert res.ran == ["grpo-n8"] and any("resuming grpo" in m for m in said)
    rows = read_rows(tmp_path / "c" / "arms" / "grpo-n8" / "train" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "reward" in rows[-1]
    res = compare(cfg, out=tmp_path / "c", say=lambda m: None)  # the other arm, then the table
    assert res.ran == ["zero_shot"] and res.reused == ["grpo-n8"] and (tmp_path / "c" / "compare.json").is_file()


def test_grpo_settings_are_in_the_arms_signature(tiny_dir, tmp_path):
    plan = make_plan(config(tiny_dir), out=tmp_path / "a")
    other = make_plan(config(tiny_dir, arms=["zero_shot", {"grpo": {"n": [8], "train": {"grpo": {"beta": 0.04}}}}]),
                      out=tmp_path / "b")
    assert plan.arm_signature(plan.arms[1]) != other.arm_signature(other.arms[1])
    assert plan.arm_signature(plan.arms[0]) == other.arm_signature(other.arms[0])


@pytest.fixture
def ter_task(tmp_path):
    """The dates task ranked by TER, a metric that scores a corpus of answers, not one: no reward."""
    path = tmp_path / "dates_ter.yaml"
    path.write_text(yaml.safe_dump({"name": "dates_ter", "data": "builtin:dates?split=test&n=20&seed=1",
                                    "chat": True, "prompt": "{{ prompt }}", "answer": "{{ completion }}",
                                    "generation": {"max_new_tokens": 16, "stop": ["\n"]},
                                    "metrics": ["ter", "exact_match"]}))
    return path


def test_a_metric_that_cannot_be_a_reward_is_refused_in_one_line(tiny_dir, tmp_path, ter_task):
    with pytest.raises(TunelabError) as e:
        make_plan(config(tiny_dir, task=str(ter_task)), out=tmp_path / "o")
    msg = str(e.value)
    assert "\n" not in msg and "arms[1].grpo: the compare's metric ter cannot be a reward" in msg
    assert "grpo: {rewards: [{metric: exact_match}]}" in msg
    # with its own rewards the same arm plans
    arms = ["zero_shot", {"grpo": {"n": [8], "train": {"grpo": {"rewards": [{"metric": "exact_match"},
                                                                            {"metric": "regex", "pattern": "^\\d"}]}}}}]
    plan = make_plan(config(tiny_dir, task=str(ter_task), arms=arms), out=tmp_path / "o2")
    assert [r["metric"] for r in plan.train_config(plan.arms[1])["grpo"]["rewards"]] == ["exact_match", "regex"]


@pytest.mark.parametrize("train, message", [
    ({"grpo": {"rewards": [{"metric": "acc"}]}}, "arms[1].grpo: grpo.rewards[0]: metric acc does not score one"),
    ({"grpo": {"max_completion_length": 300}}, "arms[1].grpo: data.max_length (256) leaves no room"),
    ({"data": {"eval": "held_out.jsonl"}}, "arms[1].grpo: data.eval: held_out.jsonl is not used by method: grpo"),
    ({"grpo": {"task": "builtin:arith"}}, "arms[1].grpo: grpo.task: builtin:arith is not used in a compare"),
])
def test_bad_grpo_arm_settings_fail_before_any_arm_runs(tiny_dir, tmp_path, train, message):
    with pytest.raises(TunelabError, match=re.escape(message)):
        make_plan(config(tiny_dir, arms=["zero_shot", {"grpo": {"n": [8], "train": train}}]), out=tmp_path / "o")


def test_dry_run_counts_the_rollouts(tiny_dir, tmp_path, capsys):
    from tunelab.compare.estimate import estimate

    plan = make_plan(config(tiny_dir, arms=["zero_shot", {"grpo": {"n": [8]}}, {"lora": {"n": [8]}}]),
                     out=tmp_path / "o")
    est = {e.arm: e for e in estimate(plan)}
    visits = 3 * 8  # 3 epochs of the 8 prompts (the prompt rule)
    grpo = est["grpo-n8"]
    assert grpo.rollout_tokens == visits * G * 16  # G completions of max_completion_length (16) each visit
    # trained: each visit's prompt once, then its G completions: twice the completions add only theirs
    doubled = {**GRPO_TRAIN, "grpo": {"num_generations": 2 * G}}
    twice = make_plan(config(tiny_dir, arms=[{"grpo": {"n": [8]}}], train=doubled), out=tmp_path / "o2")
    assert estimate(twice)[0].train_tokens - grpo.train_tokens == visits * G * 16 < grpo.train_tokens
    assert est["lora-n8"].rollout_tokens == 0 and est["zero_shot"].rollout_tokens == 0
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump(config(tiny_dir, out=str(tmp_path / "o"))))
    with pytest.raises(SystemExit) as e:
        main(["compare", str(path), "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"(+{visits * G * 16:,} sampled)" in out


def test_the_example_plans(tiny_dir, tmp_path):
    """examples/compare_rl.yaml plans and estimates (its run is the lead's, on the default model; here the
    tiny model's tokenizer counts, and the PIQA retention task is left out: shared data)."""
    from pathlib import Path

    from tunelab.compare.estimate import estimate

    example = Path(__file__).resolve().parents[2] / "examples" / "compare_rl.yaml"
    plan = make_plan(str(example), ["retention=[]", f"model={tiny_dir}"], out=tmp_path / "o")
    assert [a.id for a in plan.arms] == ["zero_shot", "few_shot-k3-random", "lora-n64", "grpo-n64"]
    rewards = plan.train_config(plan.arms[3])["grpo"]["rewards"]
    assert [r["metric"] for r in rewards] == ["exact_match", "regex"] and rewards[1]["weight"] == 0.2
    grpo = {e.arm: e for e in estimate(plan)}["grpo-n64"]
    assert grpo.rollout_tokens == 3 * 64 * 8 * 16
