"""`tunelab eval MODEL --task T.yaml`: evaluate a model (optionally with an adapter) on a task."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunelab.cli.flags import TIMEOUT_HELP


def eval_command(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder, a .gguf file, or an OpenAI-compatible endpoint openai:URL#NAME (docs/serve.md)."),
    task: str = typer.Option(..., "--task", "-t", help="Task YAML (every key: docs/tasks.md) or builtin:<name> (see `tunelab data tasks`)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="The model a full-weights fine-tune started from: what reward_acc / reward_margin measure against (with --adapter the base is the reference already)."),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Demonstrations per item (overrides fewshot.k)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="random | first_n | stratified | similar (similar:embedding for MiniLM)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate only the first N items (N >= 1)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Items per batch (an endpoint: requests in flight), or 'auto'."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here."),
    cache: bool = typer.Option(False, "--cache", help="Reuse/store model outputs in $TUNELAB_HOME/cache.sqlite."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help=TIMEOUT_HELP),
    override: Optional[list[str]] = typer.Argument(None, help="Task overrides key=value, e.g. generation.max_new_tokens=128."),
):
    """Evaluate MODEL on a task: metrics with stderr and 95% bootstrap CIs, plus a signature.

    Example: tunelab eval default --task examples/tasks/bbq.yaml --limit 200 --out runs/bbq

    An endpoint: tunelab eval openai:http://127.0.0.1:8000/v1#my-model --task t.yaml (key: OPENAI_API_KEY)

    Multi-process: accelerate launch --num_processes 2 -m tunelab eval default --task t.yaml --out runs/e
    """
    from tunelab.cli.tables import print_results
    from tunelab.evaluate.runner import evaluate
    from tunelab.evaluate.tasks import resolve_task
    from tunelab.progress import run_with_progress
    from tunelab.safety.toxicity import toxicity_scores

    if timeout is not None:
        from tunelab.infer.waiting import set_timeout

        set_timeout(timeout)
    task_cfg = resolve_task(task, override)
    # evaluate() writes other libraries' log lines to <out>/log.txt (rank 0 only)
    res = run_with_progress("evaluating", lambda progress: evaluate(
        model, task_cfg, adapter=str(adapter) if adapter else None, reference=reference, shots=shots, sampler=sampler, limit=limit,
        batch_size=batch_size, out=out, cache=cache, device=device, toxicity=toxicity_scores, progress=progress))
    if res is not None:  # only rank 0 prints under `accelerate launch`
        print_results(res)


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(eval_command)
