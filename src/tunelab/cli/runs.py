"""`tunelab runs list|show`: the run registry ($TUNELAB_HOME/runs.sqlite)."""
from __future__ import annotations

from typing import Optional

import typer

runs_app = typer.Typer(help="The run registry: every train, eval, compare and safety run.", no_args_is_help=True)


@runs_app.command("list")
def list_cmd(
    kind: Optional[str] = typer.Option(None, "--kind", help="train | eval | compare | safety"),
    task: Optional[str] = typer.Option(None, "--task", help="Only runs whose task contains this text."),
    model: Optional[str] = typer.Option(None, "--model", help="Only runs whose model contains this text."),
    n: int = typer.Option(20, "-n", help="How many runs to show (newest first)."),
):
    """List recorded runs, newest first.

    Example: tunelab runs list --kind eval --task dates -n 5
    """
    from rich.markup import escape
    from rich.table import Table

    from tunelab import runs
    from tunelab.cli import console

    found = runs.list_runs(kind=kind, task=task, model=model, limit=n)
    if not found:
        console.print(f"no runs recorded in {runs.db_path()}" + (" match these filters" if kind or task or model else ""),
                      highlight=False)
        return
    table = Table(title=f"runs ({runs.db_path()})")
    for col in ("id", "kind", "name", "task", "model", "status", "started", "metric", "value"):
        table.add_column(col, justify="right" if col in ("id", "value") else "left", overflow="fold")
    for r in found:
        table.add_row(str(r.id), r.kind, escape(r.name or "-"), escape(r.task or "-"), escape(r.model or "-"),
                      r.status, r.started.replace("T", " ").replace("+00:00", "Z"), escape(r.metric or "-"),
                      "-" if r.value is None else f"{r.value:.4g}")
    console.print(table)


@runs_app.command("show")
def show_cmd(run_id: int = typer.Argument(..., help="The run's id (from `tunelab runs list`).")):
    """Show every recorded field of one run.

    Example: tunelab runs show 3
    """
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from tunelab import runs
    from tunelab.cli import console

    run = runs.get_run(run_id)
    table = Table(title=f"run {run.id}", show_header=False)
    for key, value in asdict(run).items():
        table.add_row(key, escape("-" if value is None else str(value)))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
