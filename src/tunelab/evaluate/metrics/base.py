"""The one base class every metric is built on (sacrebleu's shape), and its result object.

A metric is a small object with options fixed at construction. Subclasses fill hooks:

- `item_score(prediction, references, item) -> float | dict[str, float]`: one item's score.
  `prediction` is the model output text ("" for multiple choice / perplexity), `references` the
  gold texts (a list; metrics that accept several take the best match), `item` the full record
  the runner keeps for the item (multiple choice and perplexity read their inputs from it).
- `aggregate(item_scores) -> float`: the headline value; default the mean.
- `item_value(score) -> float`: the per-item number written to predictions.jsonl and used by
  `tunelab diff` (default: the score itself).
- `bootstrap_statistic(item_scores)`: for non-mean metrics, a function of an index matrix
  (B, n) -> (B,) used for the CI and stderr; None means "mean of item values".

`compute(predictions, references, items)` runs all of it and returns a `MetricResult`
(value, stderr, ci95, signature, n, item_values). `str(result)` is `NAME|sig = value`.

Signatures are built from the metric's real settings, sorted by option name, plus the version of
the library that does the work, e.g. `bleu|smooth:exp|tok:13a|case:mixed|sacrebleu:2.6.0`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import stats

ItemScore = float | dict[str, float]


@dataclass
class MetricResult:
    """A metric's value over a set of items with its uncertainty and signature."""

    name: str
    value: float | None
    stderr: float | None
    ci95: tuple[float, float] | None
    signature: str
    n: int
    item_values: list[float | None] = field(default_factory=list, repr=False)
    note: str | None = None  # why the metric was not computed (value None); see Metric.not_computed

    def to_json(self) -> dict[str, Any]:
        """The results.json form (docs/results.md): value, stderr, ci95 (+ signature, n; + note when not computed)."""
        out = {"value": self.value, "stderr": self.stderr,
               "ci95": list(self.ci95) if self.ci95 is not None else None,
               "signature": self.signature, "n": self.n}
        if self.note is not None:
            out["note"] = self.note
        return out

    def __str__(self) -> str:
        return f"{self.signature} = {'-' if self.value is None else f'{self.value:.4g}'}"


class Metric:
    """Base class: options, signature, per-item scores, aggregation, bootstrap statistics."""

    name: ClassVar[str] = "metric"
    # Option name -> default. Only these options are accepted; see registry.get_metric.
    options_spec: ClassVar[dict[str, Any]] = {}
    # Short help per option, shown by `tunelab metrics list`.
    options_help: ClassVar[dict[str, str]] = {}
    # Library the metric delegates to, for the signature, e.g. ("sacrebleu", "2.6.0").
    backend: ClassVar[tuple[str, str] | None] = None
    higher_is_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    # True: the items need the reference model's scores too (the runner scores them a second time,
    # with the adapter off or on the --reference model); without one the metric is `not_computed`.
    needs_reference: ClassVar[bool] = False
    # True: it scores (prediction, references) alone, so it also scores files of outputs (score_files.py)
    text_only: ClassVar[bool] = False

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options_spec))
        if unknown:
            allowed = ", ".join(sorted(self.options_spec)) or "none"
            raise TunelabError(f"metric '{self.name}': unknown option '{unknown[0]}'; allowed options: {allowed}")
        self.options: dict[str, Any] = {**self.options_spec, **options}
        self._check_options()

    def _check_options(self) -> None:
        """Subclasses validate option values here and raise TunelabError naming the option."""

    # ---- hooks -----------------------------------------------------------------------------
    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> ItemScore:
        raise NotImplementedError

    def aggregate(self, item_scores: Sequence[ItemScore]) -> float:
        return float(np.mean([self.item_value(s) for s in item_scores]))

    def item_value(self, score: ItemScore) -> float:
        return float(score)  # type: ignore[arg-type]

    def bootstrap_statistic(self, item_scores: Sequence[ItemScore]) -> Callable | None:
        return None

    # ---- signature -------------------------------------------------------------------------
    def signature_options(self) -> dict[str, Any]:
        """The settings that change the number; default all options."""
        return dict(self.options)

    def signature(self) -> str:
        parts = [self.name]
        for key, value in self.signature_options().items():
            if isinstance(value, bool):
                value = "yes" if value else "no"
            parts.append(f"{key}:{value}")
        if self.backend is not None:
            parts.append(f"{self.backend[0]}:{self.backend[1]}")
        return "|".join(parts)

    # ---- the whole thing -------------------------------------------------------------------
    def compute(self, predictions: Sequence[str], references: Sequence[Sequence[str]] | None = None,
                items: Sequence[dict] | None = None, *, n_resamples: int = 1000,
                seed: int = 1234) -> MetricResult:
        """Score all items; value, stderr (see below), seeded bootstrap CI and the signature.

        stderr: for mean metrics the sample std / sqrt(n) (lm-eval's convention); for metrics
        with their own aggregation (BLEU, chrF, TER, perplexity) the std of the bootstrap values.
        """
        n = len(predictions)
        if n == 0:
            raise TunelabError(f"metric '{self.name}': no items to score")
        refs = references if references is not None else [[] for _ in range(n)]
        its = items if items is not None else [{} for _ in range(n)]
        if len(refs) != n or len(its) != n:
            raise TunelabError(f"metric '{self.name}': {n} predictions but {len(refs)} reference lists "
                               f"and {len(its)} items")
        scores = [self.item_score(p, _as_list(r), it) for p, r, it in zip(predictions, refs, its)]
        return self.result_from_scores(scores, n_resamples=n_resamples, seed=seed)

    def not_computed(self, n: int, reason: str) -> MetricResult:
        """The entry of a metric this run cannot compute (e.g. no reference model): no value, the reason
        in `note`, a null per-item value for each of the `n` items (paired comparisons skip them)."""
        return MetricResult(self.name, None, None, None, self.signature(), 0, [None] * n, note=reason)

    def result_from_scores(self, scores: Sequence[ItemScore], *, n_resamples: int = 1000,
                           seed: int = 1234) -> MetricResult:
        """Aggregate already-computed item scores (the runner may score items as it goes)."""
        n = len(scores)
        if n == 0:
            raise TunelabError(f"metric '{self.name}': no items to score")
        values = [self.item_value(s) for s in scores]
        statistic = self.bootstrap_statistic(scores)
        value = self.aggregate(scores)
        if statistic is None:
            se = stats.stderr(values)
            ci = stats.bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        else:
            reps = stats.bootstrap_replicates(None, n_resamples, seed, statistic, n=n)
            se = float(reps.std(ddof=1)) if n > 1 else None
            lo, hi = np.quantile(reps, [0.025, 0.975])
            ci = (float(lo), float(hi))
        return MetricResult(self.name, value, se, ci, self.signature(), n, values)


def _as_list(refs: Any) -> list[str]:
    """A reference may be one string or a list of strings; always hand metrics a list."""
    if refs is None:
        return []
    if isinstance(refs, str):
        return [refs]
    return [str(r) for r in refs]
