"""The arms of one compare as separate jobs: --plan, --arm, per-arm locks, gathering.

The workers are real `tunelab compare CONFIG --arm ID` processes started together, as a SLURM
array or `xargs -P` starts them; they share the folder as machines share it on common storage.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from tunelab.cli import main
from tunelab.compare.lock import ArmBusy, arm_lock
from tunelab.compare.run import compare
from tunelab.errors import TunelabError

ARMS = ["zero_shot", {"lora": {"n": [8]}}]


@pytest.fixture
def cfg_path(tiny_dir, tmp_path):
    cfg = {"name": "tiny", "model": str(tiny_dir), "task": "builtin:dates", "train_data": "builtin:dates?n=40",
           "limit": 4, "arms": ARMS, "out": str(tmp_path / "out"),
           "train": {"train": {"max_steps": 2, "batch_tokens": 256, "save_every": 1, "keep_checkpoints": 1},
                     "data": {"max_length": 128}}}
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def workers(path, *arms: str) -> list[tuple[int, str]]:
    """Start one `--arm` worker per entry at once; (exit code, output) of each."""
    env = {**os.environ, "TUNELAB_QUIET": "1", "TUNELAB_NO_ENERGY": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "tunelab", "compare", str(path), "--arm", a],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for a in arms]
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]


def test_plan_prints_one_command_per_arm(capsys, cfg_path):
    with pytest.raises(SystemExit) as e:
        main(["compare", str(cfg_path), "limit=3", "--plan"])
    assert e.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [shlex.split(x) for x in lines] == [["tunelab", "compare", str(cfg_path), "limit=3", "--arm", a]
                                                for a in ("zero_shot", "lora-n8")]
    assert not (cfg_path.parent / "out").exists()  # nothing ran


def test_unknown_arm_is_one_line(cfg_path):
    with pytest.raises(TunelabError, match=r"--arm lora-n9: no such arm in this compare; its arms: zero_shot, lora-n8"):
        compare(cfg_path, arm="lora-n9", say=lambda m: None)


def test_two_workers_run_different_arms_at_once_then_compare_only_gathers(cfg_path):
    out = cfg_path.parent / "out"
    results = workers(cfg_path, "zero_shot", "lora-n8")
    assert [code for code, _ in results] == [0, 0], results
    assert not (out / "compare.json").exists()  # workers gather nothing
    for arm in ("zero_shot", "lora-n8"):
        assert json.loads((out / "arms" / arm / "arm.json").read_text())["state"] == "finished"
    res = compare(cfg_path, say=lambda m: None)
    assert res.ran == [] and res.reused == ["zero_shot", "lora-n8"] and res.pending == []
    assert [a["id"] for a in json.loads((out / "compare.json").read_text())["arms"]] == ["zero_shot", "lora-n8"]


def test_two_workers_racing_for_one_arm_train_it_once(cfg_path):
    results = workers(cfg_path, "lora-n8", "lora-n8")
    trained = [out for _, out in results if "training lora on 8 examples" in out]
    assert len(trained) == 1, results
    # the other one either found the arm's lock held or (started late) found the arm finished
    other = next(out for _, out in results if "training lora" not in out)
    assert "another worker" in other or "finished earlier, kept" in other, other
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2])


def test_a_held_arm_blocks_only_itself(cfg_path):
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["arms"] = ["zero_shot", {"few_shot": {"k": [2]}}, {"lora": {"n": [8]}}]
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = cfg_path.parent / "out"
    compare(cfg_path, arm="few_shot-k2-random", say=lambda m: None)  # a first worker set the folder up
    with arm_lock(out / "arms" / "lora-n8", "lora-n8"):  # another worker busy on lora-n8
        res = compare(cfg_path, say=lambda m: None)
        assert (res.ran, res.reused, res.pending) == (["zero_shot"], ["few_shot-k2-random"], ["lora-n8"])
        assert not (out / "compare.json").exists()
        with pytest.raises(ArmBusy, match="arm lora-n8: another worker"):
            compare(cfg_path, arm="lora-n8", say=lambda m: None)
    res = compare(cfg_path, arm="lora-n8", say=lambda m: None)
    assert res.ran == ["lora-n8"] and not (out / "compare.json").exists()
    res = compare(cfg_path, say=lambda m: None)
    assert res.ran == [] and (out / "compare.json").is_file()


def test_an_arm_made_with_other_settings_starts_over_keeping_its_lock(cfg_path):
    out = cfg_path.parent / "out"
    compare(cfg_path, arm="zero_shot", say=lambda m: None)
    arm_dir = out / "arms" / "zero_shot"
    marker = json.loads((arm_dir / "arm.json").read_text())
    (arm_dir / "arm.json").write_text(json.dumps({**marker, "signature": "made-by-other-settings"}))
    (arm_dir / "stale.txt").write_text("left by the older arm")
    lock_inode = (arm_dir / ".arm.lock").stat().st_ino
    res = compare(cfg_path, arm="zero_shot", say=lambda m: None)
    assert res.ran == ["zero_shot"] and not (arm_dir / "stale.txt").exists()
    # the lock file is the one every worker opens: deleting it while held would let a second worker in
    assert (arm_dir / ".arm.lock").stat().st_ino == lock_inode
    assert json.loads((arm_dir / "arm.json").read_text())["signature"] == marker["signature"]
