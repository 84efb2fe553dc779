"""The paired difference of two evaluations on one metric: what `tunelab diff` and compare show.

    d = paired_metric(res_a, res_b, "bleu", PairedOptions(seed=1234))   # Results with predictions
    d.delta == d.b - d.a; d.ci95, d.p_value; d.basis: "mean" | "corpus" | "item mean"

Items are paired by id; only items where both runs have a per-item number for the metric count.

- Mean metrics (exact_match, acc, ...): the paired bootstrap of the per-item values
  (stats.paired_bootstrap, p_rule "centred").
- Corpus metrics (Metric.corpus: BLEU, chrF, TER, the perplexity family): each item's sufficient
  statistics are recomputed from its predictions.jsonl line (output and gold; loglik and n_*),
  with the metric rebuilt from its results.json signature, and every resample sums the
  statistics of the items it drew and scores the sum, for both runs on the same items
  (stats.paired_corpus; the p-value as `sacrebleu --paired-bs` computes it). So delta is the
  difference of two corpus values, and its CI the CI of that difference. Before that, the
  statistics of all of a run's items must give the value its results.json holds: a file edited
  by hand, or a sacrebleu release that tokenizes differently, is caught there.
- When a corpus metric's statistics cannot be recomputed (that check fails, a line lacks its
  output, a signature tunelab does not write), the difference is of the mean per-item values,
  with basis "item mean" and a `note` saying why: never silently another number.

When the paired items are all the items of both runs, `a` and `b` are the values results.json
holds, so delta is exactly the difference of the values a table shows next to it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from tunelab.errors import TunelabError
from tunelab.evaluate.results import Results
from tunelab.evaluate.stats import PairedOptions, PairedResult, paired_bootstrap, paired_corpus

__all__ = ["PairedDiff", "paired_metric", "corpus_metric", "PairedOptions"]

# relative tolerance between a value recomputed from predictions.jsonl and the value in results.json
# (an older version summed perplexity's log-likelihoods in another order: last-bit differences)
REL_TOL = 1e-9


@dataclass(frozen=True)
class PairedDiff:
    """B minus A on one metric over the items both runs scored."""

    metric: str
    n: int
    a: float
    b: float
    delta: float                # b - a
    ci95: tuple[float, float]
    p_value: float
    basis: str                  # "mean" | "corpus" | "item mean" (a corpus metric that could not be recomputed)
    note: Optional[str] = None  # why a corpus metric fell back to the item mean

    def to_json(self) -> dict:
        """compare.json's form: {delta, ci95, p, n}, plus basis (and note) for corpus metrics."""
        out = {"delta": self.delta, "ci95": list(self.ci95), "p": self.p_value, "n": self.n}
        if self.basis != "mean":
            out["basis"] = self.basis
        if self.note:
            out["note"] = self.note
        return out


def corpus_metric(res: Results, metric: str):
    """The metric object that wrote `metric` in `res` when it is a corpus metric, else None.
    TunelabError when it is one but its signature cannot be read back."""
    from tunelab.evaluate.metrics.registry import known_metrics

    cls = known_metrics().get(metric)
    if cls is None or not cls.corpus:
        return None
    entry = res.metrics.get(metric)
    sig = entry.get("signature") if isinstance(entry, dict) else None
    if not sig:
        raise TunelabError(f"results.json has no signature for '{metric}', so its settings are unknown")
    return cls.from_signature(sig)


def paired_metric(res_a: Results, res_b: Results, metric: str,
                  options: Optional[PairedOptions] = None) -> Optional[PairedDiff]:
    """The paired difference b − a of `metric` (module docstring); None when no item has it in both."""
    options = options or PairedOptions()
    items_a, items_b = res_a.items, res_b.items
    ids = [i for i in items_a if i in items_b
           and items_a[i].get(metric) is not None and items_b[i].get(metric) is not None]
    if not ids:
        return None
    whole = len(ids) == len(items_a) == len(items_b)
    note = None
    try:
        if corpus_metric(res_a, metric) is not None:
            return _corpus(res_a, res_b, metric, ids, whole, options)
    except TunelabError as e:
        note = (f"the corpus {metric} could not be recomputed from predictions.jsonl ({e}); this is the "
                f"difference of the mean per-item {metric}, not of the corpus values")
    r = paired_bootstrap([items_a[i][metric] for i in ids], [items_b[i][metric] for i in ids],
                         options=replace(options, p_rule="centred", values=None))
    if whole and note is None:
        r = _as_reported(r, res_a, res_b, metric)
    return PairedDiff(metric, r.n, r.a, r.b, r.b - r.a, r.ci95, r.p_value,
                      "mean" if note is None else "item mean", note)


def _as_reported(r: PairedResult, res_a: Results, res_b: Results, metric: str) -> PairedResult:
    """The point values as results.json holds them, when they agree with the recomputed ones."""
    va, vb = res_a.value(metric), res_b.value(metric)
    if va is None or vb is None or not (_close(va, r.a) and _close(vb, r.b)):
        return r
    return replace(r, a=va, b=vb, delta=vb - va)


def _close(x: float, y: float) -> bool:
    return abs(x - y) <= REL_TOL * max(1.0, abs(x), abs(y))


def _corpus(res_a: Results, res_b: Results, metric: str, ids: list[str], whole: bool,
            options: PairedOptions) -> PairedDiff:
    m = corpus_metric(res_a, metric)
    if corpus_metric(res_b, metric).signature() != m.signature():
        raise TunelabError(f"the two runs computed {metric} with different settings "
                           f"({res_a.metrics[metric]['signature']} vs {res_b.metrics[metric]['signature']})")
    stats_a, stats_b = _checked_stats(m, res_a, metric), _checked_stats(m, res_b, metric)
    row_a, row_b = _row(res_a), _row(res_b)
    rows_a, rows_b = stats_a[[row_a[i] for i in ids]], stats_b[[row_b[i] for i in ids]]
    values = (res_a.value(metric), res_b.value(metric)) if whole else (m.corpus_value(rows_a), m.corpus_value(rows_b))
    r = paired_corpus(rows_a, rows_b, m.values_from_stats, replace(options, p_rule="sacrebleu", values=values))
    return PairedDiff(metric, r.n, r.a, r.b, r.delta, r.ci95, r.p_value, "corpus")


def _row(res: Results) -> dict[str, int]:
    return {str(line.get("id")): j for j, line in enumerate(res.predictions)}


# (id of a Results, metric signature) -> (that Results, its checked statistics): a compare pairs each
# arm with several others, and TER's statistics take a millisecond an item. The Results is kept so
# that its id cannot be reused by another object while the entry lives.
_CACHE: dict[tuple[int, str], tuple[Results, object]] = {}
_CACHE_SIZE = 16


def _checked_stats(m, res: Results, metric: str):
    """The (n, k) statistics of every item of `res`, checked against the value in results.json."""
    key = (id(res), m.signature())
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is res:
        return hit[1]
    matrix = _recompute(m, res, metric)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = (res, matrix)
    return matrix


def _recompute(m, res: Results, metric: str):
    matrix = m.stats_matrix([m.line_score(line) for line in res.predictions])
    got, want = m.corpus_value(matrix), res.value(metric)
    if want is None or not _close(got, want):
        where = f" of {res.out}" if res.out is not None else ""
        raise TunelabError(f"recomputed from its items it is {got:.6g}, but results.json{where} says {want}")
    return matrix
