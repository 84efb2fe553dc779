"""`tunelab compare compare.yaml [key=value ...] [--dry-run | --plan | --arm ID]`: many arms, one table, one report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _si(v, unit: str = "") -> str:
    """1234567 -> 1.23M: costs span many orders of magnitude."""
    if v is None:
        return "-"
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}{unit}"
    return f"{v:.3g}{unit}"


def _ci(pair) -> str:
    from tunelab.compare.sentences import fmt

    return "-" if not pair else f"[{fmt(pair[0])}, {fmt(pair[1])}]"


def print_compare(summary: dict) -> None:
    """The compare tables (quality, training cost, inference cost) and the sentences under them (Rich).

    Three tables rather than one wide one: fifteen columns do not fit an 80-column terminal.
    """
    from rich.markup import escape

    from tunelab.cli import console

    console.print(_quality_table(summary))
    train = _training_table(summary)
    if train.row_count:
        console.print(train)
    print_retention(summary)
    print_probe(summary)
    console.print(_inference_table(summary))
    for s in summary["sentences"]:
        console.print(escape(s), highlight=False, soft_wrap=True)


def _quality_table(summary: dict):
    """Per arm: the main metric with its CI, and its paired difference against the best arm."""
    from rich.markup import escape
    from rich.table import Table

    from tunelab.compare.sentences import fmt

    best = summary["best"]
    metric = summary["main_metric"] + ("" if summary["higher_is_better"] else " (lower is better)")
    quality = Table(title=escape(f"{summary['name']}: {summary['task']}, {summary['n_items']} test items"))
    for c in ("arm", metric, "95% CI", "Δ vs best", "Δ 95% CI", "p"):
        quality.add_column(escape(c), justify="left" if c == "arm" else "right", overflow="fold")
    for a in summary["arms"]:
        d = a["diff_vs_best"]
        is_best = a["id"] == best
        quality.add_row(escape(a["id"]) + (" (best)" if is_best else ""), fmt(a["metric"]["value"]),
                        _ci(a["metric"].get("ci95")), "-" if is_best else f"{d['delta']:+.3g}",
                        "-" if is_best else _ci(d["ci95"]), "-" if is_best else f"{d['p']:.3g}")
    return quality


def _training_table(summary: dict):
    """The fine-tuned arms' one-off training cost, and how their epochs and lr were set (no rows: none trained).

    Training and inference apart: one cost table with ten columns does not fit 80 columns either."""
    from rich.markup import escape
    from rich.table import Table

    train = Table(title="training (one-off cost; * = set by the automatic schedule, ^ = chosen by tune:, whose "
                        "cost counts every run of its sweep)")
    for c in ("arm", "steps", "epochs", "lr", "wall s", "tokens", "FLOPs", "peak MiB", "energy Wh"):
        train.add_column(c, justify="left" if c == "arm" else "right", overflow="fold")
    for a in summary["arms"]:
        t, how = a.get("train_cost"), a.get("training") or {}
        if t:
            auto = how.get("auto") or []
            tuned = (a.get("tune") or {}).get("chosen") or {}

            def mark(key, text):
                return text + ("^" if key in tuned else "*" if key in auto else "")

            train.add_row(escape(a["id"]), str(how.get("steps", "-")),
                          mark("epochs", f"{how['epochs']:g}") if how.get("epochs") is not None else "-",
                          mark("lr", f"{how['lr']:g}") if how.get("lr") is not None else "-",
                          _si(t.get("wall_s")), _si(t.get("tokens")), _si(t.get("flops")),
                          _si(t.get("peak_mem_mib")), _si(t.get("energy_wh")))
    return train


def _inference_table(summary: dict):
    """Per arm: the cost of 1,000 queries (and of judging them), and the outputs' toxicity when scored."""
    from rich.markup import escape
    from rich.table import Table

    safety = any(a.get("toxicity") for a in summary["arms"])
    judged = any(a.get("judge_cost_per_1k") for a in summary["arms"])  # the judge's cost, apart from the arm's own
    infer = Table(title="inference cost per 1,000 queries" + (" and output toxicity" if safety else ""))
    for c in (["arm", "wall s", "prompt tok", "generated tok"] + (["judge s", "judge tok"] if judged else [])
              + (["toxicity mean", "max"] if safety else [])):
        infer.add_column(c, justify="left" if c == "arm" else "right", overflow="fold")
    for a in summary["arms"]:
        inf, tox = a["infer_cost_per_1k"], a.get("toxicity")
        row = [escape(a["id"]), _si(inf.get("wall_s")), _si(inf.get("prompt_tokens")), _si(inf.get("generated_tokens"))]
        if judged:
            j = a.get("judge_cost_per_1k") or {}
            row += [_si(j.get("wall_s")), _si(j.get("tokens"))]
        if safety:
            row += [f"{tox['mean']:.3f}", f"{tox['max']:.3f}"] if tox else ["-", "-"]
        infer.add_row(*row)
    return infer


def _drift(arm: dict) -> str:
    d = arm.get("drift") or {}
    if d.get("kl_per_token") is None:
        return "-"
    return "0 (shared)" if d.get("shared_base") else f"{d['kl_per_token']:.3g}"


def print_retention(summary: dict) -> None:
    """Per arm and retention task: value, change against the base model (CI, p), and the drift.

    With drift but no retention task (the quickstart) only the drift column has values: it is
    shown alone, not beside five columns of '-' for every arm."""
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.compare.sentences import fmt

    if not summary.get("retention"):
        return
    arms = [a for a in summary["arms"] if a.get("retention") is not None]
    if not any(a["retention"] for a in arms):
        table = Table(title="drift: how far each arm moved from the base model on general prompts")
        table.add_column("arm", overflow="fold")
        table.add_column("drift KL/token", justify="right")
        for a in arms:
            table.add_row(escape(a["id"]), _drift(a))
        console.print(table)
        return
    table = Table(title="retention: what each arm kept of general ability (prompted arms share the base model's)")
    for c in ("arm", "task", "value", "95% CI", "Δ vs base", "Δ 95% CI", "p", "drift KL/token"):
        table.add_column(c, justify="left" if c in ("arm", "task") else "right", overflow="fold")
    for a in arms:
        for i, e in enumerate(a["retention"] or [{}]):
            diff = e.get("diff_vs_base") or {}
            same = e.get("shared_base")
            table.add_row(escape(a["id"]) if i == 0 else "", escape(f"{e.get('task', '-')} {e.get('metric', '')}"),
                          fmt(e.get("value")), _ci(e.get("ci95")),
                          "base" if same else (f"{diff['delta']:+.3g}" if diff else "-"),
                          "-" if same or not diff else _ci(diff.get("ci95")),
                          "-" if same or not diff else f"{diff['p']:.3g}", _drift(a) if i == 0 else "")
    console.print(table)


def print_probe(summary: dict) -> None:
    """The safety probe per arm (a preference task with safety: true): toxicity and refusals, and
    the refusal rate's change against the base model."""
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.compare.sentences import fmt

    probed = [a for a in summary["arms"] if a.get("probe")]
    if not probed:
        return
    table = Table(title=f"safety probe: each arm's own answers to {probed[0]['probe']['n_prompts']} test prompts "
                        "(3 samples each, chat)")
    for c in ("arm", "mean toxicity", "toxic share", "refusal rate", "95% CI", "Δ refusal", "Δ 95% CI", "p"):
        table.add_column(c, justify="left" if c == "arm" else "right", overflow="fold")
    for a in probed:
        p = a["probe"]
        d = (p.get("diff") or {}).get("refusal_rate")
        table.add_row(escape(a["id"]), fmt(p["mean_toxicity"]["value"]), fmt(p["toxic_fraction"]["value"]),
                      fmt(p["refusal_rate"]["value"]), _ci(p["refusal_rate"]["ci95"]),
                      "base" if p.get("vs") is None else (f"{d['delta']:+.3g}" if d else "-"),
                      _ci(d.get("ci95")) if d else "-", f"{d['p']:.3g}" if d else "-")
    console.print(table)


def print_plan(plan, estimates) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console

    cfg = plan.config
    console.print(escape(f"compare '{cfg.name}' -> {plan.out}/  model {cfg.model}, task {plan.task.name} ({plan.metric}), "
                         f"train pool {len(plan.pool)} records of {cfg.train_data}"
                         + (f", first {cfg.limit} test items" if cfg.limit else "")), highlight=False)
    table = Table(title="plan (dry run: nothing was trained or evaluated)",
                  caption="times: token counts / throughput measured on a 2-core CPU with the default model "
                          "(docs/compare.md); rough")
    models = {a.model for a in plan.arms}
    retention = bool(plan.retention or plan.drift)
    judged = any(e.judge is not None for e in estimates)  # the judge's share, apart from the arm's own
    cols = (["arm"] + (["model"] if len(models) > 1 else []) + ["eval prompt tok", "eval gen tok", "train tok"]
            + (["retention"] if retention else []) + ["est. time"] + (["judge calls", "judge tok", "judge time"]
                                                                     if judged else []))
    for c in cols:
        table.add_column(c, justify="left" if c in ("arm", "model") else "right", overflow="fold")
    total = 0.0
    for arm, e in zip(plan.arms, estimates):
        when = "done (kept)" if e.finished else f"~{_clock(e.seconds)}"
        total += (0 if e.finished else e.seconds) + e.retention_s
        approx = "" if e.exact_tokens else "~"
        row = [escape(arm.id)] + ([escape(arm.model)] if len(models) > 1 else [])
        row += [f"{approx}{e.prompt_tokens:,}", f"{approx}{e.generated_tokens:,}",
                f"{approx}{e.train_tokens:,}" + (f" (+{approx}{e.rollout_tokens:,} sampled)" if e.rollout_tokens else "")
                if arm.fine_tuned else "-"]
        if retention:
            row.append(f"~{_clock(e.retention_s)}" if e.retention_s else "-")
        if judged:
            total += 0 if e.judge is None or e.judge.done else e.judge.seconds
        table.add_row(*row, when, *(_judge_cells(e.judge) if judged else []))
    console.print(table)
    total += print_judge_plan(plan, estimates)
    if plan.rendering is not None and any(a.fine_tuned for a in plan.arms):
        console.print(escape(plan.rendering.note), highlight=False)
    from tunelab.compare import probe

    if probe.planned(plan):
        todo = [a for a in plan.arms if probe.missing(plan, a)]
        console.print(f"safety probe: {plan.config.probe_limit} test prompts x 3 samples for {len(todo)} arm(s), not in "
                      "the estimate (about 4 min an arm for the default model on a 2-core CPU)", highlight=False)
    console.print(f"estimated total: ~{_clock(total)}", highlight=False)


def _judge_cells(j) -> list[str]:
    """An arm's judging in the dry run: calls, tokens (generation at judge.max_new_tokens) and time."""
    if j is None or not j.calls:
        return ["-", "-", "-"]
    if j.done:
        return ["done (kept)", "-", "-"]
    return [f"{j.calls:,}", f"~{j.tokens:,}", f"≤{_clock(j.seconds)}"]


def print_judge_plan(plan, estimates) -> float:
    """The judge's lines under the dry run's table: its check set and what its estimate assumes; the
    seconds they add to the total (the check, and loading a local judge)."""
    from rich.markup import escape

    from tunelab.cli import console
    from tunelab.compare.judge_estimate import overall

    o = overall(plan)
    if o is None:
        return 0.0
    to_judge = any(e.judge is not None and e.judge.calls and not e.judge.done for e in estimates)
    added = o.load_s if to_judge or (o.check is not None and not o.check.done) else 0.0
    if o.check is not None:
        what = ("done (judge_check.json kept)" if o.check.done else
                f"{o.check.calls:,} calls (each pair in both orders), ~{o.check.tokens:,} tokens, "
                f"≤{_clock(o.check.seconds)}")
        console.print(escape(f"judge check {o.check_name}: {what}"), highlight=False)
        added += 0.0 if o.check.done else o.check.seconds
    speed = ("an endpoint: its speed is unknown, its time is taken at the local default-model rates" if o.endpoint
             else f"local: the arms' measured rates scaled to its size, plus {o.load_s:.0f} s to load it")
    console.print(escape(f"judge {o.model} ({speed}); judge tok: its prompts"
                         + ("" if o.exact_tokens else " (~4 chars a token)")
                         + f" plus {o.max_new_tokens} generated tokens a call (judge.max_new_tokens), so its tokens "
                         "and time are upper bounds; the judge's cache is not read: only finished arms' judging "
                         "counts as done"), highlight=False)
    return added


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def build_report(folder: Path) -> Optional[Path]:
    """report.html for a compare/eval/train folder; None while the report package is not installed."""
    try:
        from tunelab.report import build
    except ImportError:
        return None
    return build(folder)


def finish(summary: dict, out: Path) -> None:
    """Table, sentences, report path: the end of `tunelab compare` and `tunelab quickstart`."""
    from tunelab.cli import console

    print_compare(summary)
    report = build_report(out)
    console.print(f"compare folder: {out}/ (compare.json)" + (f"\nreport: {report}" if report else ""), highlight=False)


def compare_command(
    config: Path = typer.Argument(..., help="Compare YAML (every key: docs/compare.md)."),
    override: Optional[list[str]] = typer.Argument(None, help="Overrides key=value, e.g. limit=50 train.train.epochs=2."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the arms with token counts and a time estimate; run nothing."),
    plan_only: bool = typer.Option(False, "--plan", help="Print one command per arm (each runs that arm alone: "
                                   "a SLURM array or xargs -P; docs/scale.md); run nothing."),
    arm: Optional[str] = typer.Option(None, "--arm", help="Run this arm alone, as one worker of the compare "
                                      "(the folder on storage the workers share); gathers no table."),
):
    """Zero-shot vs few-shot vs fine-tuned arms on the same test items: one table, sentences, report.html.

    Example: tunelab compare examples/compare_dates.yaml limit=50

    An interrupted compare resumes when run again: finished arms are kept, a half-trained arm
    continues from its last checkpoint. Arms as separate jobs: --plan prints one `--arm ID`
    command per arm; run them on any machines that share the folder, then `tunelab compare
    CONFIG` gathers the table (docs/scale.md).
    """
    from tunelab.cli import console

    if dry_run:
        from tunelab.compare.estimate import estimate
        from tunelab.compare.plan import make_plan

        plan = make_plan(config, override)
        from tunelab.compare.judge_estimate import add_judge

        estimates = estimate(plan)
        add_judge(plan, estimates)  # a judge metric: the judging, apart from each arm's own tokens and time
        print_plan(plan, estimates)
        return
    if plan_only:
        import shlex

        from tunelab.compare.plan import make_plan

        plan = make_plan(config, override)
        for a in plan.arms:  # plain lines: they go to xargs, a SLURM array or a job file
            print(shlex.join(["tunelab", "compare", str(config), *(override or []), "--arm", a.id]))
        return
    from tunelab.compare.run import compare

    res = compare(config, override, arm=arm, say=lambda m: console.print(f"[bold cyan]{m}[/]", highlight=False))
    if arm is not None:
        console.print(f"arm {arm}: finished in {res.out}/arms/{arm}/; once every arm is, "
                      f"`tunelab compare {config}` gathers the table", highlight=False)
    elif res.pending:
        console.print(f"not gathered: {', '.join(res.pending)} still running elsewhere; run `tunelab compare "
                      f"{config}` again when they finish", highlight=False)
    else:
        finish(res.summary, res.out)


def register(app: typer.Typer) -> None:
    app.command("compare", no_args_is_help=True)(compare_command)
