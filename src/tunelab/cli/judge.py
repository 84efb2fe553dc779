"""`tunelab judge agreement`: how far a judge agrees with human labels (docs/judge.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

judge_app = typer.Typer(help="LLM judges: measure a judge's agreement with human labels.", no_args_is_help=True)

_PERCENT = {"unparsed", "Cohen's kappa"}  # shown as numbers, not percentages


def _fmt(name: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    if name == "unparsed":
        return str(int(value))
    return f"{value:.3f}" if name in _PERCENT else f"{value * 100:.2f}"


@judge_app.command("agreement")
def agreement_cmd(
    data: str = typer.Option(..., "--data", help="Human-labelled pairs: an LLMBar dataset.json, the PandaLM test set, "
                                                 "Auto-J pairwise jsonl, or builtin:llmbar-natural."),
    verdicts: Optional[Path] = typer.Option(None, "--verdicts", dir_okay=False,
                                            help="Verdicts already recorded (LLMBar result.json, a PandaLM judge file, "
                                                 "Auto-J output, or a file --out wrote)."),
    swapped: Optional[Path] = typer.Option(None, "--verdicts-swapped", dir_okay=False,
                                           help="Auto-J's verdicts on the pairs with the answers exchanged (not mapped back)."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Run this judge on the pairs: a model name or folder, "
                                                              "or openai:URL#NAME."),
    out: Optional[Path] = typer.Option(None, "--out", dir_okay=False, help="With --judge: write its verdicts here (jsonl)."),
    template: Optional[str] = typer.Option(None, "--template", help="With --judge: a pairwise judge template of your own (.j2)."),
    rubric: Optional[str] = typer.Option(None, "--rubric", help="With --judge: what the judge weighs, e.g. harmlessness."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="With --judge: requests in flight (endpoint) "
                                                                    "or prompts per batch (local)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="With --judge: most tokens of one judgment."),
    seed: int = typer.Option(1234, "--seed", help="Bootstrap seed."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object: measure -> value, 95% CI, n."),
):
    """Accuracy against the label, agreement with and without ties, Cohen's kappa, order consistency and
    the share of verdicts preferring the longer answer, each with a 95% bootstrap CI.

    Example: tunelab judge agreement --data LLMBar/Natural/dataset.json --verdicts LLMBar/Natural/evaluators/GPT-4/Vanilla_NoRules/result.json
    Example: tunelab judge agreement --data builtin:llmbar-natural --judge openai:http://127.0.0.1:8000/v1#judge
    """
    from tunelab.errors import TunelabError
    from tunelab.evaluate.judge.agreement import agreement
    from tunelab.evaluate.judge.labels import load_pairs
    from tunelab.evaluate.judge.recorded import load_verdicts

    if (verdicts is None) == (judge is None):
        raise TunelabError("give --verdicts FILE (verdicts already recorded) or --judge MODEL (run a judge), one of the two")
    if out is not None:
        from tunelab.io import check_writable

        check_writable(out, setting="out", folder=False)
    pairs = load_pairs(data)
    cost = None
    if verdicts is not None:
        recorded = load_verdicts(verdicts, pairs, swapped)
    else:
        from tunelab.evaluate.judge.check import judge_pairs
        from tunelab.evaluate.judge.run import Judge, JudgeSettings

        runner = Judge(JudgeSettings(judge, concurrency=concurrency, max_new_tokens=max_new_tokens))
        recorded = judge_pairs(judge, pairs, out=out, template=template, rubric=rubric, judge=runner)
        cost = runner.cost.to_json()
    measures = agreement(pairs, recorded, seed=seed)
    if as_json:
        print(json.dumps({**{m.name: m.to_json() for m in measures}, **({"judge_cost": cost} if cost else {})}))
        return
    _print(measures, data, recorded.source)
    if cost:
        from tunelab.cli import console

        console.print(f"judge cost: {cost['calls']} calls ({cost['cached']} more from the cache), {cost['tokens']} tokens, "
                      f"{cost['wall_s']:.1f} s", highlight=False)


def _print(measures, data: str, source: str) -> None:
    from rich.table import Table

    from tunelab.cli import console

    table = Table(title=f"judge agreement: {source} on {data}")
    for col in ("measure", "value", "95% CI", "n"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for m in measures:
        ci = "-" if m.ci95 is None else f"{_fmt(m.name, m.ci95[0])}-{_fmt(m.name, m.ci95[1])}"
        table.add_row(m.name, _fmt(m.name, m.value), ci, str(m.n))
    console.print(table)
    console.print("[dim]percentages except kappa; unparsed verdicts count as disagreeing (docs/judge.md)[/]")


def register(app: typer.Typer) -> None:
    app.add_typer(judge_app, name="judge")
