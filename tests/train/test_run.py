"""End-to-end runs on the tiny model: run folder, resume bit for bit, Ctrl-C, NaN, full disk."""
from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest
import torch

from tunelab.errors import TunelabError
from tunelab.train import checkpoint as ckpt
from tunelab.train.loop import train

from .conftest import metrics, subprocess_env, write_config


def _losses(run_dir):
    return [(m["step"], m["loss"], m["grad_norm"], m["lr"]) for m in metrics(run_dir)]


def test_run_folder_contract(make_config):
    res = train(make_config("contract", train={"max_steps": 6, "eval_every": 3, "save_every": 3}))
    d = res.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "adapter/adapter_config.json",
                 "adapter/tunelab_adapter.json", "checkpoints/step-6/trainer_state.json"):
        assert (d / name).is_file(), name
    rows = metrics(d)
    assert [r["step"] for r in rows] == list(range(1, 7))
    for r in rows:
        assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "mem_mib"} <= r.keys()
    assert [r["step"] for r in rows if "eval_loss" in r] == [3, 6]
    s = json.loads((d / "summary.json").read_text())
    for key in ("wall_s", "train_s", "tokens_seen", "tokens_trained", "tokens_per_s", "flops", "mfu",
                "peak_mem_mib", "energy_wh", "best_checkpoint"):
        assert key in s, key
    assert s["tokens_trained"] < s["tokens_seen"]  # completion-only: prompts are seen, not trained
    assert s["best_checkpoint"] in ("checkpoints/step-3", "checkpoints/step-6")
    assert (d / s["best_checkpoint"]).is_dir()
    assert not (d / "report.html").exists()  # a run knows nothing of reports; `tunelab train` adds one
    from tunelab.report import build

    assert "<svg" in build(d).read_text()
    from tunelab import runs

    (row,) = runs.list_runs(kind="train")  # the run is in the registry, closed with its loss
    assert row.status == "completed" and row.name == "contract" and row.path == str(d.resolve())
    assert row.metric == "best_eval_loss" and row.value == pytest.approx(s["best_eval_loss"])
    # the adapter loads in plain PEFT
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(make_config()["model"])
    PeftModel.from_pretrained(base, d / "adapter")


def test_log_every_keeps_every_nth_step_plus_evals_and_the_last(make_config):
    res = train(make_config("sparse", train={"max_steps": 7, "eval_every": 5, "save_every": 10, "log_every": 3}))
    assert [r["step"] for r in metrics(res.run_dir)] == [3, 5, 6, 7]  # 3, 6: log_every; 5: eval; 7: last


def test_resume_after_hard_kill_is_bit_for_bit(make_config, tmp_path):
    straight = train(make_config("straight"))
    # the same run, SIGKILLed after step 12 (checkpoint at 10, steps 11-12 logged and lost)
    cfg = make_config("killed")
    path = write_config(cfg, tmp_path / "killed.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="kill@12"), timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [m["step"] for m in metrics(tmp_path / "killed")][-1] == 12
    assert ckpt.latest(tmp_path / "killed").name == "step-10"
    resumed = train(path, resume=True)
    assert _losses(resumed.run_dir) == _losses(straight.run_dir)  # exact equality, every step
    assert len(_losses(straight.run_dir)) == 20
    assert resumed.summary["tokens_seen"] == straight.summary["tokens_seen"]


def test_sigint_saves_checkpoint_and_exits_130(make_config, tmp_path):
    path = write_config(make_config("sigint"), tmp_path / "sigint.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="sigint@3"), timeout=300)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "--resume" in proc.stderr and "step 3" in proc.stderr
    assert ckpt.latest(tmp_path / "sigint").name == "step-3"
    from tunelab import runs

    assert runs.list_runs(kind="train")[0].status == "interrupted"  # recorded by the killed process
    res = train(path, ["train.max_steps=5"], resume=True)
    assert [m["step"] for m in metrics(res.run_dir)] == [1, 2, 3, 4, 5]


def test_sigterm_saves_like_ctrl_c_and_resumes_to_the_same_loss(make_config, tmp_path):
    """Issue 34 item 7: SIGTERM (SLURM, Kubernetes, spot) during step 3 finishes the step, saves it,
    exits as Ctrl-C does, with 143 (errors.SIGTERM_EXIT) and one line naming the resume command; --resume ends on the
    uninterrupted run's losses."""
    straight = train(make_config("straight", train={"max_steps": 6}))
    path = write_config(make_config("term", train={"max_steps": 6}), tmp_path / "term.yaml")
    proc = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path)], capture_output=True, text=True,
                          env=subprocess_env(TUNELAB_FAULT="sigterm@3"), timeout=300)
    assert proc.returncode == 143, proc.stderr[-2000:]
    last = [x for x in proc.stderr.splitlines() if x.strip()][-1]
    assert last == (f"interrupted by SIGTERM: at step 3; checkpoint saved to {tmp_path / 'term' / 'checkpoints' / 'step-3'}; "
                    f"resume with: tunelab train {path} --resume")
    assert ckpt.latest(tmp_path / "term").name == "step-3"
    res = train(path, resume=True)
    assert [m["loss"] for m in metrics(res.run_dir)] == [m["loss"] for m in metrics(straight.run_dir)]
    assert res.summary["final_loss"] == straight.summary["final_loss"]


def test_nan_loss_stops_with_last_good_checkpoint(make_config, monkeypatch):
    monkeypatch.setenv("TUNELAB_FAULT", "nan@7")
    cfg = make_config("nan")
    with pytest.raises(TunelabError) as e:
        train(cfg)
    msg = str(e.value)
    assert "step 7" in msg and "step-5" in msg and "nan" in msg
    from tunelab import runs

    assert runs.list_runs(kind="train")[0].status == "failed"
    assert ckpt.latest(cfg["out"]).name == "step-5"
    assert [m["step"] for m in metrics(cfg["out"])] == list(range(1, 7))
    monkeypatch.delenv("TUNELAB_FAULT")
    res = train(cfg, ["train.max_steps=8"], resume=True)  # the good checkpoint really is usable
    assert res.summary["steps"] == 8


def test_disk_full_during_save_keeps_previous_checkpoint(make_config, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *a, **k):
        # the 2nd checkpoint's optimizer file: the save dies half-way through the folder
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    cfg = make_config("full-disk", train={"eval_every": 100})
    with pytest.raises(TunelabError) as e:
        train(cfg)
    assert "the disk is full" in str(e.value) and "step-10" in str(e.value) and "earlier files there are intact" in str(e.value)
    root = ckpt.step_dirs(cfg["out"])
    assert [s for s, _ in root] == [5]
    leftovers = [p.name for p in (ckpt.latest(cfg["out"]).parent).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    res = train(cfg, ["train.max_steps=7"], resume=True)
    assert res.summary["steps"] == 7


def test_qlora_on_cpu_is_a_clear_error(make_config):
    with pytest.raises(TunelabError, match="qlora needs a CUDA GPU.*method: lora"):
        train(make_config("q", method="qlora"))


def test_budget_smaller_than_longest_row(make_config):
    with pytest.raises(TunelabError) as e:
        train(make_config("budget", train={"batch_tokens": 16}))
    assert "train.batch_tokens=16" in str(e.value) and "max_length" in str(e.value)


def test_existing_run_folder_needs_resume_or_overwrite(make_config):
    cfg = make_config("twice", train={"max_steps": 2})
    train(cfg)
    with pytest.raises(TunelabError, match="pass resume to continue it, overwrite to start over"):
        train(cfg)
    assert train(cfg, overwrite=True).summary["steps"] == 2


def test_full_finetune_writes_loadable_model(make_config):
    res = train(make_config("full", method="full", train={"max_steps": 3, "lr": 1e-4}))
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(res.weights_dir)
    assert res.weights_dir.name == "model"
    assert sum(p.numel() for p in model.parameters()) == res.summary["total_params"]


def test_early_stopping_names_best_checkpoint(make_config):
    # lr this high makes eval loss rise quickly after the first steps
    res = train(make_config("early", train={"lr": 0.5, "max_grad_norm": None, "eval_every": 1,
                                             "save_every": 100, "early_stopping": {"patience": 2}}))
    assert res.stopped == "early_stopping"
    best = res.summary["best_checkpoint"]
    assert best and (res.run_dir / best).is_dir()
    assert res.summary["steps"] < 20
