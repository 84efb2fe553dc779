"""`tunelab metrics score` (text metrics over files), `metrics retrieval` (trec_eval measures), `metrics list`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

metrics_app = typer.Typer(help="Metrics: score output files, search metrics on TREC files, the metric registry.",
                          no_args_is_help=True)


def _fmt(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


@metrics_app.command("score")
def score(
    hyp: Path = typer.Option(..., "--hyp", help="Hypotheses: a text file (one a line) or a data file with --field."),
    ref: List[Path] = typer.Option(..., "--ref", help="References, one per hypothesis; repeat for more references."),
    metric: List[str] = typer.Option(["bleu", "chrf"], "--metric", "-m",
                                     help="Metric names, repeatable or comma-separated (see `tunelab metrics list`)."),
    option: List[str] = typer.Option([], "--option", "-o",
                                     help="A metric option as metric.option=value, e.g. bleu.tokenize=intl (repeatable)."),
    field: Optional[str] = typer.Option(None, "--field", help="Text field of data files (.jsonl .json .csv .parquet)."),
    ref_field: Optional[str] = typer.Option(None, "--ref-field",
                                            help="Text field of the reference files if it differs from --field; "
                                                 "a list value gives several references."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: metric -> value, CI, signature."),
):
    """Score outputs that already exist (BLEU, chrF, TER, ROUGE, exact match, ...) with signatures.

    Example: tunelab metrics score --hyp out.txt --ref ref.txt -m bleu,chrf,ter
    Example: tunelab metrics score --hyp predictions.jsonl --field output --ref test.jsonl --ref-field summary -m rougeL
    """
    import yaml

    from tunelab.cli import console
    from tunelab.errors import TunelabError
    from tunelab.evaluate.score_files import score_files

    names = [m.strip() for spec in metric for m in spec.split(",") if m.strip()]
    opts: dict[str, dict] = {n: {} for n in names}
    for item in option:
        key, sep, value = item.partition("=")
        name, dot, opt = key.partition(".")
        if not sep or not dot or not opt:
            raise TunelabError(f"--option {item!r}: write metric.option=value, e.g. bleu.tokenize=intl")
        if name not in opts:
            raise TunelabError(f"--option {item!r}: metric '{name}' is not in --metric ({', '.join(names)})")
        opts[name][opt] = yaml.safe_load(value)
    results = score_files(hyp, ref, [{n: o} if o else n for n, o in opts.items()], field, ref_field)
    if as_json:
        print(json.dumps({r.name: r.to_json() for r in results}))
        return
    for r in results:
        lo, hi = r.ci95 if r.ci95 is not None else (float("nan"), float("nan"))
        console.print(f"{r}  [dim](95% CI {lo:.4g}-{hi:.4g}, n={r.n})[/]", highlight=False, soft_wrap=True)


@metrics_app.command("retrieval")
def retrieval(
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file: 'qid 0 docid rel' per line."),
    run: Path = typer.Option(..., "--run", help="TREC run file: 'qid Q0 docid rank score tag' per line."),
    measures: Optional[List[str]] = typer.Option(
        None, "--measures", "-m",
        help="trec_eval measure names, repeatable or comma-separated; a family (P, P.5,10) or a group: "
             "official (the default: what trec_eval prints without -m) or all_trec."),
    per_query: bool = typer.Option(False, "--per-query", "-q", help="Also show each query (trec_eval -q)."),
    complete: bool = typer.Option(False, "--complete", "-c",
                                  help="Average over all qrels queries, missing ones as 0 (trec_eval -c)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object keyed by trec_eval names."),
):
    """Search metrics identical to trec_eval (computed by its own code via pytrec_eval).

    Example: tunelab metrics retrieval --qrels qrels.txt --run bm25.run --measures map,P_10,ndcg_cut_10 --json
    """
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.evaluate.retrieval import evaluate_run, read_qrels, read_run

    names = [m for spec in (measures or []) for m in _split_measures(spec)] or ["official"]
    result = evaluate_run(read_qrels(qrels), read_run(run), names, complete=complete)
    if as_json:
        out = dict(result.aggregate)
        if per_query:
            out["per_query"] = result.per_query
        print(json.dumps(out))
        return
    table = Table(title=f"{run.name} vs {qrels.name}")
    table.add_column("measure")
    if per_query:
        for qid in result.per_query:
            table.add_column(qid, justify="right")
    table.add_column("all", justify="right")
    table.add_row("num_q", *(["1"] * len(result.per_query) if per_query else []), _fmt(result.aggregate["num_q"]))
    for m in result.measures:
        # trec_eval prints no per-query gm_* (per query they are logs) and integer counts
        cells = ["-" if m.startswith("gm_") else _fmt(int(v) if m.startswith("num_") else v)
                 for v in (result.per_query[q][m] for q in result.per_query)] if per_query else []
        table.add_row(m, *cells, _fmt(result.aggregate[m]))
    console.print(table)


def _split_measures(spec: str) -> list[str]:
    """Comma-separated names, keeping trec_eval's own 'P.5,10' form together."""
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if part.isdigit() and out and "." in out[-1]:
            out[-1] += "," + part  # continues 'P.5' -> 'P.5,10'
        elif part:
            out.append(part)
    return out


@metrics_app.command("list")
def list_metrics(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """Known metric names with their options and defaults (use them in a task's `metrics:` list).

    Example: tunelab metrics list
    """
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.evaluate.metrics import known_metrics

    known = known_metrics()
    if as_json:
        print(json.dumps({n: {"options": {k: v for k, v in c.options_spec.items()},
                              "description": c.description} for n, c in known.items()}, default=str))
        return
    table = Table(title=escape("metrics  (task YAML: metrics: [name, {name: {option: value}}])"))
    table.add_column("name")
    table.add_column("options (default)")
    table.add_column("what it measures")
    for name, cls in known.items():
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.options_spec.items()) or "-"
        table.add_row(name, opts, cls.description)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")
