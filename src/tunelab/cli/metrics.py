"""`tunelab metrics retrieval` (trec_eval measures for a run) and `tunelab metrics list`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

metrics_app = typer.Typer(help="Metrics: search metrics on TREC files, and the metric registry.",
                          no_args_is_help=True)


@metrics_app.command("retrieval")
def retrieval(
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file: 'qid 0 docid rel' per line."),
    run: Path = typer.Option(..., "--run", help="TREC run file: 'qid Q0 docid rank score tag' per line."),
    measures: Optional[List[str]] = typer.Option(
        None, "--measures", "-m",
        help="trec_eval measure names, repeatable or comma-separated (default: map Rprec recip_rank "
             "P_5 P_10 recall_100 ndcg ndcg_cut_10 bpref success_10)."),
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
    from tunelab.evaluate.retrieval import DEFAULT_MEASURES, evaluate_run, read_qrels, read_run

    names = [m for spec in (measures or []) for m in spec.split(",") if m.strip()] or list(DEFAULT_MEASURES)
    result = evaluate_run(read_qrels(qrels), read_run(run), names, complete=complete)
    if as_json:
        out = dict(result.aggregate)
        if per_query:
            out["per_query"] = result.per_query
        print(json.dumps(out))
        return
    table = Table(title=f"{run.name} vs {qrels.name}  ({result.aggregate['num_q']} queries)")
    table.add_column("measure")
    if per_query:
        for qid in result.per_query:
            table.add_column(qid, justify="right")
    table.add_column("all", justify="right")
    for m in result.measures:
        cells = [f"{result.per_query[q][m]:.4f}" for q in result.per_query] if per_query else []
        table.add_row(m, *cells, f"{result.aggregate[m]:.4f}")
    console.print(table)


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
