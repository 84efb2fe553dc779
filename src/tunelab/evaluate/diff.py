"""Paired comparison of two evaluation runs: `tunelab diff DIR_A DIR_B`.

    diff_results(dir_a, dir_b, metrics=None, seed=1234, n_resamples=1000) -> list[DiffRow]

Reads, in each folder (DESIGN 2.2):
- results.json: a JSON object; its "metrics" mapping supplies the headline values.
- predictions.jsonl: one JSON object per line with
      "id":      the item id (compared as a string), unique within the file
      "metrics": {metric name: number or null}  -- the per-item values the runner writes
                 (MetricResult.item_values; for BLEU/chrF/TER the sentence score, for the
                 perplexity family the document's own value)
Items are paired by id; for each metric, only items where both runs have a number count.
The paired bootstrap (tunelab.evaluate.stats.paired_bootstrap) resamples those items and
reports delta = B - A of the per-item mean, its 95% CI and a two-sided p-value. For corpus
metrics (BLEU, chrF, TER, perplexity) that is the mean of per-item values, not the corpus
score; the corpus values from results.json are shown next to it as a_reported / b_reported.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError, where
from tunelab.evaluate.stats import paired_bootstrap

RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass(frozen=True)
class DiffRow:
    metric: str
    n: int                       # items both runs scored on this metric
    a: float                     # mean of per-item values, run A (paired items)
    b: float
    delta: float                 # b - a
    ci95: tuple[float, float]
    p_value: float
    a_reported: float | None     # results.json value (may be a corpus-level score)
    b_reported: float | None
    higher_is_better: bool | None


def _read_results(folder: Path) -> dict:
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise TunelabError(f"{path}: not found; is {folder} an evaluation output (--out DIR)?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise TunelabError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise TunelabError(f"{where(path, field='metrics')}: missing or not a mapping of metric -> result")
    return data


def _read_predictions(folder: Path) -> dict[str, dict[str, float | None]]:
    path = folder / PREDICTIONS_FILE
    if not path.is_file():
        raise TunelabError(f"{path}: not found; is {folder} an evaluation output (--out DIR)?")
    from tunelab.data.readers import read_rows

    items: dict[str, dict[str, float | None]] = {}
    for r in read_rows(path, hint="each line must be one JSON object"):
        lineno, row = r.line, r.data
        if not isinstance(row, dict) or "id" not in row:
            raise TunelabError(f"{where(path, lineno, 'id')}: each line needs an 'id'")
        metrics = row.get("metrics")
        if not isinstance(metrics, dict):
            raise TunelabError(f"{where(path, lineno, 'metrics')}: each line needs a 'metrics' mapping "
                               f"{{name: value}}")
        key = str(row["id"])
        if key in items:
            raise TunelabError(f"{where(path, lineno, 'id')}: id {key!r} appears twice")
        clean: dict[str, float | None] = {}
        for name, value in metrics.items():
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                clean[name] = None  # dicts / nulls / flags are not paired-testable numbers
            else:
                clean[name] = float(value)
        items[key] = clean
    if not items:
        raise TunelabError(f"{path}: no items")
    return items


def _reported(results: dict, metric: str) -> float | None:
    entry = results["metrics"].get(metric)
    value = entry.get("value") if isinstance(entry, dict) else entry
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _higher_is_better(metric: str) -> bool | None:
    from tunelab.evaluate.metrics.registry import known_metrics

    cls = known_metrics().get(metric)
    return None if cls is None else cls.higher_is_better


def diff_results(dir_a: str | Path, dir_b: str | Path, metrics: list[str] | None = None,
                 seed: int = 1234, n_resamples: int = 1000) -> list[DiffRow]:
    """Paired bootstrap per metric on the items both runs scored (B minus A)."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    res_a, res_b = _read_results(dir_a), _read_results(dir_b)
    pred_a, pred_b = _read_predictions(dir_a), _read_predictions(dir_b)
    shared_ids = [i for i in pred_a if i in pred_b]
    if not shared_ids:
        raise TunelabError(f"{dir_a} and {dir_b} share no item ids; were they run on the same task?")
    names_a = {m for row in pred_a.values() for m in row}
    names_b = {m for row in pred_b.values() for m in row}
    available = sorted(names_a & names_b)
    if metrics:
        missing = [m for m in metrics if m not in available]
        if missing:
            raise TunelabError(f"metric '{missing[0]}' is not in both runs' predictions; "
                               f"available: {', '.join(available) or 'none'}")
        names = list(metrics)
    else:
        names = available
    rows = []
    for name in names:
        pairs = [(pred_a[i].get(name), pred_b[i].get(name)) for i in shared_ids]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        if not pairs:
            continue
        r = paired_bootstrap([a for a, _ in pairs], [b for _, b in pairs], n_resamples=n_resamples, seed=seed)
        rows.append(DiffRow(name, r.n, r.a, r.b, r.delta, r.ci95, r.p_value,
                            _reported(res_a, name), _reported(res_b, name), _higher_is_better(name)))
    if not rows:
        raise TunelabError(f"no metric has numeric per-item values in both {dir_a} and {dir_b}")
    return rows
