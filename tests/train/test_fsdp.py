"""FSDP2 through Accelerate on CPU (gloo): two processes train like one with the same global batch.

The processes are started the way users start them: `accelerate launch --config_file` with the
shipped examples/accelerate/fsdp_cpu.yaml. On this CPU-only machine tunelab turns Accelerate's
MULTI_CPU state into FSDP (train/shard.py), so the code under test is Accelerate's FSDP2 path.
One test rehearses a two-machine launch (`--num_machines 2`, machine ranks 0 and 1, the main
process's address) as two local launchers over localhost.
"""
from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.train.loop import train

from .conftest import metrics, subprocess_env, write_config

FSDP_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "fsdp_cpu.yaml"
LOOP = {"max_steps": 4, "batch_tokens": 120, "eval_every": 2, "save_every": 100}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_args(config: Path, *extra: str, machines: int = 1, rank: int = 0, port: int) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
            "--num_machines", str(machines), "--num_processes", "2", "--machine_rank", str(rank),
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
            "-m", "tunelab", "train", str(config), *extra]


def launch(config: Path, *extra: str, **env) -> subprocess.CompletedProcess:
    """Two FSDP processes on this machine."""
    return subprocess.run(_launch_args(config, *extra, port=_port()), capture_output=True, text=True,
                          env=subprocess_env(OMP_NUM_THREADS="1", **env), timeout=300)


def assert_same_steps(ref: list[dict], got: list[dict], tol: float = 1e-5) -> None:
    assert [m["step"] for m in got] == [m["step"] for m in ref] == [1, 2, 3, 4]
    for a, b in zip(ref, got):
        for key in ("loss", "grad_norm", "eval_loss"):
            if key in a:
                assert abs(a[key] - b[key]) < tol, (key, a, b)


@pytest.fixture
def uneven_data(tmp_path) -> Path:
    """Rows whose completions are either one word or ~60 tokens: processes get very different counts."""
    r = random.Random(1)
    path = tmp_path / "uneven.jsonl"
    with open(path, "w") as f:
        for i in range(40):
            a, b = r.randint(0, 99), r.randint(0, 99)
            answer = f"{a + b}" if i % 2 else " ".join(f"{a}+{b}={a + b}" for _ in range(8))
            f.write(json.dumps({"prompt": f"What is {a} plus {b}?", "completion": answer}) + "\n")
    return path


def test_fsdp_lora_matches_one_process_with_uneven_token_counts_and_on_two_machines(make_config, tmp_path,
                                                                                   uneven_data):
    lora = {"dropout": 0.0}  # dropout masks differ per process, so turn it off here
    data = {"train": str(uneven_data)}
    one = train(make_config("one", lora=lora, data=data, train={**LOOP, "grad_accum": 2}))
    path = write_config(make_config("two", lora=lora, data=data, train=LOOP), tmp_path / "two.yaml")
    proc = launch(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = metrics(tmp_path / "two")
    assert_same_steps(metrics(one.run_dir), two)
    # the loss is normalised by the supervised tokens of all processes together: a step where one
    # process holds several times the other's count still matches the one-process run
    ratios = [max(m["supervised_per_process"]) / max(min(m["supervised_per_process"]), 1) for m in two]
    assert max(ratios) >= 3, [m["supervised_per_process"] for m in two]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["sharding"] == "fsdp2" and summary["processes"] == 2
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").is_file()

    # two machines (ranks 0 and 1, one process each) meeting at the main process's address
    path = write_config(make_config("nodes", lora=lora, data=data, train=LOOP), tmp_path / "nodes.yaml")
    port = _port()
    procs = [subprocess.Popen(_launch_args(path, machines=2, rank=r, port=port), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env(OMP_NUM_THREADS="1"))
             for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert_same_steps(metrics(one.run_dir), metrics(tmp_path / "nodes"))


def test_fsdp_full_weights_match_one_process(make_config, tmp_path):
    loop = {**LOOP, "lr": 1.0e-4, "max_grad_norm": None}  # unclipped: the norm of sharded gradients (shard.grad_norm)
    one = train(make_config("one", method="full", train={**loop, "grad_accum": 2}))
    # recomputed activations (gradient checkpointing) under FSDP give the same gradients
    path = write_config(make_config("two", method="full", train={**loop, "grad_checkpointing": True}),
                        tmp_path / "two.yaml")
    proc = launch(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_steps(metrics(one.run_dir), metrics(tmp_path / "two"))
    # the final weights were gathered from the shards into one ordinary transformers folder
    from safetensors.torch import load_file

    whole = load_file(tmp_path / "two" / "model" / "model.safetensors")
    ref = load_file(Path(one.run_dir) / "model" / "model.safetensors")
    assert whole.keys() == ref.keys()
    assert max(float((whole[k] - ref[k]).abs().max()) for k in ref) < 1e-5


def test_fsdp_interrupted_run_resumes_bit_for_bit_and_with_another_process_count(make_config, tmp_path):
    lora = {"dropout": 0.0}
    loop = {**LOOP, "save_every": 2}
    whole = write_config(make_config("whole", lora=lora, train=loop), tmp_path / "whole.yaml")
    assert launch(whole).returncode == 0
    cut = write_config(make_config("cut", lora=lora, train=loop), tmp_path / "cut.yaml")
    killed = launch(cut, TUNELAB_FAULT="kill@2")
    assert killed.returncode != 0
    assert [p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()] == ["step-2"]
    shutil.copytree(tmp_path / "cut", tmp_path / "solo")  # the same checkpoint, for one process below
    resumed = launch(cut, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref = metrics(tmp_path / "whole")
    assert [(m["step"], m["loss"], m["grad_norm"]) for m in metrics(tmp_path / "cut")] == \
        [(m["step"], m["loss"], m["grad_norm"]) for m in ref]

    # saved by 2 processes × grad_accum 1; one process continues with grad_accum 2 (same global batch)
    solo = make_config("solo", lora=lora, train=loop)
    for f in (tmp_path / "solo" / "config.yaml", tmp_path / "solo" / "checkpoints" / "step-2" / "config.yaml"):
        f.write_text(f.read_text().replace(str(tmp_path / "cut"), str(tmp_path / "solo")).replace("name: cut", "name: solo"))
    with pytest.raises(TunelabError, match=r"saved by 2 process\(es\) with 2 micro-batches.*train.grad_accum=2"):
        train(solo, resume=True)
    train(solo, ["train.grad_accum=2"], resume=True)
    assert_same_steps(ref, metrics(tmp_path / "solo"))


def test_deepspeed_and_fsdp1_on_cpu_are_refused_in_one_line(monkeypatch):
    from tunelab.train import shard

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(TunelabError, match="DEEPSPEED.*not supported.*fsdp_gpu.yaml"):
        shard.accelerator(cpu=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(TunelabError, match="fsdp_version: 1.*set fsdp_version: 2"):
        shard.accelerator(cpu=True)


@pytest.mark.parametrize("processes, micro_batches, fix", [
    (1, 2, "with 1 process(es) set train.grad_accum=4"),
    (3, 3, "resume with a process count that divides 4 (e.g. 2) and train.grad_accum=4/processes"),
])
def test_a_resume_that_changes_the_global_batch_is_refused_naming_the_fix(tmp_path, processes, micro_batches, fix):
    from tunelab.train import checkpoint as ckpt

    (tmp_path / ckpt.STATE_FILE).write_text(json.dumps({"step": 2, "processes": 2, "micro_batches": 4}))
    with pytest.raises(TunelabError) as e:
        ckpt.check_layout(tmp_path, processes=processes, micro_batches=micro_batches)
    assert str(e.value) == (f"{tmp_path}: saved by 2 process(es) with 4 micro-batches per optimizer step; this launch "
                            f"takes {micro_batches}; {fix} (same global batch, same data position)")
    ckpt.check_layout(tmp_path, processes=4, micro_batches=4)  # 4 processes × grad_accum 1: the same batch
    (tmp_path / ckpt.STATE_FILE).write_text(json.dumps({"step": 2}))  # saved before the field existed
    ckpt.check_layout(tmp_path, processes=3, micro_batches=3)
