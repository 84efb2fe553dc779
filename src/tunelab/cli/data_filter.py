"""`tunelab data filter`: drop toxic training records, added to the `data` sub-app.

The `data` sub-app lives in cli/data.py (another command group's module); this one only adds
`filter` to it. Until data.py exists the command is simply not registered.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

MAX_LISTED = 20  # dropped ids shown in the terminal; the full list goes to the .dropped.jsonl file


def filter_cmd(
    file: Path = typer.Argument(..., help="Training data: .jsonl, .json (list) or .csv."),
    max_toxicity: float = typer.Option(..., "--max-toxicity", "-t",
                                       help="Drop records scoring above this (0..1), e.g. 0.5."),
    out: Path = typer.Option(..., "--out", "-o", help="Kept records; format from the suffix (.jsonl/.json/.csv)."),
    field: Optional[str] = typer.Option(None, "--field", "-f",
                                        help="Score only this field (default: every string value)."),
):
    """Drop toxic records from a training file and list which (by id, else line number).

    Example: tunelab data filter train.jsonl --max-toxicity 0.5 --out train.clean.jsonl
    """
    from tunelab.cli import console
    from tunelab.safety.filter import filter_records

    res = filter_records(file, max_toxicity, out, field=field)
    table = Table(title=f"dropped {res.n_dropped} of {res.n_in} records (toxicity > {max_toxicity})")
    table.add_column("id")
    table.add_column("line", justify="right")
    table.add_column("toxicity", justify="right")
    for d in res.dropped[:MAX_LISTED]:
        table.add_row(str(d["id"]), str(d["line"]), f"{d['toxicity']:.3f}")
    if res.n_dropped > MAX_LISTED:
        table.add_row("...", "", f"{res.n_dropped - MAX_LISTED} more")
    console.print(table)
    console.print(f"kept {res.n_kept} -> {res.out}; dropped records -> {res.dropped_out}", highlight=False)


def register(app: typer.Typer) -> None:
    try:
        from tunelab.cli.data import data_app
    except ModuleNotFoundError as e:
        if e.name == "tunelab.cli.data":
            return  # the data command group is not there yet; nothing to attach to
        raise
    data_app.command("filter")(filter_cmd)
