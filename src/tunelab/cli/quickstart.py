"""`tunelab quickstart`: zero-shot vs 3-shot vs LoRA on a built-in task, as one compare."""
from __future__ import annotations

from typing import Optional

import typer


def quickstart(
    task: str = typer.Option("dates", "--task", help="Built-in task (see `tunelab data tasks`)."),
    fast: bool = typer.Option(False, "--fast", help="CI-sized: 6 test items, LoRA on 8 and 16 examples."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="Test items (default 40; 6 with --fast)."),
    out: Optional[str] = typer.Option(None, "--out", help="The compare folder (default runs/quickstart[-fast])."),
):
    """Fine-tune or few-shot? The default model on a built-in task: zero-shot, 3-shot, LoRA on 64 and 256 examples.

    Prints the table (quality with 95% CIs, paired p-values, training and inference cost, toxicity),
    the sentences that follow from it, and the report's path. About 5 minutes on a 2-core CPU;
    run again to resume or to re-print.

    Example: tunelab quickstart --task dates
    """
    from tunelab.cli import console
    from tunelab.cli.compare import finish
    from tunelab.compare.quickstart import run_quickstart

    res = run_quickstart(task=task, fast=fast, limit=limit, out=out,
                         say=lambda m: console.print(f"[bold cyan]{m}[/]", highlight=False))
    finish(res.summary, res.out)


def register(app: typer.Typer) -> None:
    app.command("quickstart")(quickstart)
