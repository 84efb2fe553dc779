"""Resume keeps its promises: the printed command works, config changes are refused or recorded,
summary.json covers every launch, a finished run stays finished, and `lr` is the step's own rate."""
from __future__ import annotations

import json
import shlex

import pytest
import yaml

from tunelab import paths
from tunelab.errors import TunelabError
from tunelab.train import checkpoint as ckpt
from tunelab.train import cost
from tunelab.train.loop import TrainingInterrupted, train

from .conftest import metrics, write_config


def test_logged_lr_is_the_rate_of_that_step(make_config):
    # cosine with 2 warmup steps from lr 1e-3: step 1 trains at 0, step 2 at 5e-4, step 3 at 1e-3
    res = train(make_config("lr", train={"max_steps": 3, "warmup": 2, "eval_every": 100}))
    assert [m["lr"] for m in metrics(res.run_dir)] == pytest.approx([0.0, 5e-4, 1e-3])


def test_printed_resume_command_keeps_the_overrides(make_config, tmp_path, monkeypatch, capsys):
    from tunelab.cli import main

    cfg = make_config("base")
    del cfg["out"]  # runs/{name}: the name override decides the folder
    path = write_config(cfg, tmp_path / "base.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@2")
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "name=renamed", "train.max_steps=4"])
    assert e.value.code == 130
    printed = capsys.readouterr().err.split("resume with: ")[1].strip()
    args = shlex.split(printed)
    assert args[:2] == ["tunelab", "train"] and "name=renamed" in args and args[-1] == "--resume"
    monkeypatch.delenv("TUNELAB_FAULT")
    with pytest.raises(SystemExit) as e:
        main(args[1:])  # exactly as printed
    assert e.value.code == 0
    assert [m["step"] for m in metrics(tmp_path / "runs" / "renamed")] == [1, 2, 3, 4]


def test_changed_config_is_refused_and_safe_changes_are_recorded(make_config):
    cfg = make_config("changed", train={"max_steps": 4, "save_every": 2, "eval_every": 2})
    res = train(cfg)
    config_file = res.run_dir / paths.CONFIG_FILE
    before = config_file.read_bytes()
    for override, key in (("train.lr=0.5", "train.lr"), ("lora.r=8", "lora.r")):
        with pytest.raises(TunelabError) as e:
            train(cfg, [override], resume=True)
        assert f"--resume with a changed config: {key} (" in str(e.value) and "\n" not in str(e.value)
        assert config_file.read_bytes() == before  # still describes the checkpoints
    res = train(cfg, ["train.max_steps=6", "train.save_every=3"], resume=True)
    assert res.summary["steps"] == 6
    assert yaml.safe_load(config_file.read_text())["train"]["max_steps"] == 6
    log = [json.loads(x) for x in (res.run_dir / paths.RESUME_LOG_FILE).read_text().splitlines()]
    assert log[-1]["from_step"] == 4
    assert log[-1]["changed"] == {"train.max_steps": {"from": 4, "to": 6}, "train.save_every": {"from": 2, "to": 3}}


def test_resuming_a_finished_run_changes_nothing(make_config, tmp_path, capsys):
    from tunelab.cli import main

    cfg = make_config("done", train={"max_steps": 4, "save_every": 3})
    path = write_config(cfg, tmp_path / "done.yaml")
    train(path)
    summary_file = tmp_path / "done" / paths.SUMMARY_FILE
    before = summary_file.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["train", str(path), "--resume"])
    assert e.value.code == 0
    assert "run already finished at step 4; nothing to do" in capsys.readouterr().err
    assert summary_file.read_bytes() == before


class _FakeMeter:
    """Each launch 'uses' 10 Wh, so a two-launch run must report 20."""

    def __init__(self, output_dir):
        pass

    def so_far_wh(self):
        return 10.0

    def stop_wh(self):
        return 10.0


def test_summary_after_resume_covers_every_launch(make_config, monkeypatch):
    monkeypatch.setattr(cost, "EnergyMeter", _FakeMeter)
    monkeypatch.setattr(cost, "peak_memory_mib", lambda device: 900.0)  # the first launch peaks higher
    cfg = make_config("launches", train={"max_steps": 6, "save_every": 100, "eval_every": 100})
    monkeypatch.setenv("TUNELAB_FAULT", "sigint@3")
    with pytest.raises(TrainingInterrupted):
        train(cfg)
    monkeypatch.delenv("TUNELAB_FAULT")
    first = json.loads((ckpt.latest(cfg["out"]) / ckpt.STATE_FILE).read_text())
    assert first["step"] == 3 and first["energy_wh"] == 10.0 and first["peak_mem_mib"] == 900.0
    monkeypatch.setattr(cost, "peak_memory_mib", lambda device: 100.0)
    res = train(cfg, resume=True)
    s = res.summary
    assert s["energy_wh"] == 20.0
    assert s["peak_mem_mib"] == 900.0
    assert s["wall_s"] >= first["wall_s"] and s["train_s"] >= first["train_s"]
    assert s["tokens_seen"] == sum(m["tokens"] for m in metrics(res.run_dir))


def test_a_moved_run_folder_resumes(make_config, tmp_path):
    """Moving a run to a bigger disk is what a full disk calls for: `out` is where the run lives,
    not part of its recipe (issue 26 case 2)."""
    import shutil

    cfg = make_config("before", train={"max_steps": 4, "save_every": 2, "eval_every": 2})
    res = train(cfg, ["train.max_steps=2"])
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(res.run_dir, moved, symlinks=True)  # cp -a
    shutil.rmtree(res.run_dir)
    res = train(cfg, [f"out={moved}"], resume=True)
    assert res.run_dir == moved and res.summary["steps"] == 4
    assert [m["step"] for m in metrics(moved)] == [1, 2, 3, 4]
    assert yaml.safe_load((moved / paths.CONFIG_FILE).read_text())["out"] == str(moved)
