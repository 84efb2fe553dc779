"""The compare plan: arms expanded from the YAML, nested subsets, and every bad input as one line."""
from __future__ import annotations

import pytest
import yaml

from tunelab.compare.lock import folder_lock
from tunelab.compare.plan import make_plan
from tunelab.errors import TunelabError


def config(**over):
    base = {"name": "t", "model": "default", "task": "builtin:dates", "train_data": "builtin:dates?n=64",
            "arms": ["zero_shot", {"few_shot": {"k": [1, 3], "sampler": ["random", "first_n"]}},
                     {"lora": {"n": [16, 32]}}, {"full": {"n": 8}}]}
    base.update(over)
    return base


def test_arms_expand_one_per_setting(tmp_path):
    plan = make_plan(config(), out=tmp_path / "c")
    assert [a.id for a in plan.arms] == ["zero_shot", "few_shot-k1-random", "few_shot-k3-random", "few_shot-k1-first_n",
                                         "few_shot-k3-first_n", "lora-n16", "lora-n32", "full-n8"]
    assert plan.metric == "exact_match" and plan.higher_is_better
    assert plan.task.fewshot.pool == "builtin:dates?n=64"  # demonstrations come from the train pool


def test_subsets_are_nested_and_seeded(tmp_path):
    plan = make_plan(config(), out=tmp_path / "c")
    small, big = plan.subset(16), plan.subset(32)
    assert big[:16] == small  # the 16 are inside the 32
    assert len({r.data["id"] for r in big}) == 32
    again = make_plan(config(), out=tmp_path / "d").subset(32)
    assert [r.data["id"] for r in again] == [r.data["id"] for r in big]
    other_seed = make_plan(config(seed=7), out=tmp_path / "e").subset(32)
    assert [r.data["id"] for r in other_seed] != [r.data["id"] for r in big]


def test_arm_on_another_model_gets_its_own_id(tmp_path, tiny_dir):
    plan = make_plan(config(arms=["zero_shot", {"zero_shot": {"model": str(tiny_dir)}},
                                  {"lora": {"n": 8, "model": str(tiny_dir)}}]), out=tmp_path / "c")
    assert [a.id for a in plan.arms] == ["zero_shot", "zero_shot@tiny-llama", "lora-n8@tiny-llama"]
    assert plan.arms[2].model == str(tiny_dir)


def test_train_config_of_an_arm(tmp_path):
    plan = make_plan(config(train={"train": {"epochs": 2}}, arms=[{"lora": {"n": 16, "train": {"lora": {"r": 4}}}}]),
                     out=tmp_path / "c")
    cfg = plan.train_config(plan.arms[0])
    assert cfg["train"]["epochs"] == 2 and cfg["lora"]["r"] == 4 and cfg["method"] == "lora"
    assert cfg["data"]["train"].endswith("data/train-n16.jsonl") and cfg["data"]["eval"] is None
    assert cfg["out"].endswith("arms/lora-n16/train")


@pytest.mark.parametrize("over, message", [
    ({"arms": [{"lora": {"n": [32, 100]}}]},
     "arms[0].lora.n: 100 exceeds the train pool (64 records in builtin:dates?n=64); use n <= 64"),
    ({"arms": ["zero_shot", {"qlora": {"n": 8}}]}, "arms[1].qlora: method: qlora needs a CUDA GPU"),
    ({"arms": [{"lora": {"n": 8, "model": "openai:http://127.0.0.1:8000/v1#m"}}]},
     "is an endpoint; tunelab cannot fine-tune a served model"),
    ({"arms": ["zero_shot", "prompting"]}, "arms[1]: unknown arm 'prompting'; use one of zero_shot, few_shot"),
    ({"arms": [{"few_shot": {"k": [0]}}]}, "arms[0].few_shot.k: 0 must be an integer from 1 to 128 (k: 0 is the zero_shot arm)"),
    ({"arms": [{"few_shot": {"kk": 3}}]}, "arms[0].few_shot: kk: unknown key (did you mean 'k'?"),
    ({"arms": [{"few_shot": {"sampler": "best"}}]}, "arms[0].few_shot.sampler: unknown sampler 'best'"),
    ({"arms": [{"lora": {"n": 8}}, {"lora": {"n": [8]}}]}, "arms[1].lora repeats arm 'lora-n8'"),
    ({"arms": [{"lora": {"n": 8, "train": {"train": {"lr": 5}}}}]}, "arms[0].lora (training config): train.lr"),
    ({"metric": "bleu"}, "metric: 'bleu' is not one of task 'dates''s metrics (exact_match)"),
])
def test_bad_input_is_one_line(tmp_path, over, message):
    with pytest.raises(TunelabError) as e:
        make_plan(config(**over), out=tmp_path / "c")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_metric_that_cannot_rank_arms(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n')
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({"name": "polite", "data": str(data), "answer": "{{ completion }}",
                                    "metrics": ["refusal", "exact_match"]}))
    with pytest.raises(TunelabError, match="metric 'refusal' cannot rank arms .it counts refusals, not correct answers.; "
                                           "set metric: to a quality metric of the task .exact_match."):
        make_plan(config(task=str(task), train_data=str(data), arms=["zero_shot"]), out=tmp_path / "c")
    retrieval = tmp_path / "ret.yaml"
    retrieval.write_text(yaml.safe_dump({"name": "search", "type": "retrieval", "corpus": "c.jsonl",
                                         "queries": "q.jsonl", "qrels": "q.txt", "metrics": ["map"]}))
    with pytest.raises(TunelabError, match="retrieval task: it scores a retriever, not a language model"):
        make_plan(config(task=str(retrieval), train_data=str(data), arms=["zero_shot"]), out=tmp_path / "c")


def test_relative_paths_resolve_against_the_yaml(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pool.jsonl").write_text("".join(f'{{"prompt": "p{i}", "completion": "c{i}"}}\n' for i in range(5)))
    cfg = tmp_path / "cmp.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in config(train_data="data/pool.jsonl", arms=[{"lora": {"n": 6}}]).items()
                                   if k != "name"}))
    with pytest.raises(TunelabError, match=r"cmp.yaml: arms\[0\].lora.n: 6 exceeds the train pool \(5 records"):
        make_plan(cfg)
    plan = make_plan(cfg, ["arms=[{lora: {n: 5}}]"])
    assert plan.config.name == "cmp" and str(plan.out) == "runs/cmp" and len(plan.subset(5)) == 5


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_one(tmp_path):
    folder = tmp_path / "c"
    with folder_lock(folder):
        with pytest.raises(TunelabError, match=r"another compare \(pid \d+\) is writing this folder; wait for it"):
            with folder_lock(folder):
                pass
    # a lock file left by a process that died (pid no longer running, no OS lock held): taken over
    (folder / ".compare.lock").write_text("999999999\n")
    with folder_lock(folder) as path:
        assert path.read_text().strip().isdigit() and path.read_text().strip() != "999999999"
