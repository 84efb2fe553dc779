"""`tunelab eval MODEL --task T.yaml`: evaluate a model (optionally with an adapter) on a task."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def eval_command(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder or a .gguf file."),
    task: str = typer.Option(..., "--task", "-t", help="Task YAML (DESIGN 2.1) or builtin:<name> (see `tunelab data tasks`)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    shots: Optional[int] = typer.Option(None, "--shots", "-k", help="Demonstrations per item (overrides fewshot.k)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="random | first_n | stratified | similar (similar:embedding for MiniLM)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Evaluate only the first N items (N >= 1)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Items per batch, or 'auto'."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here."),
    cache: bool = typer.Option(False, "--cache", help="Reuse/store model outputs in $TUNELAB_HOME/cache.sqlite."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1, mps (default: the best available)."),
    override: Optional[list[str]] = typer.Argument(None, help="Task overrides key=value, e.g. generation.max_new_tokens=128."),
):
    """Evaluate MODEL on a task: metrics with stderr and 95% bootstrap CIs, plus a signature.

    Example: tunelab eval default --task examples/tasks/bbq.yaml --limit 200 --out runs/bbq

    Multi-process: accelerate launch --num_processes 2 -m tunelab eval default --task t.yaml --out runs/e
    """
    from tunelab.errors import TunelabError

    if limit is not None and limit < 1:
        raise TunelabError(f"--limit must be at least 1 (got {limit}); leave it out to evaluate every item")
    if batch_size != "auto" and not batch_size.isdigit():
        raise TunelabError(f"--batch-size must be a positive integer or 'auto', got '{batch_size}'")
    bs = "auto" if batch_size == "auto" else int(batch_size)
    from tunelab.evaluate.runner import evaluate, resolve_task

    task_cfg = resolve_task(task)
    if override:
        from tunelab.config import TaskConfig, build, deep_merge, parse_overrides

        base = task_cfg.base_dir
        task_cfg = build(TaskConfig, deep_merge(task_cfg.model_dump(mode="json", exclude={"base_dir"}),
                                                parse_overrides(override)), task)
        task_cfg.base_dir = base
    res = _with_progress(lambda progress: evaluate(
        model, task_cfg, adapter=str(adapter) if adapter else None, shots=shots, sampler=sampler, limit=limit,
        batch_size=bs, out=out, cache=cache, device=device, progress=progress))
    if res is not None:  # only rank 0 prints under `accelerate launch`
        print_results(res)


def _with_progress(run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if os.environ.get("TUNELAB_QUIET") == "1" or os.environ.get("RANK", "0") != "0":
        return run(None)
    from tunelab.cli import err_console

    with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        tid = bar.add_task("eval", total=None)
        return run(lambda done, total: bar.update(tid, completed=done, total=total))


def _num(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"  # word perplexity of a weak model is huge


def print_results(res) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console

    m = res.model
    title = f"{res.task}  ·  {m['name']}{' + ' + str(m['adapter']) if m.get('adapter') else ''}  ·  n={res.n}  ·  {res.shots}-shot"
    table = Table(title=escape(title))
    for col, justify in (("metric", "left"), ("value", "right"), ("± stderr", "right"), ("95% CI", "right")):
        table.add_column(col, justify=justify)
    for name, r in res.metrics.items():
        se = "-" if r.get("stderr") is None else _num(r["stderr"])
        ci = "-" if not r.get("ci95") else f"[{_num(r['ci95'][0])}, {_num(r['ci95'][1])}]"
        table.add_row(name, _num(r["value"]), se, ci)
    console.print(table)
    c = res.cost
    tps = f"{c['tokens_per_s']:.0f} tokens/s" if c.get("tokens_per_s") else ""
    split = f" ({c['prompt_tokens']} prompt + {c['generated_tokens']} generated)" if c.get("prompt_tokens") is not None else ""
    console.print(f"cost: {c['wall_s']:.1f} s  {c['tokens']} tokens{split}  {tps}  peak {c.get('peak_mem_mib')} MiB",
                  highlight=False)
    console.print(escape(res.signature), highlight=False, soft_wrap=True)
    if res.out is not None:
        console.print(f"wrote {res.out}/results.json and predictions.jsonl", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("eval", no_args_is_help=True)(eval_command)
