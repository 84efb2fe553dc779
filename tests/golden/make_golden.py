"""Write the golden numbers and fixtures of tests/golden/ with today's code (see README.md).

    flock /tmp/heavy.lock python tests/golden/make_golden.py      # rewrites losses.json and the fixtures

The test module imports the recipes below, so the run it compares with losses.json is the run
that produced them: same tiny model (tunelab.models.tiny, seed 0), same data, same config.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
LOSSES = HERE / "losses.json"
RUN_FIXTURE = HERE / "run-lora"  # a training run folder (checkpoints left out: pickled optimizer state)
# zero-shot multiple choice without and with the adapter (a pair for diff and compare), and a generate run
EVAL_FIXTURES = {"base": HERE / "eval-base", "lora": HERE / "eval-lora", "generate": HERE / "eval-generate"}
REGISTRY_FIXTURE = HERE / "runs.sqlite"  # the run registry those three runs were recorded in
THREADS = 2  # CPU matmul results can depend on the thread count; the numbers are for 2
STEPS = 6
TASK = HERE / "task.yaml"  # multiple_choice, 8 test items: acc, acc_norm
TASK_GENERATE = HERE / "task_generate.yaml"  # the same items, generated: exact_match, chrf


def write_data() -> None:
    """32 training and 8 test additions (committed; regenerated only here): prompt/completion rows,
    the test rows with three options and the right one's index as well."""
    r = random.Random(0)
    rows = []
    for i in range(40):
        a, b = r.randint(0, 50), r.randint(0, 50)
        options = [str(a + b), str(a + b + 1), str(a + b + 3)]
        r.shuffle(options)
        rows.append({"id": f"q{i}", "prompt": f"What is {a} plus {b}?", "completion": f"{a + b}",
                     "options": options, "label": options.index(str(a + b))})
    DATA.mkdir(exist_ok=True)
    train = [{k: x[k] for k in ("id", "prompt", "completion")} for x in rows[:32]]
    for name, part in (("train.jsonl", train), ("test.jsonl", rows[32:])):
        (DATA / name).write_text("".join(json.dumps(x) + "\n" for x in part), encoding="utf-8")


def train_config(method: str, model_dir: Path, out: Path) -> dict:
    """A 6-step run on the tiny model; evaluation at steps 3 and 6."""
    return {
        "name": f"golden-{method}",
        "model": str(model_dir),
        "method": method,
        "lora": {"r": 4, "alpha": 8},
        "data": {"train": str(DATA / "train.jsonl"), "eval": 0.25, "max_length": 64},
        "train": {"max_steps": STEPS, "batch_tokens": 128, "lr": 1.0e-3, "warmup": 1, "eval_every": 3,
                  "save_every": 3, "seed": 3},
        "out": str(out),
    }


def run_losses(run_dir: Path) -> dict:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"loss": [r["loss"] for r in rows], "eval_loss": {str(r["step"]): r["eval_loss"] for r in rows if "eval_loss" in r}}


def quiet_env() -> None:
    os.environ["TUNELAB_QUIET"] = "1"
    os.environ["TUNELAB_NO_ENERGY"] = "1"  # codecarbon's hardware probing: seconds, and nothing to compare
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


def main() -> int:
    quiet_env()
    import torch

    from tunelab.evaluate.runner import evaluate
    from tunelab.models.tiny import save_tiny
    from tunelab.train.loop import train

    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["TUNELAB_HOME"] = str(tmp / "home")
        model_dir = save_tiny(tmp / "tiny-llama")
        write_data()
        losses = {}
        for method in ("lora", "full"):
            res = train(train_config(method, model_dir, tmp / method))
            losses[method] = run_losses(res.run_dir)
        losses["torch"] = torch.__version__  # for the reader of a diff; the test does not compare it
        LOSSES.write_text(json.dumps(losses, indent=1) + "\n", encoding="utf-8")

        shutil.rmtree(RUN_FIXTURE, ignore_errors=True)
        shutil.copytree(tmp / "lora", RUN_FIXTURE, ignore=shutil.ignore_patterns("checkpoints"))
        for key, task, adapter in (("base", TASK, None), ("lora", TASK, str(RUN_FIXTURE / "adapter")),
                                   ("generate", TASK_GENERATE, None)):
            shutil.rmtree(EVAL_FIXTURES[key], ignore_errors=True)
            evaluate(str(model_dir), str(task), adapter=adapter, out=EVAL_FIXTURES[key])
        # the registry as one self-contained file: fold the WAL back in and leave WAL mode
        con = sqlite3.connect(tmp / "home" / "runs.sqlite", isolation_level=None)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.execute("PRAGMA journal_mode=DELETE")
        con.close()
        shutil.copy(tmp / "home" / "runs.sqlite", REGISTRY_FIXTURE)
    print(f"wrote {LOSSES}, {RUN_FIXTURE}, {', '.join(map(str, EVAL_FIXTURES.values()))}, {REGISTRY_FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    sys.exit(main())
