"""The report's plots, drawn by matplotlib and returned as inline SVG text (no files, no network).

Each function takes plain data (dicts from compare.json, rows of metrics.jsonl) and returns one
`<svg>` element as a string, ready to paste into the page. Text stays text (`svg.fonttype: none`),
so the page's own font renders it and nothing is embedded or fetched.
"""
from __future__ import annotations

import io
import math
import re
from typing import Optional, Sequence

from tunelab.compare.plan import fine_tune_methods  # the arm methods that train
FLAT = ("zero_shot", "endpoint")  # no examples: a horizontal reference line on the example axis


def _figure(name: str, size=(7.5, 4.0), ncols: int = 1, nrows: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none",  # text as <text>, rendered by the page's font
                         "svg.hashsalt": name,  # ids unique per plot: several SVGs share one page
                         "font.size": 9})
    fig, axes = plt.subplots(nrows, ncols, figsize=size, dpi=100, squeeze=False)
    return fig, [ax for row in axes for ax in row]  # row by row


def _svg(fig, title: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    # inline in HTML: drop the XML prolog, the DOCTYPE (it names a DTD URL) and the RDF metadata
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return text.replace("<svg ", f'<svg role="img" aria-label="{title}" ', 1)


def _ci(m: Optional[dict]) -> tuple[Optional[float], Optional[float], Optional[float]]:
    if not isinstance(m, dict):
        return None, None, None
    ci = m.get("ci95") or [None, None]
    return m.get("value"), ci[0], ci[1]


def _label(arm: dict) -> str:
    method = arm.get("method") or "arm"
    if method == "few_shot" and arm.get("sampler"):
        return f"few_shot ({arm['sampler']})"
    return method


def learning_curve(arms: Sequence[dict], metric: str, models: int = 1) -> str:
    """Main metric vs number of examples (log x): one line per method; few-shot k on the same axis.

    Fine-tuned arms sit at their training-set size n, few-shot arms at their k demonstrations;
    zero-shot (and endpoint) arms use no examples, so they are horizontal lines with their CI band.
    With several base models, each line is named `method · model`.
    """
    fig, (ax,) = _figure("learning-curve")
    groups: dict[str, list[tuple[float, float, float, float]]] = {}
    flat = []
    for arm in arms:
        value, lo, hi = _ci(arm.get("metric"))
        if value is None:
            continue
        lo, hi = (value if lo is None else lo), (value if hi is None else hi)
        label = _label(arm) + (f" · {arm.get('model')}" if models > 1 else "")
        x = arm.get("n_train") if arm.get("method") in fine_tune_methods() else arm.get("k")
        if arm.get("method") in FLAT or not x:
            flat.append((label if arm.get("method") in FLAT else arm.get("id", label), value, lo, hi))
        else:
            groups.setdefault(label, []).append((float(x), value, lo, hi))
    cycle = iter(["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C8", "C9"])
    for label, pts in sorted(groups.items()):
        pts.sort()
        xs, ys, los, his = zip(*pts)
        color = next(cycle, "C7")
        ax.plot(xs, ys, "o-", color=color, label=label, lw=1.4, ms=4)
        ax.fill_between(xs, los, his, color=color, alpha=0.18, lw=0)
    for label, value, lo, hi in flat:
        color = next(cycle, "C7")
        ax.axhline(value, color=color, ls="--", lw=1.2, label=f"{label} (no examples)")
        ax.axhspan(lo, hi, color=color, alpha=0.12, lw=0)
    if groups:
        ax.set_xscale("log")
    ax.set_xlabel("examples: training-set size n (fine-tuned) or demonstrations k (few-shot), log scale")
    ax.set_ylabel(f"{metric} (95% CI band)")
    ax.grid(alpha=0.3, which="both")
    if groups or flat:
        ax.legend(fontsize=8, loc="best")
    return _svg(fig, f"learning curve: {metric} vs number of examples")


def quality_vs_cost(arms: Sequence[dict], metric: str) -> str:
    """Left: metric vs inference seconds per 1,000 queries (every arm). Right: vs training seconds (fine-tuned arms)."""
    fig, (left, right) = _figure("quality-cost", size=(9.0, 4.0), ncols=2)
    trained = False
    for i, arm in enumerate(arms):
        value, lo, hi = _ci(arm.get("metric"))
        if value is None:
            continue
        err = [[value - lo if lo is not None else 0], [hi - value if hi is not None else 0]]
        color = f"C{i % 10}"
        infer = (arm.get("infer_cost_per_1k") or {}).get("wall_s")
        if infer:
            left.errorbar([infer], [value], yerr=err, fmt="o", color=color, capsize=3, label=arm.get("id"))
            left.annotate(str(arm.get("id")), (infer, value), textcoords="offset points", xytext=(5, 4), fontsize=7)
        train = (arm.get("train_cost") or {}).get("wall_s")
        if train:
            trained = True
            right.errorbar([train], [value], yerr=err, fmt="s", color=color, capsize=3)
            right.annotate(str(arm.get("id")), (train, value), textcoords="offset points", xytext=(5, 4), fontsize=7)
    left.set_xlabel("inference wall time per 1,000 queries (s, log)")
    left.set_xscale("log")
    left.set_ylabel(f"{metric} (95% CI)")
    left.grid(alpha=0.3, which="both")
    right.set_xlabel("one-off training wall time (s, log)")
    if trained:
        right.set_xscale("log")
    else:
        right.text(0.5, 0.5, "no fine-tuned arm", ha="center", va="center", transform=right.transAxes, color="0.4")
    right.grid(alpha=0.3, which="both")
    return _svg(fig, f"quality vs cost: {metric} against inference and training time")


def gain_point(arm: dict) -> tuple:
    """The y of an arm in the gain plot with its CI: its paired difference to the zero-shot arm of its
    model as compare.json holds it (for a corpus metric, the difference of the two corpus values shown
    in the table), or its plain value when there is no zero-shot arm."""
    gain = arm.get("diff_vs_zero_shot")
    if gain:
        return gain["delta"], gain["ci95"][0], gain["ci95"][1]
    return _ci(arm.get("metric"))


def gain_vs_retention(arms: Sequence[dict], metric: str, tasks: Sequence[str], drift: bool) -> str:
    """Target-task gain (y) against retention change (x), one point per arm, 95% CIs as bars.

    One panel per retention task (x: the arm minus its base model on that task) and, with drift, one
    panel with the drift (x: KL per token from the base model). y is the arm's gain over the zero-shot
    arm of its model (paired difference), or its plain value when there is no zero-shot arm.
    """
    panels = list(tasks) + (["drift"] if drift else [])
    fig, axes = _figure("gain-retention", size=(4.2 * len(panels), 3.8), ncols=len(panels))
    for ax, panel in zip(axes, panels):
        for i, arm in enumerate(arms):
            y, ylo, yhi = gain_point(arm)
            if panel == "drift":
                d = arm.get("drift") or {}
                x, (xlo, xhi) = d.get("kl_per_token"), (d.get("ci95") or [None, None])
            else:
                e = next((e for e in arm.get("retention") or [] if e.get("task") == panel), None)
                if not e or not e.get("diff_vs_base"):
                    continue
                x, (xlo, xhi) = e["diff_vs_base"]["delta"], e["diff_vs_base"]["ci95"]
            if not (_finite(x) and _finite(y)):
                continue
            xerr = [[x - xlo if _finite(xlo) else 0], [xhi - x if _finite(xhi) else 0]]
            yerr = [[y - ylo if _finite(ylo) else 0], [yhi - y if _finite(yhi) else 0]]
            marker = "s" if arm.get("method") in fine_tune_methods() else "o"
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, color=f"C{i % 10}", capsize=3, ms=5)
            ax.annotate(str(arm.get("id")), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.axvline(0, color="0.5", lw=0.8)
        ax.set_xlabel("drift: KL per token from the base model (nats)" if panel == "drift"
                      else f"change on {panel} vs the base model")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"{metric}: gain over zero-shot (95% CI)" if any(a.get("diff_vs_zero_shot") for a in arms)
                       else f"{metric} (95% CI)")
    return _svg(fig, f"target-task gain against retention change: {metric}")


def loss_curves(runs: dict[str, Sequence[dict]]) -> str:
    """Training loss (and eval loss, dashed) per optimizer step, one colour per run."""
    fig, (ax,) = _figure("loss")
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i % 10}"
        train = [(r["step"], r["loss"]) for r in rows if _finite(r.get("loss")) and "step" in r]
        evals = [(r["step"], r["eval_loss"]) for r in rows if _finite(r.get("eval_loss")) and "step" in r]
        if train:
            ax.plot(*zip(*train), color=color, lw=1.2, label=f"{name} train" if len(runs) > 1 else "train loss")
        if evals:
            ax.plot(*zip(*evals), "o--", color=color, lw=1.2, ms=4,
                    label=f"{name} eval" if len(runs) > 1 else "eval loss")
    ax.set_xlabel("optimizer step")
    # GRPO's loss is the clipped policy-gradient objective, near 0 whether or not the run learns
    rl = [has_grpo_stats(rows) for rows in runs.values()]
    ax.set_ylabel("policy-gradient loss" if rl and all(rl) else
                  "loss (nats / supervised token)" if not any(rl) else "loss (SFT: nats / token; GRPO: policy gradient)")
    ax.grid(alpha=0.3)
    if any(ax.get_legend_handles_labels()[1]):
        ax.legend(fontsize=8)
    return _svg(fig, "training loss curves")


def reward_curves(rows: Sequence[dict]) -> str:
    """A preference run's rewards (chosen, rejected, margin) and reward accuracy per step; eval dashed."""
    fig, (left, right) = _figure("rewards", size=(9.0, 3.6), ncols=2)
    for i, key in enumerate(("rewards/chosen", "rewards/rejected", "rewards/margins")):
        for prefix, style in (("", "-"), ("eval_", "o--")):
            pts = [(r["step"], r[prefix + key]) for r in rows if _finite(r.get(prefix + key)) and "step" in r]
            if pts:
                left.plot(*zip(*pts), style, color=f"C{i}", lw=1.2, ms=4, label=prefix + key.split("/")[1])
    for prefix, style in (("", "-"), ("eval_", "o--")):
        pts = [(r["step"], r[prefix + "rewards/accuracies"]) for r in rows
               if _finite(r.get(prefix + "rewards/accuracies")) and "step" in r]
        if pts:
            right.plot(*zip(*pts), style, color="C3", lw=1.2, ms=4, label=(prefix or "train ") + "accuracy")
    left.set_ylabel("reward (β × log-ratio)")
    right.set_ylabel("reward accuracy")
    right.set_ylim(-0.02, 1.02)
    for ax in (left, right):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if any(ax.get_legend_handles_labels()[1]):
            ax.legend(fontsize=8)
    return _svg(fig, "preference rewards per step")


# ---------------------------------------------------------------- GRPO (metrics.jsonl's keys: train/files.py)
# panels drawn the same way: (title, y label, [(key, label)], y between 0 and 1)
GRPO_PANELS = (
    ("groups with equal rewards", "share of prompt groups", [("frac_reward_zero_std", "all equal")], True),
    ("KL to the reference", "KL per token (nats)", [("kl", "kl")], False),
    ("clipped ratios", "share of tokens", [("clip_ratio/low_mean", "low"), ("clip_ratio/high_mean", "high"),
                                           ("clip_ratio/region_mean", "either")], True),
    ("truncated completions", "share cut at max length", [("completions/clipped_ratio", "truncated")], True),
    ("entropy", "nats per token", [("entropy", "entropy")], False),
    ("seconds per step", "s", [("generate_s", "generation"), ("optimize_s", "training")], False),
)


def has_grpo_stats(rows: Sequence[dict]) -> bool:
    """Rows of a run that logged GRPO's reward and completion statistics."""
    return any(_finite(r.get("reward")) and "completions/mean_length" in r for r in rows)


def _points(rows: Sequence[dict], key: str) -> list[tuple]:
    return [(r["step"], r[key]) for r in rows if _finite(r.get(key)) and "step" in r]


def _line(ax, rows, key: str, *, color, label: str, ls: str = "-", band: Optional[tuple[str, str]] = None) -> None:
    """One key against the step; band (low key, high key), or (key, std key) as ±1 std, shaded."""
    pts = _points(rows, key)
    if not pts:
        return
    xs, ys = zip(*pts)
    ax.plot(xs, ys, ls, color=color, lw=1.2, label=label)
    if band is None:
        return
    lo_hi = [(r.get(band[0]), r.get(band[1])) for r in rows if _finite(r.get(key)) and "step" in r]
    if band[0] == key:  # (key, std): mean ± std
        lo_hi = [(y - (s if _finite(s) else 0), y + (s if _finite(s) else 0)) for y, (_, s) in zip(ys, lo_hi)]
    if all(_finite(lo) and _finite(hi) for lo, hi in lo_hi):
        ax.fill_between(xs, [lo for lo, _ in lo_hi], [hi for _, hi in lo_hi], color=color, alpha=0.15, lw=0)


def _reward_panel(ax, runs: dict, named: bool) -> None:
    """Total reward ± std per run; each reward's own mean ± std when it is not the total itself."""
    many = len(runs) > 1
    for i, (name, rows) in enumerate(runs.items()):
        _line(ax, rows, "reward", color=f"C{i % 10}", label=f"{name} total" if named else "total",
              band=("reward", "reward_std"))
        names = sorted({k[len("rewards/"):-len("/mean")] for r in rows for k in r
                        if k.startswith("rewards/") and k.endswith("/mean")})
        for k, rname in enumerate(names):
            key = f"rewards/{rname}/mean"
            if len(names) == 1 and all(r.get(key) == r.get("reward") for r in rows):
                continue  # one reward of weight 1: its line is the total's
            color, ls = (f"C{i % 10}", (":", "-.", "--")[k % 3]) if many else (f"C{(k + 1) % 10}", "-")
            _line(ax, rows, key, color=color, ls=ls, label=f"{name} {rname}" if named else rname,
                  band=None if many else (key, f"rewards/{rname}/std"))
    ax.set_title("reward (mean, band: ±1 std)")
    ax.set_ylabel("reward")


def _length_panel(ax, runs: dict, named: bool) -> None:
    for i, (name, rows) in enumerate(runs.items()):
        _line(ax, rows, "completions/mean_length", color=f"C{i % 10}", label=f"{name} mean" if named else "mean",
              band=("completions/min_length", "completions/max_length"))
    ax.set_title("completion length (band: min to max)")
    ax.set_ylabel("tokens")


def grpo_curves(runs: dict[str, Sequence[dict]], named: bool = False) -> str:
    """GRPO's training figures per optimizer step, one panel each: reward (total and per reward),
    the share of groups with equal rewards, KL (when logged: grpo.beta > 0), clipped ratios,
    completion length, truncated share, entropy, and generation against training seconds. Several
    runs (a compare's GRPO arms): one colour per run, one line style per series. `named`: every
    label starts with its run's name (always so with several runs)."""
    named = named or len(runs) > 1
    panels = [p for p in GRPO_PANELS if any(_points(rows, key) for rows in runs.values() for key, _ in p[2])]
    cols = 4
    rows_n = math.ceil((len(panels) + 2) / cols)
    fig, axes = _figure("grpo", size=(12.0, 2.9 * rows_n), ncols=cols, nrows=rows_n)
    _reward_panel(axes[0], runs, named)
    _length_panel(axes[1], runs, named)
    many = len(runs) > 1
    for ax, (title, ylabel, keys, unit) in zip(axes[2:], panels):
        for i, (name, rows) in enumerate(runs.items()):
            for k, (key, label) in enumerate(keys):
                _line(ax, rows, key, color=f"C{i % 10}" if many else f"C{k}", ls=("-", "--", ":")[k % 3] if many else "-",
                      label=f"{name} {label}" if named else label)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if unit:
            ax.set_ylim(-0.02, 1.02)
    for ax in axes[len(panels) + 2:]:
        ax.set_visible(False)
    for ax in axes[:len(panels) + 2]:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if len(ax.get_legend_handles_labels()[1]) > (0 if named else 1):
            ax.legend(fontsize=7)
    return _svg(fig, "GRPO training statistics per step")


def metric_bars(names: Sequence[str], values: Sequence[float], cis: Sequence[Optional[Sequence[float]]],
                title: str, ylabel: str) -> str:
    """One bar per entry with its 95% CI as an error bar (an eval's metrics, toxicity per arm)."""
    fig, (ax,) = _figure(f"bars-{title}", size=(7.5, 3.2))
    xs = list(range(len(names)))
    lows = [v - ci[0] if ci and ci[0] is not None else 0 for v, ci in zip(values, cis)]
    highs = [ci[1] - v if ci and ci[1] is not None else 0 for v, ci in zip(values, cis)]
    ax.bar(xs, values, yerr=[lows, highs], capsize=3, color="C0", alpha=0.8)
    ax.set_xticks(xs, list(names), rotation=20 if len(names) > 4 else 0, ha="right" if len(names) > 4 else "center")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return _svg(fig, title)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
