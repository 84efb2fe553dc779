"""`tunelab diff DIR_A DIR_B`: paired bootstrap per metric between two evaluation outputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def diff(
    dir_a: Path = typer.Argument(..., help="Baseline evaluation folder (holds results.json, predictions.jsonl)."),
    dir_b: Path = typer.Argument(..., help="Candidate evaluation folder; differences are B minus A."),
    metric: Optional[List[str]] = typer.Option(None, "--metric", "-m", help="Only this metric (repeatable)."),
    seed: int = typer.Option(1234, "--seed", help="Bootstrap seed."),
    resamples: int = typer.Option(1000, "--resamples", help="Bootstrap resamples (>= 1000 recommended)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
):
    """Compare two runs item by item: difference, 95% CI and p-value per metric.

    For corpus metrics (BLEU, chrF, TER, perplexity) A and B are corpus values and every resample
    recomputes them (as sacrebleu --paired-bs); other metrics are means of per-item values.

    Example: tunelab diff runs/zero_shot runs/lora --metric exact_match
    """
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.evaluate.diff import diff_results

    rows = diff_results(dir_a, dir_b, metrics=metric or None, seed=seed, n_resamples=resamples)
    if as_json:
        console.print_json(json.dumps([r.__dict__ for r in rows]))
        return
    table = Table(title=f"B - A   (A = {dir_a}, B = {dir_b})")
    for col in ("metric", "basis", "n", "A", "B", "B - A", "95% CI", "p"):
        table.add_column(col, justify="left" if col in ("metric", "basis") else "right")
    for r in rows:
        better = ""
        if r.p_value < 0.05 and r.higher_is_better is not None:
            better = " (B better)" if (r.delta > 0) == r.higher_is_better else " (A better)"
        table.add_row(r.metric, r.basis, str(r.n), f"{r.a:.4g}", f"{r.b:.4g}", f"{r.delta:+.4g}",
                      f"[{r.ci95[0]:+.4g}, {r.ci95[1]:+.4g}]", f"{r.p_value:.3g}{better}")
    console.print(table)
    for r in rows:  # a corpus metric that could not be recomputed: say what its row shows instead
        if r.note:
            console.print(f"note: {r.metric}: {r.note}")


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
