"""method: grpo from the CLI: prompts and rewards from a task file (evaluate/rewards.py), the engine's
rollouts on the live model, a SIGKILLed run that resumes exactly, and the task's bad inputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tunelab.errors import TunelabError
from tunelab.train import checkpoint as ckpt

from .conftest import metrics, subprocess_env, write_config


@pytest.fixture
def task_file(tmp_path):
    """A generate task: 12 questions whose answer is a number, rendered by a chat prompt."""
    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} plus {i}?", "a": str(2 * i)}) + "\n" for i in range(12)))
    task = tmp_path / "sums.yaml"
    task.write_text(yaml.safe_dump({"name": "sums", "data": "questions.jsonl", "prompt": "{{ q }}",
                                    "answer": "{{ a }}", "chat": True, "metrics": ["exact_match"]}))
    return task


def cli_config(make_config, task, name="cli", **grpo):
    settings = {"num_generations": 4, "max_completion_length": 6, "task": str(task),
                "rewards": [{"metric": "exact_match", "weight": 1.0}, {"metric": "regex", "pattern": "[0-9]",
                                                                       "weight": 0.5}], **grpo}
    cfg = make_config(name, method="grpo", grpo=settings, lora={"r": 4, "alpha": 8, "dropout": 0.0},
                      data={"eval": None, "max_length": 96},
                      train={"max_steps": 6, "batch_tokens": 3 * 4 * 60, "lr": 5e-3, "warmup": 0, "save_every": 2,
                             "eval_every": 100})
    return cfg


def test_killed_cli_run_resumes_exactly(make_config, task_file, tmp_path):
    from tunelab.cli import main

    straight = write_config(cli_config(make_config, task_file, "straight"), tmp_path / "straight.yaml")
    with pytest.raises(SystemExit) as e:
        main(["train", str(straight)])
    assert e.value.code == 0
    want = metrics(tmp_path / "straight")
    assert len(want) == 6 and {"rewards/exact_match/mean", "rewards/regex/mean", "kl"} - set(want[0]) == {"kl"}
    assert want[0]["completions/max_length"] <= 6
    # the same run SIGKILLed after step 5: the checkpoint of step 4 and the lost step 5 are redone
    path = write_config(cli_config(make_config, task_file, "killed"), tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="kill@5"), timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert ckpt.latest(tmp_path / "killed").name == "step-4"
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "--resume"])
    assert e.value.code == 0
    keys = ("step", "loss", "grad_norm", "reward", "rewards/exact_match/mean", "entropy")
    assert [{k: r[k] for k in keys} for r in metrics(tmp_path / "killed")] == [{k: r[k] for k in keys} for r in want]
    samples = [json.loads(x) for x in (tmp_path / "killed" / "completions.jsonl").read_text().splitlines()]
    assert "What is" in samples[0]["prompt"] and "<|im_start|>" in samples[0]["prompt"]  # the task's chat prompt


def _providers(make_config, task_file, base_dir, **grpo):
    from tunelab.config import load_train_config
    from tunelab.evaluate.rewards import providers

    cfg = load_train_config(cli_config(make_config, task_file, **grpo))
    return providers(cfg, base_dir)  # where the config would be


def test_bad_rewards_are_one_line(make_config, task_file, tmp_path):
    cases = [
        ({"rewards": [{"metric": "pref_acc"}]}, r"^grpo.rewards\[0\]: metric pref_acc does not score one generated "
                                                r"answer; a reward metric is one of exact_match, "),
        ({"rewards": [{"function": "nowhere_module:score"}]}, r"^grpo.rewards\[0\]: cannot import nowhere_module"),
        ({"rewards": [{"metric": "exact_match"}, {"metric": "exact_match"}]}, "name a reward twice"),
    ]
    for grpo, message in cases:
        with pytest.raises(TunelabError, match=message):
            _providers(make_config, task_file, tmp_path, **grpo)
    with pytest.raises(TunelabError, match=r"^grpo.task: task file nowhere.yaml not found \(looked beside the config"):
        _providers(make_config, "nowhere.yaml", tmp_path)
    no_answer = tmp_path / "open.yaml"
    no_answer.write_text(yaml.safe_dump({"name": "open", "data": "questions.jsonl", "prompt": "{{ q }}"}))
    with pytest.raises(TunelabError, match=r"^grpo.rewards\[0\]: metric exact_match compares with the task's answer, "
                                           r"and .*open.yaml has no answer template"):
        _providers(make_config, no_answer, tmp_path)
    regex = _providers(make_config, no_answer, tmp_path, rewards=[{"metric": "regex", "pattern": "x"}])["rewards"][0]
    assert regex.name == "regex" and regex.fn("x1", {"gold": []}) == 1.0 and regex.fn("1", {"gold": []}) == 0.0
    default = _providers(make_config, task_file, tmp_path, rewards=[])  # the task's first metric
    (em,) = default["rewards"]
    assert em.name == "exact_match" and em.fn(" 4 ", {"gold": ["4"]}) == 1.0 and em.fn("5", {"gold": ["4"]}) == 0.0
    prompts = default["prompts"](type("Source", (), {"tokenizer": None})())  # no chat template needed to list them
    assert len(prompts) == 12 and prompts[3].item["gold"] == ["6"]


def test_a_task_that_is_not_generate_is_refused(make_config, task_file, tmp_path, capsys):
    from tunelab.cli import main

    mc = tmp_path / "mc.yaml"
    mc.write_text(yaml.safe_dump({"name": "mc", "type": "multiple_choice", "data": "questions.jsonl",
                                  "prompt": "{{ q }}", "choices": "{{ [a, q] }}", "answer": "0"}))
    path = write_config(cli_config(make_config, mc, "mc"), tmp_path / "mc.yaml.train.yaml")
    with pytest.raises(SystemExit) as e:
        main(["train", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "method: grpo samples answers, and this task is type: multiple_choice; use a type: generate task" in err
    assert len(err.splitlines()) == 1


def test_a_python_reward_and_a_raising_one(make_config, task_file, tmp_path):
    (tmp_path / "my_rewards.py").write_text(
        "def short(completion, item):\n    return -len(completion)\n\n"
        "def broken(completion, item):\n    raise KeyError('score')\n")
    from tunelab.train.loop import train

    got = _providers(make_config, task_file, tmp_path, rewards=[{"function": "my_rewards:short", "weight": 0.1}])
    assert got["rewards"][0].fn("abc", {}) == -3
    bad = _providers(make_config, task_file, tmp_path, rewards=[{"function": "my_rewards:broken"}])
    with pytest.raises(TunelabError, match=r"^grpo reward my_rewards:broken raised KeyError: 'score' on the completion "
                                           r"'.*' of .*questions.jsonl"):
        train(cli_config(make_config, task_file, "broken", rewards=[{"function": "my_rewards:broken"}]), providers=bad)


def test_a_reward_module_is_the_file_beside_its_config(make_config, task_file, tmp_path):
    """Two configs in two folders, each with its own my_rewards.py, in one process: each gets its own
    file's function, not the module of that name imported first."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, value in ((first, 1.0), (second, 2.0)):
        folder.mkdir()
        (folder / "my_rewards.py").write_text(f"def score(completion, item):\n    return {value}\n")
    spec = [{"function": "my_rewards:score"}]
    assert _providers(make_config, task_file, first, rewards=spec)["rewards"][0].fn("x", {}) == 1.0
    assert _providers(make_config, task_file, second, rewards=spec)["rewards"][0].fn("x", {}) == 2.0
    (second / "my_rewards.py").write_text("def score(completion, item)\n")  # a syntax error: one line
    with pytest.raises(TunelabError, match=r"^grpo.rewards\[0\]: cannot import my_rewards \(.*\); put my_rewards.py "
                                           "beside the config$"):
        _providers(make_config, task_file, second, rewards=spec)
