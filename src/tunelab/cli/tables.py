"""The one results-table renderer: metrics with stderr and 95% CI, cost, signature, output folder.

`tunelab eval`, `tunelab safety probe|bias` (and any command that returns a results object with
`task, model, n, metrics, cost, signature, out`) print through `print_results`.
"""
from __future__ import annotations


def num(v) -> str:
    """4 decimals; 4 significant digits when huge (word perplexity of a weak model)."""
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def results_title(res) -> str:
    m = res.model
    parts = [res.task, f"{m['name']}{' + ' + str(m['adapter']) if m.get('adapter') else ''}", f"n={res.n}"]
    if getattr(res, "shots", None) is not None:
        parts.append(f"{res.shots}-shot")
    return "  ·  ".join(parts)


def print_results(res, note: str = "") -> None:
    """Print a results object as a table (one row per metric) plus its cost and signature."""
    from rich.markup import escape
    from rich.table import Table

    from tunelab.cli import console
    from tunelab.evaluate.task_types.base import BREAKDOWN_PREFIX

    # a metric this run could not compute (no reference model for reward_acc) says why under the table
    notes = [f"{name}: {r['note']}" for name, r in res.metrics.items() if isinstance(r, dict) and r.get("note")]
    note = "\n".join(x for x in (note, *notes) if x)
    with_n = any("n" in r for r in res.metrics.values())
    table = Table(title=escape(results_title(res)), caption=escape(note) if note else None)
    table.add_column("metric", overflow="fold")  # fold, not "…": per-type names are long
    for col in ("value", "± stderr", "95% CI") + (("n",) if with_n else ()):
        table.add_column(col, justify="right", no_wrap=True)
    for name, r in res.metrics.items():
        # a metric given per part of the items too (multi_turn's by_turn: {"1": {...}}): a row per part below it
        parts = [(f"  {name} {key[len(BREAKDOWN_PREFIX):]} {part}", p) for key, v in r.items()
                 if key.startswith(BREAKDOWN_PREFIX) and isinstance(v, dict)
                 for part, p in v.items() if isinstance(p, dict)]
        for label, e in [(name, r), *parts]:
            ci = "-" if not e.get("ci95") else f"[{num(e['ci95'][0])}, {num(e['ci95'][1])}]"
            row = [escape(label), num(e["value"]), num(e.get("stderr")), ci]
            table.add_row(*row, *((str(e.get("n", "")),) if with_n else ()))
    console.print(table)
    c = res.cost
    tps = f"  {c['tokens_per_s']:.0f} tokens/s" if c.get("tokens_per_s") else ""
    split = f" ({c['prompt_tokens']} prompt + {c['generated_tokens']} generated)" if c.get("prompt_tokens") is not None else ""
    console.print(f"cost: {c['wall_s']:.1f} s  {c['tokens']} tokens{split}{tps}  peak {c.get('peak_mem_mib')} MiB",
                  highlight=False)
    console.print(escape(res.signature), highlight=False, soft_wrap=True)
    if res.out is not None:
        console.print(f"wrote {res.out}/results.json and predictions.jsonl", highlight=False)
