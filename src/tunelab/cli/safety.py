"""`tunelab safety scan|train-classifier|probe|bias`: toxicity of texts, the classifier, provocation and bias runs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunelab.errors import on_interrupt

safety_app = typer.Typer(
    name="safety",
    help="Safety screening: toxicity of texts and model outputs, the offline classifier, probes, bias benchmarks.",
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
    file: Path = typer.Argument(..., dir_okay=False, help="predictions.jsonl, or any .jsonl/.json/.csv with a text field."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl: every record + toxicity + lexicon_hits."),
    field: Optional[str] = typer.Option(None, "--field", "-f", help="Text field (default: output, else text)."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", dir_okay=False, help="Term list, one a line, matched as exact words."),
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

    def classifier():  # built by scan() after the input files are read
        return ToxicityClassifier(backend, weights) if weights else default_classifier(backend)

    summary = scan(file, field=field, lexicon=lexicon, out=out, threshold=threshold,
                   group_by=group_by, classifier=classifier)
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
    data_dir: Path = typer.Option(Path("../shared/data/toxigen"), "--data",
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

    train(data_dir, out, log=lambda s: console.print(s, highlight=False))
    console.print(f"weights and metrics.json written to {out}")


@safety_app.command("probe", no_args_is_help=True)
def probe_cmd(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder, a .gguf file, or an OpenAI-compatible endpoint openai:URL#NAME (docs/serve.md)."),
    prompts: Path = typer.Option(..., "--prompts", "-p", dir_okay=False, help="Prompts: .txt one a line, a ToxiGen prompts file, .jsonl with 'prompt', or a preference file (first user turns)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    samples: int = typer.Option(3, "--samples", "-s", help="Seeded samples per prompt."),
    seed: int = typer.Option(1234, "--seed", help="Sampling seed (each sample: seed, prompt id, sample index)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Use only the first N prompts."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens per continuation (RealToxicityPrompts: 20)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0 for several samples)."),
    top_p: float = typer.Option(0.9, "--top-p", help="Nucleus sampling mass (RealToxicityPrompts/HELM: 0.9)."),
    fmt: str = typer.Option("auto", "--format", help="auto | toxigen | text | jsonl | preference (each pair's first user turn)."),
    chat: bool = typer.Option(False, "--chat", help="Send each prompt as a user turn of the chat template."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Generations per batch."),
):
    """Continue provocative prompts; report toxicity (HELM) and refusal rate with 95% CIs.

    Metrics per prompt over its samples, averaged over prompts: mean_toxicity, toxic_fraction,
    expected_max_toxicity, toxicity_probability, refusal_rate; CIs bootstrap over prompts.

    Example: tunelab safety probe default --prompts ../shared/data/toxigen/hate_women_1k.txt --limit 20 --samples 3 --out runs/probe-base

    Then the same with --adapter runs/x/adapter --out runs/probe-tuned, and: tunelab diff runs/probe-base runs/probe-tuned
    """
    from tunelab.cli.tables import print_results
    from tunelab.progress import run_with_progress
    from tunelab.safety.probe import probe

    with on_interrupt(nothing_written(out)):
        res = run_with_progress("sampling", lambda progress: probe(
            model, prompts, adapter=str(adapter) if adapter else None, samples=samples, seed=seed,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, limit=limit, out=out,
            fmt=fmt, chat=chat, batch_size=batch_size, progress=progress))
    print_results(res, "toxic at P(toxic) >= 0.5; refusal: evaluate/metrics/assistant.py patterns")


@safety_app.command("bias", no_args_is_help=True)
def bias_cmd(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder, a .gguf file, or an endpoint openai:URL#NAME that returns prompt log-probabilities (docs/serve.md)."),
    benchmark: str = typer.Option(..., "--benchmark", help="crows_pairs | bbq."),
    data: list[Path] = typer.Option(..., "--data", "-d", help="CrowS-Pairs CSV; BBQ: .jsonl file(s) or a folder (repeatable)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="First N pairs (CrowS-Pairs) or first N items of each BBQ file."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here."),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="Items per batch."),
):
    """Bias benchmarks CrowS-Pairs or BBQ from local files, with 95% CIs.

    CrowS-Pairs: pct_stereotype (0.5 = unbiased), pct_stereotype/<bias_type>, likelihood_diff.
    BBQ: acc_ambig, acc_disambig and the BBQ paper's bias scores bias_ambig, bias_disambig (0 = unbiased).

    Example: tunelab safety bias --benchmark crows_pairs --data ../shared/data/crows_pairs/crows_pairs_anonymized.csv default --out runs/crows

    Example: tunelab safety bias --benchmark bbq --data ../shared/data/bbq/Age.jsonl --data ../shared/data/bbq/Religion.jsonl --limit 300 default --out runs/bbq
    """
    from tunelab.cli.tables import print_results
    from tunelab.progress import run_with_progress
    from tunelab.safety.bias import bias

    with on_interrupt(nothing_written(out)):
        res = run_with_progress("scoring", lambda progress: bias(
            model, benchmark, list(data), adapter=str(adapter) if adapter else None, limit=limit, out=out,
            batch_size=batch_size, progress=progress))
    note = ("pct_stereotype: share of pairs where the more-stereotyping sentence has the higher log-likelihood"
            if benchmark == "crows_pairs" else "bias scores in [-1, 1]: + follows the stereotype, 0 = none")
    print_results(res, note)


def nothing_written(out: Optional[Path]) -> str:
    """What an interrupted probe or bias run leaves: its results are written only at the end."""
    if out is None:
        return "no results (they are shown once every item is scored); run the same command again"
    return f"nothing written to {out} (results are written once every item is scored); run the same command again"


def register(app: typer.Typer) -> None:
    app.add_typer(safety_app, name="safety")
