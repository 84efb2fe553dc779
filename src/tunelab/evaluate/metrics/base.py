"""The one base class every metric is built on (sacrebleu's shape), and its result object.

A metric is a small object with options fixed at construction. Subclasses fill hooks:

- `item_score(prediction, references, item) -> float | dict[str, float]`: one item's score.
  `prediction` is the model output text ("" for multiple choice / perplexity), `references` the
  gold texts (a list; metrics that accept several take the best match), `item` the full record
  the runner keeps for the item (multiple choice and perplexity read their inputs from it).
- `aggregate(item_scores) -> float`: the headline value; default the mean.
- `item_value(score) -> float`: the per-item number written to predictions.jsonl, which the paired
  differences of mean metrics use (default: the score itself).
- `bootstrap_statistic(item_scores)`: for non-mean metrics, a function of an index matrix
  (B, n) -> (B,) used for the CI and stderr; None means "mean of item values".

Corpus metrics (`corpus = True`: BLEU, chrF, TER, the perplexity family) are not means: their
value is a function of sufficient statistics summed over the items. They fill two hooks instead
of `aggregate` and `bootstrap_statistic`:

- `item_stats(score) -> list[float]`: one item's sufficient statistics (a fixed-length vector);
- `values_from_stats(totals)`: (B, k) summed statistics -> (B,) values.

The value is then `corpus_value(stats_matrix(scores))`, and every resample of the CI, stderr and
the paired test (tunelab.evaluate.paired) sums the statistics of the items it drew. `line_score`
rebuilds an item's score from its predictions.jsonl line, and `from_signature` the metric from
its results.json signature, so the statistics can be recomputed from the written files.

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
    # judge metrics: counts beside the value (wins, ties, unparsed...), written into its results.json entry
    extra: dict[str, Any] = field(default_factory=dict)
    item_details: list[dict] | None = field(default=None, repr=False)  # per item, written to predictions.jsonl
    cost: dict[str, dict] | None = None  # cost of computing the metric itself (a judge model's calls), by kind

    def to_json(self) -> dict[str, Any]:
        """The results.json form (docs/results.md): value, stderr, ci95 (+ signature, n; + note when not computed)."""
        out = {"value": self.value, "stderr": self.stderr,
               "ci95": list(self.ci95) if self.ci95 is not None else None,
               "signature": self.signature, "n": self.n}
        if self.note is not None:
            out["note"] = self.note
        out.update(self.extra)
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
    # True: the value is computed from the items' summed sufficient statistics, not a mean of
    # per-item values (see the module docstring)
    corpus: ClassVar[bool] = False

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options_spec))
        if unknown:
            allowed = ", ".join(sorted(self.options_spec)) or "none"
            raise TunelabError(f"metric '{self.name}': unknown option '{unknown[0]}'; allowed options: {allowed}")
        self.options: dict[str, Any] = {**self.options_spec, **options}
        self._check_options()

    def _check_options(self) -> None:
        """Subclasses validate option values here and raise TunelabError naming the option."""

    def for_task(self, task) -> None:
        """A metric that reads task-level settings takes them here (the judge metrics read the task's
        `judge:` block); the runner calls it once, before any model loads, so a bad setting fails early."""

    # ---- hooks -----------------------------------------------------------------------------
    def item_score(self, prediction: str, references: Sequence[str], item: dict) -> ItemScore:
        raise NotImplementedError

    def aggregate(self, item_scores: Sequence[ItemScore]) -> float:
        if self.corpus:
            return self.corpus_value(self.stats_matrix(item_scores))
        return float(np.mean([self.item_value(s) for s in item_scores]))

    def item_value(self, score: ItemScore) -> float:
        return float(score)  # type: ignore[arg-type]

    def bootstrap_statistic(self, item_scores: Sequence[ItemScore]) -> Callable | None:
        if self.corpus:
            return stats.corpus_statistic(self.stats_matrix(item_scores), self.values_from_stats)
        return None

    # ---- corpus metrics --------------------------------------------------------------------
    def item_stats(self, score: ItemScore) -> list[float]:
        """Corpus metrics: one item's sufficient statistics."""
        raise NotImplementedError(f"metric '{self.name}' is not a corpus metric")

    def values_from_stats(self, totals: np.ndarray) -> np.ndarray:
        """Corpus metrics: (B, k) summed statistics -> (B,) values."""
        raise NotImplementedError(f"metric '{self.name}' is not a corpus metric")

    def stats_matrix(self, item_scores: Sequence[ItemScore]) -> np.ndarray:
        """(n, k): the items' sufficient statistics, one row an item."""
        return np.array([self.item_stats(s) for s in item_scores], dtype=np.float64)

    def corpus_value(self, matrix: np.ndarray) -> float:
        """The value over the items whose statistics are the rows of `matrix` (the one way it is
        summed, so a value recomputed from the written files is the value written)."""
        return float(self.values_from_stats(np.asarray(matrix).sum(axis=0)[None, :])[0])

    def line_score(self, line: dict) -> ItemScore:
        """An item's score again from its predictions.jsonl line (its output, gold and the task
        type's own fields, e.g. loglik and n_tokens); TunelabError when the line lacks them."""
        return self.item_score(str(line.get("output") or ""), _as_list(line.get("gold")), line)

    @classmethod
    def from_signature(cls, signature: str) -> "Metric":
        """The metric with the settings its signature names (the inverse of `signature()`).

        The library version is not compared (the caller checks the numbers instead); any other
        difference between the given signature and the rebuilt metric's is a TunelabError.
        """
        name, *parts = str(signature).split("|")
        fields = dict(part.split(":", 1) for part in parts if ":" in part)
        if cls.backend is not None:
            fields.pop(cls.backend[0], None)
        try:
            metric = cls(**cls.options_from_fields(fields))
        except (TunelabError, ValueError, KeyError) as e:
            raise TunelabError(f"metric signature {signature!r}: cannot rebuild its settings ({e})") from None
        metric.name = name
        if _without_backend(metric.signature(), cls) != _without_backend(signature, cls):
            raise TunelabError(f"metric signature {signature!r}: not one tunelab writes for '{cls.name}' "
                               f"(it would write {metric.signature()!r})")
        return metric

    @classmethod
    def options_from_fields(cls, fields: dict[str, str]) -> dict[str, Any]:
        """Signature fields {key: text} -> constructor options; default: the keys are the option names."""
        return {k: _parse_field(v) for k, v in fields.items() if k in cls.options_spec}

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


def _parse_field(text: str) -> Any:
    """A signature value back to Python: yes/no, None, numbers, else the text."""
    if text in ("yes", "no"):
        return text == "yes"
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _without_backend(signature: str, cls: type[Metric]) -> str:
    if cls.backend is None:
        return signature
    return "|".join(p for p in signature.split("|") if not p.startswith(f"{cls.backend[0]}:"))


def _as_list(refs: Any) -> list[str]:
    """A reference may be one string or a list of strings; always hand metrics a list."""
    if refs is None:
        return []
    if isinstance(refs, str):
        return [refs]
    return [str(r) for r in refs]
