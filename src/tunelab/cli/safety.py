"""`tunelab safety ...`: toxicity scan and classifier training (probe and bias join this sub-app)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

safety_app = typer.Typer(
    name="safety",
    help="Safety screening: toxicity of texts and model outputs, the offline classifier.",
    no_args_is_help=True,
)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


@safety_app.command("scan")
def scan_cmd(
    file: Path = typer.Argument(..., help="predictions.jsonl, or any .jsonl/.json/.csv with a text field."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl: every record + toxicity + lexicon_hits."),
    field: Optional[str] = typer.Option(None, "--field", "-f", help="Text field (default: output, else text)."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help="Term list, one a line, matched as exact words."),
    threshold: Optional[float] = typer.Option(None, "--threshold", "-t", help="Toxic when score >= this "
                                              "(0..1; default: the classifier's calibrated threshold)."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="Field joining samples of one prompt "
                                           "(default: prompt_id, prompt or id when present)."),
    backend: str = typer.Option("auto", "--backend", help="auto | ensemble | minilm | ngram."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights folder from train-classifier "
                                           "(default: the weights shipped with tunelab)."),
):
    """Score each text for toxicity and summarise (HELM expected max toxicity per prompt).

    Example: tunelab safety scan runs/eval/predictions.jsonl --lexicon ../shared/data/ldnoobw/en --out scored.jsonl
    """
    from tunelab.cli import console
    from tunelab.safety.scan import scan
    from tunelab.safety.toxicity import ToxicityClassifier, default_classifier

    clf = ToxicityClassifier(backend, weights) if weights else default_classifier(backend)
    summary = scan(file, field=field, lexicon=lexicon, out=out, threshold=threshold,
                   group_by=group_by, classifier=clf)
    table = Table(title=f"toxicity of {file} (field '{summary['field']}')")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n", "threshold", "toxic_fraction", "mean_toxicity", "max_toxicity", "lexicon_fraction",
                "group_by", "n_prompts", "expected_max_toxicity", "toxicity_probability"):
        if key in summary:
            table.add_row(key, _fmt(summary[key]))
    console.print(table)
    console.print(f"{summary['signature']}  ->  {summary['out']}", highlight=False)


@safety_app.command("train-classifier")
def train_cmd(
    data: Path = typer.Option(Path("../shared/data/toxigen"), "--data",
                              help="Folder with hate_/neutral_<group>_1k.txt (ToxiGen prompts); "
                                  "Davidson and everyday text are read from its parent."),
    out: Path = typer.Option(Path("toxicity-classifier"), "--out",
                             help="Where weights + metrics.json go; use with `safety scan --weights`."),
):
    """Train the toxicity classifier (MiniLM, n-gram, ensemble) and print its evaluation protocol.

    Example: tunelab safety train-classifier --data ../shared/data/toxigen --out runs/toxclf
    """
    from tunelab.cli import console
    from tunelab.safety.train_classifier import train

    train(data, out, log=lambda s: console.print(s, highlight=False))
    console.print(f"weights and metrics.json written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(safety_app, name="safety")
