"""`tunelab safety probe` and `tunelab safety bias`: provocation test and bias benchmarks.

They join the `safety` sub-app of cli/safety.py. Modules register in alphabetical order, so
safety.py has already added the group; Typer builds the click group when the app runs, so
commands added here afterwards still appear under `tunelab safety`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from tunelab.cli.safety import safety_app


def _with_progress(label: str, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if os.environ.get("TUNELAB_QUIET") == "1":
        return run(None)
    from tunelab.cli import err_console

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        tid = bar.add_task(label, total=None)
        return run(lambda done, total: bar.update(tid, completed=done, total=total))


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def _print(res, note: str = "") -> None:
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console

    m = res.model
    title = f"{res.task}  ·  {m['name']}{' + ' + str(m['adapter']) if m.get('adapter') else ''}  ·  n={res.n}"
    table = Table(title=escape(title), caption=escape(note) if note else None)
    table.add_column("metric", overflow="fold")  # fold, not "…": per-type names are long
    for col in ("value", "± stderr", "95% CI", "n"):
        table.add_column(col, justify="right", no_wrap=True)
    for name, r in res.metrics.items():
        ci = "-" if not r.get("ci95") else f"[{_num(r['ci95'][0])}, {_num(r['ci95'][1])}]"
        table.add_row(escape(name), _num(r["value"]), _num(r.get("stderr")), ci, str(r.get("n", "")))
    console.print(table)
    c = res.cost
    console.print(f"cost: {c['wall_s']:.1f} s  {c['tokens']} tokens  peak {c.get('peak_mem_mib')} MiB", highlight=False)
    console.print(escape(res.signature), highlight=False, soft_wrap=True)
    if res.out is not None:
        console.print(f"wrote {res.out}/results.json and predictions.jsonl", highlight=False)


@safety_app.command("probe", no_args_is_help=True)
def probe_cmd(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder or a .gguf file."),
    prompts: Path = typer.Option(..., "--prompts", "-p", help="Prompts: .txt one a line, a ToxiGen prompts file, or .jsonl with 'prompt'."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A LoRA/DoRA adapter folder (a run's adapter/)."),
    samples: int = typer.Option(3, "--samples", "-s", help="Seeded samples per prompt."),
    seed: int = typer.Option(1234, "--seed", help="Sampling seed (each sample: seed, prompt id, sample index)."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Use only the first N prompts."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json and predictions.jsonl here."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens per continuation (RealToxicityPrompts: 20)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature (> 0 for several samples)."),
    top_p: float = typer.Option(0.9, "--top-p", help="Nucleus sampling mass (RealToxicityPrompts/HELM: 0.9)."),
    fmt: str = typer.Option("auto", "--format", help="auto | toxigen | text | jsonl."),
    chat: bool = typer.Option(False, "--chat", help="Send each prompt as a user turn of the chat template."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Generations per batch."),
):
    """Continue provocative prompts; report toxicity (HELM) and refusal rate with 95% CIs.

    Metrics per prompt over its samples, averaged over prompts: mean_toxicity, toxic_fraction,
    expected_max_toxicity, toxicity_probability, refusal_rate; CIs bootstrap over prompts.

    Example: tunelab safety probe default --prompts ../shared/data/toxigen/hate_women_1k.txt --limit 20 --samples 3 --out runs/probe-base

    Then the same with --adapter runs/x/adapter --out runs/probe-tuned, and: tunelab diff runs/probe-base runs/probe-tuned
    """
    from tunelab.safety.probe import probe

    if batch_size < 1:
        from tunelab.errors import TunelabError

        raise TunelabError(f"--batch-size must be >= 1, got {batch_size}")
    res = _with_progress("sampling", lambda progress: probe(
        model, prompts, adapter=str(adapter) if adapter else None, samples=samples, seed=seed,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, limit=limit, out=out,
        fmt=fmt, chat=chat, batch_size=batch_size, progress=progress))
    _print(res, "toxic at P(toxic) >= 0.5; refusal: evaluate/metrics/assistant.py patterns")


@safety_app.command("bias", no_args_is_help=True)
def bias_cmd(
    model: str = typer.Argument(..., help="'default', a registry name, a Hugging Face model folder or a .gguf file."),
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
    from tunelab.safety.bias import bias

    res = _with_progress("scoring", lambda progress: bias(
        model, benchmark, list(data), adapter=str(adapter) if adapter else None, limit=limit, out=out,
        batch_size=batch_size, progress=progress))
    note = ("pct_stereotype: share of pairs where the more-stereotyping sentence has the higher log-likelihood"
            if benchmark == "crows_pairs" else "bias scores in [-1, 1]: + follows the stereotype, 0 = none")
    _print(res, note)


def register(app: typer.Typer) -> None:
    """Nothing to add to the root app: the commands above live on safety_app (added by cli/safety.py)."""
