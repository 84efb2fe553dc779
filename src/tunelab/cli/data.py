"""`tunelab data inspect|tasks|filter`: how records render, the built-in tasks, dropping toxic records."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

PAIRS_FORMAT = "preference"  # --format of a file of chosen / rejected pairs (a data format)
MAX_LISTED = 20  # dropped ids shown in the terminal; the full list goes to the .dropped.jsonl file

data_app = typer.Typer(help="Look at training data: formats, rendering, trained tokens, built-in tasks.",
                       no_args_is_help=True)


def parse_fields(items: list[str]) -> dict[str, str]:
    from tunelab.errors import TunelabError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise TunelabError(f"--field '{item}' must be canonical=yours, e.g. --field prompt=question")
        out[key.strip()] = value.strip()
    return out


def print_rendered(tokenizer, examples, label: str = "record") -> None:
    """Each encoded example as text, trained tokens bold green, prompt tokens dim."""
    from tunelab.cli import console
    from tunelab.templates.inspect import segments

    for enc in examples:
        console.rule(f"{label} {enc.id}  ([bold green]trained[/] / [dim]not trained[/])")
        text = Text()
        for piece, trained in segments(tokenizer, enc):
            text.append(piece, style="bold green" if trained else "dim")
        console.print(text)


@data_app.command("inspect")
def inspect_cmd(
    file: str = typer.Argument(..., help="Data file (.jsonl .json .csv .parquet) or builtin:<task>."),
    model: str = typer.Option("default", "--model", "-m", help="Model whose tokenizer and chat template render the data."),
    format: str = typer.Option("auto", "--format", "-f", help="auto | text | prompt_completion | alpaca | messages | sharegpt | plain | preference (the README's Data formats)."),
    n: int = typer.Option(2, "-n", help="How many records to show rendered.", min=0),
    max_length: int = typer.Option(1024, "--max-length", help="Rows longer than this are counted."),
    train_on: str = typer.Option("completion", "--train-on", help="completion (assistant turns) | all"),
    field: list[str] = typer.Option([], "--field", help="Rename map entry canonical=yours, e.g. prompt=question (repeatable)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad records and count them instead of stopping."),
):
    """Show how records render with the model's chat template; trained tokens are highlighted.

    A preference file (chosen / rejected pairs) shows each pair's prompt once and its two scored answers.

    Example: tunelab data inspect ../shared/data/alpaca_small/alpaca_small.json --model default -n 2
    """
    from tunelab.cli import console
    from tunelab.models.loading import load_tokenizer, resolve
    from tunelab.templates.inspect import inspect_data, is_pair_file

    _, folder = resolve(model)
    tokenizer = load_tokenizer(folder)
    if format in ("auto", PAIRS_FORMAT) and is_pair_file(file, parse_fields(field)):
        _inspect_pairs(file, tokenizer, model, n=n, max_length=max_length, fields=parse_fields(field),
                       skip_bad=skip_bad)
        return
    rep = inspect_data(file, tokenizer, format=format, fields=parse_fields(field), n=n,
                       max_length=max_length, train_on=train_on, skip_bad=skip_bad)
    for note in rep.format_notes:
        console.print(f"[cyan]{note}[/]", highlight=False)
    print_rendered(tokenizer, rep.examples)
    stats = rep.length_stats()
    table = Table(title=f"{file} with {model}'s template")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("records", str(rep.records))
    _skipped_row(table, rep.skipped)
    table.add_row("tokens min / median / p95 / max",
                  f"{stats['min']} / {stats['median']:.0f} / {stats['p95']:.0f} / {stats['max']}")
    table.add_row("tokens total", str(rep.total))
    table.add_row("trained-token share", f"{rep.trained_share:.1%}")
    table.add_row(f"rows over max_length={rep.max_length}", str(rep.over_max))
    console.print(table)


def _skipped_row(table, skipped) -> None:
    """The records --skip-bad left out, all kinds together (the notes above give each kind's first error)."""
    if skipped.count:
        table.add_row("skipped (--skip-bad)", str(skipped.count))


def _inspect_pairs(file: str, tokenizer, model: str, **kw) -> None:
    """Preference pairs: the prompt (not scored, runs once), then each answer's scored tokens."""
    import statistics

    from tunelab.cli import console
    from tunelab.templates.inspect import inspect_pairs

    rep = inspect_pairs(file, tokenizer, **kw)
    for note in rep.notes:
        console.print(f"[cyan]{note}[/]", highlight=False)
    for enc in rep.examples:
        console.rule(f"pair {enc.id}  ([dim]prompt, not scored[/] / scored: [bold green]chosen[/], [bold red]rejected[/])")
        text = Text(tokenizer.decode(enc.prompt), style="dim")
        text.append("\n[chosen]   ", style="bold")
        text.append(tokenizer.decode(enc.chosen), style="bold green")
        text.append("\n[rejected] ", style="bold")
        text.append(tokenizer.decode(enc.rejected), style="bold red")
        console.print(text)
    table = Table(title=f"{file} with {model}'s template")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("pairs", str(rep.pairs))
    _skipped_row(table, rep.skipped)
    table.add_row("prompt tokens median / max", f"{statistics.median(rep.prompt_lengths):.0f} / {max(rep.prompt_lengths)}")
    table.add_row("tokens fed, prompt once per pair", str(rep.packed))
    table.add_row("tokens fed, prompt twice (usual DPO)", f"{rep.standard} (sharing saves {rep.saved_share:.0%})")
    table.add_row(f"pairs over max_length={rep.max_length}", str(rep.over_max))
    console.print(table)


@data_app.command("prepare")
def prepare_cmd(
    file: str = typer.Argument(..., help="Data file (.jsonl .json .csv .parquet) or builtin:<task>."),
    model: str = typer.Option("default", "--model", "-m", help="Model whose tokenizer and chat template encode the data."),
    format: str = typer.Option("auto", "--format", "-f", help="auto | text | prompt_completion | alpaca | messages | sharegpt | plain (the README's Data formats)."),
    field: list[str] = typer.Option([], "--field", help="Rename map entry canonical=yours, e.g. prompt=question (repeatable)."),
    train_on: str = typer.Option("completion", "--train-on", help="completion (assistant turns) | all"),
    max_length: int = typer.Option(1024, "--max-length", help="Longer rows are truncated (or dropped with --drop-long).", min=1),
    drop_long: bool = typer.Option(False, "--drop-long", help="Drop rows over --max-length instead of truncating (data.truncate: false)."),
    system: Optional[str] = typer.Option(None, "--system", help="System text for records without one (data.system)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip bad records and count them instead of stopping."),
):
    """Tokenise a data set into the encoded-data cache, so `tunelab train` starts without tokenising.

    Use the same settings as the training config's data section: any difference is another entry.
    Example: tunelab data prepare ../shared/data/alpaca_small/alpaca_small.json --model default
    """
    import time

    from tunelab.errors import TunelabError
    from tunelab.models.loading import resolve

    if train_on not in ("completion", "all"):
        raise TunelabError(f"--train-on must be completion or all, got '{train_on}'")
    _, folder = resolve(model)
    t0 = time.perf_counter()
    settings = dict(format=format, fields=parse_fields(field) or None, system=system, skip_bad=skip_bad,
                    train_on=train_on, max_length=max_length, truncate=not drop_long)
    enc = _cached_or_encoded(file, folder, settings)
    _print_prepared(file, enc, time.perf_counter() - t0, max_length)


def _cached_or_encoded(file: str, folder, settings: dict):
    """The cache entry of FILE with these settings: found, or encoded now (with a progress bar)."""
    from tunelab.errors import on_interrupt
    from tunelab.models.loading import load_tokenizer
    from tunelab.progress import run_with_progress
    from tunelab.templates.cache import find, prepare

    # a cached entry is found from the tokenizer's files: no tokenizer (nor transformers) to load
    enc = find(file, folder, **settings)
    if enc is None:
        tokenizer = load_tokenizer(folder)
        # the cache entry is written in a temporary folder and renamed when complete (templates/cache.py)
        with on_interrupt("the encoded-data cache is unchanged (an entry is added only when complete); "
                          "run the same command again"):
            enc = run_with_progress("encoding", lambda p: prepare(
                file, tokenizer, **settings, tokenizer_folder=folder,
                progress=p.update if p is not None else None), unit="records")
    return enc


def _print_prepared(file: str, enc, wall: float, max_length: int) -> None:
    """The entry's notes, then a table of what it holds: records kept and dropped, token lengths."""
    import numpy as np

    from tunelab.cli import console

    for note in enc.meta["notes"]:
        console.print(f"[cyan]{note}[/]", highlight=False)
    m = enc.meta
    lengths = enc.lengths[enc.status == 0]
    table = Table(title=f"{file}: {'already in the cache' if enc.hit else 'encoded'} in {wall:.1f} s")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("records", str(m["records"]))
    table.add_row("kept for training", str(m["kept"]))
    table.add_row(f"truncated to {max_length}", str(m["truncated"]))
    table.add_row(f"dropped, over {max_length}", str(m["too_long"]))
    table.add_row("dropped, nothing trained", str(m["nothing_trained"]))
    if len(lengths):
        table.add_row("tokens min / median / p95 / max",
                      f"{lengths.min()} / {np.median(lengths):.0f} / {np.percentile(lengths, 95):.0f} / {lengths.max()}")
    table.add_row("tokens total / trained", f"{m['tokens']} / {m['trained_tokens']}")
    table.add_row("cache entry", str(enc.folder))
    console.print(table)


@data_app.command("tasks")
def tasks_cmd():
    """List the built-in tasks (use as builtin:<name>?n=512&seed=1&split=train|test).

    Example: tunelab data tasks
    """
    from tunelab.cli import console
    from tunelab.data.builtin import TASKS, load_builtin_rows

    table = Table(title="built-in tasks")
    for col in ("name", "checks", "metrics", "description", "example prompt", "example answer"):
        table.add_column(col)
    for name, t in TASKS.items():
        row = load_builtin_rows(f"builtin:{name}?n=1&split=test")[0].data
        table.add_row(name, t.kind, ", ".join(t.metrics), t.description, row["prompt"][:70], row["completion"])
    console.print(table)


@data_app.command("filter")
def filter_cmd(
    file: Path = typer.Argument(..., dir_okay=False, help="Training data: .jsonl, .json (list) or .csv."),
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
    app.add_typer(data_app, name="data")
