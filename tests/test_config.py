"""Config files: unknown keys, ranges and overrides give one message naming every problem."""
from __future__ import annotations

import pytest

import yaml

from tunelab.config import (CompareConfig, TaskConfig, TrainConfig, load_config, load_task, load_train_config,
                            parse_overrides, to_yaml)
from tunelab.errors import TunelabError


def test_overrides_nest_and_parse_yaml_values():
    assert parse_overrides(["train.lr=1e-4", "lora.r=8", "data.packing=false", "name=x"]) == {
        "train": {"lr": "1e-4"}, "lora": {"r": 8}, "data": {"packing": False}, "name": "x"}
    with pytest.raises(TunelabError, match="is not key=value"):
        parse_overrides(["train.lr"])


def test_train_config_defaults_and_overrides(tmp_path):
    p = tmp_path / "my.yaml"
    p.write_text("data: {train: builtin:dates}\nmethod: dora\n")
    cfg = load_train_config(p, ["train.lr=1e-4", "lora.r=8"])
    assert cfg.name == "my" and cfg.method == "dora" and cfg.train.lr == 1e-4 and cfg.lora.r == 8
    assert cfg.train.batch_tokens is None and cfg.train.compile == "auto" and cfg.data.train_on == "completion"


def test_unknown_keys_name_path_and_allowed(tmp_path):
    with pytest.raises(TunelabError) as e:
        load_config(TrainConfig, {"data": {"train": "x", "formt": "auto"}, "train": {"lrr": 1}, "bogus": 1})
    msg = str(e.value)
    assert "data.formt: unknown key (did you mean 'format'?" in msg
    assert "train.lrr: unknown key (did you mean 'lr'?" in msg and "allowed: epochs" in msg
    assert "bogus: unknown key" in msg and "\n" not in msg


def test_out_of_range_says_the_range():
    with pytest.raises(TunelabError, match=r"train.lr: must be auto or a number in \(0, 1\), e.g. 2e-4 \(got -1\)"):
        load_config(TrainConfig, {"data": {"train": "x"}, "train": {"lr": -1}})
    with pytest.raises(TunelabError, match=r"data.eval: .*between 0 and 0.5"):
        load_config(TrainConfig, {"data": {"train": "x", "eval": 0.9}})
    from tunelab.train.objectives import resolve  # the methods are declared beside their objectives

    with pytest.raises(TunelabError, match=r"method: must be 'full', 'lora', 'dora', 'qlora', 'dpo', 'orpo' or 'grpo'"):
        resolve(load_config(TrainConfig, {"data": {"train": "x"}, "method": "qlorax"}))
    with pytest.raises(TunelabError, match=r"preference.beta: .*greater than 0"):
        load_config(TrainConfig, {"data": {"train": "x"}, "method": "dpo", "preference": {"beta": 0}})


def test_orpo_lambda_is_written_lambda():
    cfg = load_config(TrainConfig, {"data": {"train": "x"}, "method": "orpo", "preference": {"lambda": 0.5}})
    assert cfg.preference.orpo_lambda == 0.5
    assert "lambda: 0.5" in to_yaml(cfg)  # the resolved config.yaml reads back with the same key
    assert load_config(TrainConfig, yaml.safe_load(to_yaml(cfg))).preference.orpo_lambda == 0.5


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(TunelabError, match="data: required key is missing"):
        load_config(TrainConfig, {})
    p = tmp_path / "bad.yaml"
    p.write_text("model: default\ndata: {train: x\n")
    with pytest.raises(TunelabError, match=r"bad.yaml:\d+: not valid YAML"):
        load_train_config(p)
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(TunelabError, match="the file is empty"):
        load_train_config(tmp_path / "empty.yaml")
    with pytest.raises(TunelabError, match="config file not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_task_config_resolves_relative_paths(tmp_path):
    (tmp_path / "tasks").mkdir()
    p = tmp_path / "tasks" / "t.yaml"
    p.write_text("name: t\ndata: ../data/x.jsonl\ntype: multiple_choice\nchoices: '{{ choices }}'\nsplit: '0:10'\n")
    task = load_task(p)
    assert task.resolve(task.data) == tmp_path / "tasks" / ".." / "data" / "x.jsonl"
    with pytest.raises(TunelabError, match="split must look like"):
        load_config(TaskConfig, {"name": "t", "split": "10"})


def test_compare_config_requires_arms():
    with pytest.raises(TunelabError, match="arms"):
        load_config(CompareConfig, {"task": "t.yaml", "train_data": "builtin:dates", "arms": []})
