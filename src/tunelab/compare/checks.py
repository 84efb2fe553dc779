"""What plan.py shares with the modules it plans for: the ranking metric, a config's paths, a model's
slug, the folder's JSON reader, a sweep's settings, the paired difference of two arms' items.

Its own module, below plan.py: plan.py checks the retention tasks (with retention.py) and every
sweep's settings before any arm runs, so retention.py and tune.py take what they share with it from
here rather than import plan.py back (tests/test_imports.py fails on such a circle).
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Optional

from tunelab.errors import TunelabError
from tunelab.infer.endpoint import is_endpoint

N_RESAMPLES = 1000  # bootstrap resamples of every paired difference in a compare

# metrics that describe outputs rather than score them against the gold answer: they cannot say
# which arm solves the task better
NOT_QUALITY = {"refusal": "it counts refusals, not correct answers"}


def slug(model: str) -> str:
    """A folder-safe short name of a model string (openai:URL#NAME -> NAME, a path -> its last part)."""
    text = model.rsplit("#", 1)[-1] if is_endpoint(model) else Path(model.rstrip("/")).name or model
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:40]


def paired_items(a, b, metric: str, seed: int) -> Optional[dict]:
    """The paired bootstrap difference b − a of one metric over the items both results scored (two
    Results read with their predictions), in compare.json's form {delta, ci95, p, n} (+ basis and
    note for corpus metrics: tunelab.evaluate.paired); None when no item has both numbers."""
    from tunelab.evaluate.paired import PairedOptions, paired_metric

    d = paired_metric(a, b, metric, PairedOptions(n_resamples=N_RESAMPLES, seed=seed))
    return None if d is None else d.to_json()


def read_json(path: Path) -> dict:
    """A JSON object of the compare folder (a marker, a summary); {} when missing or unreadable, so the
    step that writes it runs again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _metric_names(task) -> list[str]:
    return [m if isinstance(m, str) else next(iter(m)) for m in task.metrics]


def check_metric(task, wanted: Optional[str], source: str) -> tuple[str, bool]:
    """The metric that ranks arms and its direction; errors when the task cannot rank arms."""
    from tunelab.evaluate.metrics import get_metrics

    if task.type == "retrieval":
        raise TunelabError(f"{source}: task '{task.name}' is a retrieval task: it scores a retriever, not a language "
                           "model, so every arm would score the same; compare needs a generate, multiple_choice or "
                           "perplexity task")
    names = _metric_names(task)
    if not names:
        raise TunelabError(f"{source}: task '{task.name}' lists no metrics; add metrics: [exact_match] to the task file")
    metric = wanted or names[0]
    if metric not in names:
        raise TunelabError(f"{source}: metric: '{metric}' is not one of task '{task.name}''s metrics "
                           f"({', '.join(names)}); pick one of them or add it to the task file")
    if metric in NOT_QUALITY:
        raise TunelabError(f"{source}: metric '{metric}' cannot rank arms ({NOT_QUALITY[metric]}); set metric: to "
                           f"a quality metric of the task ({', '.join(n for n in names if n not in NOT_QUALITY) or 'add one'})")
    by_name = {m.name: m for m in get_metrics(task.metrics)}
    return metric, bool(by_name[metric].higher_is_better)


def resolve_path(spec: str, base_dir: Path) -> str:
    if spec.startswith("builtin:") or is_endpoint(spec):
        return spec
    p = Path(spec).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def settings(spec) -> list[dict]:
    """The grid, lr-major: [{lr, epochs}, ...] with only the swept keys."""
    lrs = spec.lr or [None]
    epochs = spec.epochs or [None]
    grid = []
    for lr, ep in itertools.product(lrs, epochs):
        grid.append({k: v for k, v in (("lr", lr), ("epochs", ep)) if v is not None})
    return grid
