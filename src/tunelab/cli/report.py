"""`tunelab report DIR`: (re)build DIR/report.html from a train run, eval or compare folder."""
from __future__ import annotations

from pathlib import Path

import typer


def report_cmd(
    folder: Path = typer.Argument(..., help="A train run folder, an eval folder (results.json) or a compare folder."),
):
    """Build one self-contained report.html (inline plots, no network) from what FOLDER holds.

    Parts that are missing (an unfinished arm, a damaged file) are listed on the page; the rest is drawn.

    Example: tunelab report runs/quickstart
    """
    from tunelab.cli import console
    from tunelab.report import build

    path = build(folder)
    console.print(f"wrote [bold]{path}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report", no_args_is_help=True)(report_cmd)
