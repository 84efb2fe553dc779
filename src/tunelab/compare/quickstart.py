"""`tunelab quickstart`: the whole question on the built-in default, in a few minutes on a CPU.

pull the default model -> build a built-in task -> show how two examples render (trained tokens
highlighted) -> zero-shot exact match on held-out test items -> LoRA fine-tune on the train pool
-> exact match again with the adapter -> one table. Everything lands in `out/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from tunelab.io import atomic_write_json


@dataclass
class QuickstartResult:
    task: str
    n_test: int
    rows: list[dict] = field(default_factory=list)  # one per arm: name, metric, value, ci95, cost
    out: Optional[Path] = None


def quickstart_config(task: str, n_train: int, out: Path, *, epochs: float, model: str = "default") -> dict:
    """The LoRA run: small data, a high LoRA learning rate, so it learns in minutes on a CPU."""
    return {
        "name": "quickstart-lora",
        "model": model,
        "method": "lora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        "data": {"train": f"builtin:{task}?n={n_train}&seed=1", "eval": 0.05, "max_length": 256},
        "train": {"epochs": epochs, "batch_tokens": 1024, "lr": 1.0e-3, "warmup": 0.05, "schedule": "cosine",
                  "eval_every": 50, "save_every": 10_000, "keep_checkpoints": 1},
        "out": str(out / "lora"),
    }


def run_quickstart(*, task: str = "dates", model: str = "default", n_test: int = 20, n_train: int = 256,
                   epochs: float = 1.0, train: bool = True, out: str | Path = "runs/quickstart",
                   say: Callable[[str], None] = print, show: Optional[Callable[[object, object], None]] = None) -> QuickstartResult:
    from tunelab.evaluate.tasks import builtin_task
    from tunelab.evaluate.runner import evaluate
    from tunelab.models.loading import load_model, pull
    from tunelab.safety.toxicity import toxicity_scores

    out = Path(out)
    say(f"1/4 default model: {pull(model) if model == 'default' else model}")
    lm = load_model(model)
    spec = builtin_task(task, n_test=n_test)
    metric = spec.metrics[0] if isinstance(spec.metrics[0], str) else next(iter(spec.metrics[0]))

    say(f"2/4 built-in task '{task}': {n_train} training examples, {n_test} held-out test items; two rendered:")
    if show is not None:
        from tunelab.templates.inspect import inspect_data

        show(inspect_data(f"builtin:{task}?n=2&seed=1", lm.tokenizer, n=2), lm.tokenizer)

    result = QuickstartResult(task, n_test, out=out)
    say(f"3/4 zero-shot on {n_test} test items ...")
    base = evaluate(lm, spec, out=out / "zero_shot", toxicity=toxicity_scores)
    result.rows.append(_row("zero-shot", metric, base))

    if train:
        from tunelab.train.loop import train as train_run

        say(f"4/4 LoRA fine-tune on {n_train} examples ({epochs:g} epochs; a few minutes on a CPU) ...")
        run = train_run(quickstart_config(task, n_train, out, epochs=epochs, model=model), overwrite=True)
        tuned = evaluate(lm, spec, adapter=str(run.weights_dir), out=out / "lora_eval", toxicity=toxicity_scores)
        row = _row("LoRA fine-tuned", metric, tuned)
        row["train_s"] = run.summary.get("train_s")
        row["tokens_trained"] = run.summary.get("tokens_trained")
        result.rows.append(row)
    atomic_write_json(out / "quickstart.json", {"task": task, "n_test": n_test, "rows": result.rows})
    return result


def _row(name: str, metric: str, res) -> dict:
    m = res.metrics[metric]
    return {"arm": name, "metric": metric, "value": m["value"], "ci95": m.get("ci95"),
            "eval_wall_s": res.cost.get("wall_s"), "signature": res.signature}
