"""Fixtures for end-to-end training runs on the tiny model."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
import yaml

# two threads everywhere, in this process and in the subprocesses the tests start: CPU matmul
# results can depend on the thread count, and bit-for-bit comparisons need the same one
THREADS = 2
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _quiet_runs(monkeypatch):
    monkeypatch.setenv("TUNELAB_QUIET", "1")
    monkeypatch.setenv("TUNELAB_NO_ENERGY", "1")  # codecarbon's hardware probing costs seconds
    monkeypatch.delenv("TUNELAB_FAULT", raising=False)


@pytest.fixture(scope="session")
def arith_data(tmp_path_factory) -> Path:
    """64 prompt/completion rows of small additions."""
    path = tmp_path_factory.mktemp("data") / "arith.jsonl"
    r = random.Random(0)
    with open(path, "w") as f:
        for _ in range(64):
            a, b = r.randint(0, 99), r.randint(0, 99)
            f.write(json.dumps({"prompt": f"What is {a} plus {b}?", "completion": f"The answer is {a + b}."}) + "\n")
    return path


@pytest.fixture
def make_config(tmp_path, tiny_dir, arith_data):
    """A config dict for a short LoRA run on the tiny model; keyword args override sections."""

    def make(name: str = "run", **sections) -> dict:
        cfg = {
            "name": name,
            "model": str(tiny_dir),
            "method": "lora",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},  # dropout: resume must restore the RNG
            "data": {"train": str(arith_data), "eval": 0.1},
            "train": {"max_steps": 20, "batch_tokens": 160, "lr": 1.0e-3, "eval_every": 5,
                      "save_every": 5, "keep_checkpoints": 2, "seed": 3, "warmup": 2},
            "out": str(tmp_path / name),
        }
        for key, value in sections.items():
            if isinstance(value, dict):
                cfg[key] = {**cfg.get(key, {}), **value}
            else:
                cfg[key] = value
        return cfg

    return make


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
                "TUNELAB_QUIET": "1", "TUNELAB_NO_ENERGY": "1", "PYTHONHASHSEED": "0"})
    env.update(extra)
    return env
