"""Paired comparison of two evaluation runs: `tunelab diff DIR_A DIR_B`.

    diff_results(dir_a, dir_b, metrics=None, seed=1234, n_resamples=1000) -> list[DiffRow]

Reads, in each folder (docs/results.md):
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

from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.evaluate.results import read_items, read_results
from tunelab.evaluate.stats import paired_bootstrap


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


def _higher_is_better(metric: str) -> bool | None:
    from tunelab.evaluate.metrics.registry import known_metrics

    cls = known_metrics().get(metric)
    return None if cls is None else cls.higher_is_better


def diff_results(dir_a: str | Path, dir_b: str | Path, metrics: list[str] | None = None,
                 seed: int = 1234, n_resamples: int = 1000) -> list[DiffRow]:
    """Paired bootstrap per metric on the items both runs scored (B minus A)."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    res_a, res_b = read_results(dir_a, predictions=False), read_results(dir_b, predictions=False)
    pred_a, pred_b = read_items(dir_a), read_items(dir_b)
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
                            res_a.value(name), res_b.value(name), _higher_is_better(name)))
    if not rows:
        raise TunelabError(f"no metric has numeric per-item values in both {dir_a} and {dir_b}")
    return rows
