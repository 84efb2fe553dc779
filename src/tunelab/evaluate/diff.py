"""Paired comparison of two evaluation runs: `tunelab diff DIR_A DIR_B`.

    diff_results(dir_a, dir_b, metrics=None, seed=1234, n_resamples=1000) -> list[DiffRow]

Reads, in each folder (docs/results.md):
- results.json: a JSON object; its "metrics" mapping supplies the headline values and each
  metric's signature (its settings).
- predictions.jsonl: one JSON object per line with
      "id":      the item id (compared as a string), unique within the file
      "metrics": {metric name: number or null}  -- the per-item values the runner writes
  and, for corpus metrics, what their statistics are recomputed from (output and gold for
  BLEU / chrF / TER; loglik and n_tokens / n_words / n_bytes for the perplexity family).
Items are paired by id; for each metric, only items where both runs have a number count.
tunelab.evaluate.paired does the rest: for mean metrics the paired bootstrap of the per-item
values; for corpus metrics the corpus value recomputed on every resample (as `sacrebleu
--paired-bs` does), so that delta is the difference of the two corpus values. `a` and `b` are
the values over the paired items (the results.json values when every item is paired).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.paired import PairedOptions, paired_metric
from tunelab.evaluate.results import read_results


@dataclass(frozen=True)
class DiffRow:
    metric: str
    n: int                       # items both runs scored on this metric
    a: float                     # run A's value over the paired items (its corpus value, or the mean)
    b: float
    delta: float                 # b - a
    ci95: tuple[float, float]
    p_value: float
    a_reported: float | None     # results.json value (over all of A's items)
    b_reported: float | None
    higher_is_better: bool | None
    basis: str = "mean"          # "mean" | "corpus" | "item mean" (see tunelab.evaluate.paired)
    note: Optional[str] = None   # why a corpus metric fell back to the mean of its per-item values


def _higher_is_better(metric: str) -> bool | None:
    from tunelab.evaluate.metrics.registry import known_metrics

    cls = known_metrics().get(metric)
    return None if cls is None else cls.higher_is_better


def _names(pred_a: dict, pred_b: dict, metrics: list[str] | None) -> list[str]:
    available = sorted({m for row in pred_a.values() for m in row} & {m for row in pred_b.values() for m in row})
    if not metrics:
        return available
    missing = [m for m in metrics if m not in available]
    if missing:
        raise TunelabError(f"metric '{missing[0]}' is not in both runs' predictions; "
                           f"available: {', '.join(available) or 'none'}")
    return list(metrics)


def diff_results(dir_a: str | Path, dir_b: str | Path, metrics: list[str] | None = None,
                 seed: int = 1234, n_resamples: int = 1000) -> list[DiffRow]:
    """Paired bootstrap per metric on the items both runs scored (B minus A)."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    res_a, res_b = read_results(dir_a), read_results(dir_b)
    pred_a, pred_b = res_a.items, res_b.items
    for folder, pred in ((dir_a, pred_a), (dir_b, pred_b)):
        if not pred:
            raise TunelabError(f"{folder / 'predictions.jsonl'}: no items")
    if not any(i in pred_b for i in pred_a):
        raise TunelabError(f"{dir_a} and {dir_b} share no item ids; were they run on the same task?")
    options = PairedOptions(n_resamples=n_resamples, seed=seed)
    rows = []
    for name in _names(pred_a, pred_b, metrics):
        d = paired_metric(res_a, res_b, name, options)
        if d is not None:
            rows.append(DiffRow(name, d.n, d.a, d.b, d.delta, d.ci95, d.p_value, res_a.value(name),
                                res_b.value(name), _higher_is_better(name), d.basis, d.note))
    if not rows:
        raise TunelabError(f"no metric has numeric per-item values in both {dir_a} and {dir_b}")
    return rows
