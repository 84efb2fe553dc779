"""A missing data file: the error says where it was looked for and why there (issue 34 item 5).

A task's relative `data:` is resolved from the task file's folder, yet the message said "relative
paths are from the current folder". Each case runs from another folder than the file's, so a
message that names the wrong base folder cannot pass.
"""
from __future__ import annotations

import json

import pytest
import yaml

from .conftest import one_line


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """(the folder holding the config files, the folder the command runs in)."""
    files, elsewhere = tmp_path / "configs", tmp_path / "elsewhere"
    files.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")
    return files, elsewhere


def _write(path, obj) -> str:
    path.write_text(yaml.safe_dump(obj))
    return str(path)


def _says_file_folder(line: str, files, missing: str, named_in: str | None = None) -> None:
    assert f"looked for {missing} at {files / missing}" in line, line
    assert "current folder" not in line, line
    assert f"relative paths in {named_in or ''}" in line and f"are resolved from its folder, {files}" in line, line


@pytest.mark.parametrize("task", [
    {"name": "t", "data": "items.jsonl", "answer": "{{ a }}"},  # the items
    {"name": "t", "data": "builtin:dates", "fewshot": {"k": 1, "pool": "items.jsonl"}},  # the few-shot pool
])
def test_task_file_data_is_looked_for_beside_the_task_file(cli, layout, tiny_dir, task):
    files, _ = layout
    path = _write(files / "task.yaml", task)
    code, _, err = cli("eval", tiny_dir, "--task", path, "--limit", "2")
    line = one_line(err)
    assert code == 2
    _says_file_folder(line, files, "items.jsonl", path)


def test_train_config_data_names_both_places_it_looked(cli, layout, tiny_dir):
    files, elsewhere = layout
    good = files / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    for lead, data in (("data.train: ", {"train": "train.jsonl"}), ("", {"train": "good.jsonl", "eval": "ev.jsonl"})):
        path = _write(files / "run.yaml", {"model": str(tiny_dir), "data": data, "out": str(elsewhere / "run")})
        code, _, err = cli("train", path)
        line = one_line(err)
        missing = data.get("eval", data["train"])
        assert code == 2 and line.startswith(f"error: {lead}data file not found"), line
        assert f"looked for {missing} at {files / missing}, then at {elsewhere / missing}" in line, line
        assert f"relative paths in a train config are looked up in its folder, {files}, then in the current folder" in line


def test_train_config_replay_names_both_places_it_looked(cli, layout, tiny_dir):
    files, elsewhere = layout
    path = _write(files / "run.yaml", {"model": str(tiny_dir), "data": {"train": "builtin:dates"},
                                       "replay": {"data": "general.jsonl"}, "out": str(elsewhere / "run")})
    code, _, err = cli("train", path)
    line = one_line(err)
    assert code == 2 and "replay.data: data file not found" in line
    assert f"at {files / 'general.jsonl'}, then at {elsewhere / 'general.jsonl'}" in line, line


@pytest.mark.parametrize("over, missing", [
    ({"train_data": "pool.jsonl"}, "pool.jsonl"),
    ({"task": "task.yaml"}, "task.yaml"),
    ({"retention": ["task.yaml"]}, "task.yaml"),
])
def test_compare_paths_are_looked_for_beside_the_compare_file(cli, layout, tiny_dir, over, missing):
    files, _ = layout
    cfg = {"model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=20", "arms": ["zero_shot"]}
    path = _write(files / "cmp.yaml", dict(cfg, **over))
    code, _, err = cli("compare", path, "--dry-run")
    line = one_line(err)
    assert code == 2 and f"{files / missing}" in line, line
    assert "current folder" not in line and f"relative paths in {path} are resolved from its folder, {files}" in line


def test_a_retention_task_names_its_own_folder(cli, layout, tiny_dir):
    files, _ = layout
    (files / "tasks").mkdir()
    task = _write(files / "tasks" / "keep.yaml", {"name": "keep", "data": "keep.jsonl", "answer": "{{ a }}"})
    path = _write(files / "cmp.yaml", {"model": str(tiny_dir), "task": "builtin:dates",
                                       "train_data": "builtin:dates?n=20", "arms": ["zero_shot"],
                                       "retention": ["tasks/keep.yaml"]})
    code, _, err = cli("compare", path, "--dry-run")
    assert code == 2
    _says_file_folder(one_line(err), files / "tasks", "keep.jsonl", task)


def test_a_path_on_the_command_line_is_from_the_current_folder(cli, layout, tiny_dir):
    _, elsewhere = layout
    code, _, err = cli("data", "prepare", "sub/nope.jsonl", "--model", tiny_dir)
    line = one_line(err)
    assert code == 2
    assert (f"looked for sub/nope.jsonl at {elsewhere / 'sub' / 'nope.jsonl'} "
            f"(relative paths are resolved from the current folder, {elsewhere})") in line, line
