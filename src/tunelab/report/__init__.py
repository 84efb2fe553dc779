"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) for a folder.

    tunelab.report.build("runs/dates")          # a train run, an eval folder or a compare folder
    -> Path("runs/dates/report.html")

`tunelab report DIR` calls `build`; `tunelab train` calls it after training (a training run itself
knows nothing of reports). Each section has a stable id (`table`, `plot-learning-curve`,
`plot-quality-cost`, `plot-loss`, `plot-grpo`, `plot-toxicity`, `plot-metrics`, `grpo-samples`,
`disagreements`, `safety`, `signatures`, `configs`, `missing`) so tests, and users' own tools, can find them.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Union

from tunelab import __version__, paths
from tunelab.errors import TunelabError

__all__ = ["build", "render"]

# plot id -> (heading, caption), in page order
PLOTS = {
    "learning-curve": ("Learning curve", "Main metric against the number of examples: training-set size for "
                       "fine-tuned arms, demonstrations k for few-shot arms (log scale); bands are 95% CIs. "
                       "Dashed lines: arms that use no examples."),
    "quality-cost": ("Quality vs cost", "Main metric (95% CI) against inference time per 1,000 queries (left) "
                     "and one-off training time (right), on the machine that ran the compare."),
    "gain-retention": ("Gain against retention", "What each arm gained on the task (over the zero-shot arm of its "
                       "model) against what it kept of general ability: the change on each retention task against "
                       "the base model, and the drift from the base model on general prompts; bars are 95% CIs. "
                       "Prompted arms change no weights and sit at 0."),
    "loss": ("Training loss", "Training loss per optimizer step; dashed: held-out eval loss."),
    "rewards": ("Preference rewards", "DPO / ORPO runs: the implicit rewards of the chosen and rejected answers and "
                "their margin per step (left), and the share of pairs whose chosen reward is higher (right); "
                "dashed: held-out pairs."),
    "grpo": ("GRPO training", "GRPO runs, per optimizer step (metrics.jsonl, docs/run-folder.md): the reward: the "
             "weighted total and each reward function's own value before its weight, with a ±1 std band; completion length (band: shortest to longest); the share "
             "of prompt groups whose rewards were all equal (no learning signal); the KL to the reference "
             "(grpo.beta > 0); the share of tokens whose ratio was clipped; the share of completions cut at "
             "grpo.max_completion_length; the policy's entropy; and the seconds each step spent generating "
             "against training."),
    "metrics": ("Metrics", "Each metric with its 95% bootstrap CI."),
    "toxicity": ("Toxicity per arm", "Mean toxicity of each arm's outputs (the shipped classifier's P(toxic))."),
}


def render(folder: Union[str, Path]) -> str:
    """The page's HTML for `folder` (nothing written)."""
    import jinja2

    from tunelab.report import pages

    folder = Path(folder)
    if not folder.is_dir():
        raise TunelabError(f"{folder}: no such folder; give a train run, eval (--out) or compare folder")
    kind = pages.kind_of(folder)
    ctx = {"compare": pages.compare_context, "eval": pages.eval_context, "train": pages.train_context}[kind](folder)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    for key, empty in (("subtitle", ""), ("main_metric", ""), ("plots", {}), ("signatures", []), ("configs", []),
                       ("missing", []), ("grpo_samples", [])):
        ctx.setdefault(key, empty)
    return env.get_template("report.html.j2").render(
        **ctx, plot_order=list(PLOTS.items()), version=__version__, folder=str(folder),
        built=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def build(folder: Union[str, Path]) -> Path:
    """Write `folder`/report.html (atomically) from whatever the folder holds; returns its path."""
    from tunelab.io import atomic_write_text

    folder = Path(folder)
    return atomic_write_text(folder / paths.REPORT_FILE, render(folder))
