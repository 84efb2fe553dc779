"""Uncertainty for every score: standard error, bootstrap confidence intervals, paired bootstrap.

Public functions (stable; the runner, `tunelab diff` and compare call them):

- `stderr(values) -> float | None`: sample standard deviation (ddof=1) over sqrt(n), the standard
  error of a mean, as lm-evaluation-harness reports it for mean-aggregated metrics. None when
  n < 2 (undefined; JSON writes it as null).
- `bootstrap_ci(values, n_resamples=1000, seed=1234, alpha=0.05, statistic=None) -> (lo, hi)`:
  percentile interval of the statistic over resamples of the items. `statistic` defaults to the
  mean of `values`; corpus-level metrics (BLEU, perplexity) pass a function that takes an integer
  index matrix of shape (n_resamples, n) and returns one statistic per row.
- `bootstrap_replicates(...)`: the raw resampled statistics (for stderr of corpus metrics).
- `paired_bootstrap(a, b, ...) -> PairedResult`: delta = stat(b) - stat(a) on the same
  resampled items, its percentile CI and a p-value (`p_rule`: "centred", the default, or
  "sacrebleu", the rule of `sacrebleu --paired-bs`, used for corpus metrics).
- `paired_corpus(stats_a, stats_b, score, options) -> PairedResult`: the same for a corpus
  metric, from the items' sufficient statistics (Koehn 2004; `sacrebleu --paired-bs`).
- `corpus_statistic(item_stats, score)`: the statistic of a corpus metric (BLEU, chrF, TER,
  perplexity): per resample, sum the items' sufficient statistics and score the sum.

All resampling draws one index matrix from `numpy.random.default_rng(seed)`, so the same seed and
the same n give the same intervals on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tunelab.errors import TunelabError

Statistic = Callable[[np.ndarray], np.ndarray]  # (B, n) int indices -> (B,) statistics

__all__ = ["stderr", "bootstrap_ci", "bootstrap_replicates", "paired_bootstrap", "PairedResult", "corpus_statistic",
           "paired_corpus", "PairedOptions", "P_RULES"]

# how paired_bootstrap turns the resampled differences into a p-value (see there)
P_RULES = ("centred", "sacrebleu")


def _as_array(values: Sequence[float], what: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise TunelabError(f"{what}: expected a flat list of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise TunelabError(f"{what}: no items to compute statistics over (n = 0)")
    return arr


def stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample std (ddof=1) / sqrt(n); None when n < 2."""
    arr = _as_array(values)
    if arr.size < 2:
        return None
    return float(arr.std(ddof=1) / np.sqrt(arr.size))


def _indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n_resamples < 1:
        raise TunelabError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))  # (B, n): row b is resample b


def _mean_statistic(arr: np.ndarray) -> Statistic:
    # Chunked so B x n stays small (1000 x 100k items would be 800 MB at once).
    def stat(idx: np.ndarray) -> np.ndarray:
        out = np.empty(idx.shape[0])
        step = max(1, 2_000_000 // max(1, idx.shape[1]))
        for s in range(0, idx.shape[0], step):
            out[s:s + step] = arr[idx[s:s + step]].mean(axis=1)
        return out

    return stat


def corpus_statistic(item_stats: np.ndarray, score: Callable[[np.ndarray], np.ndarray]) -> Statistic:
    """The statistic of a corpus metric: for each resample (row of the index matrix) the items'
    sufficient statistics (`item_stats`, shape (n, k)) are summed and `score` turns the (B, k)
    totals into (B,) values, as sacrebleu's bootstrap does (Koehn 2004).

    The sums go through per-row item counts (an item drawn twice counts twice), in chunks of rows
    so that neither a (B, n, k) array nor a (B, n) one for many items is held at once.
    """
    item_stats = np.asarray(item_stats, dtype=np.float64)

    def stat(idx: np.ndarray) -> np.ndarray:
        b, n = idx.shape
        totals = np.empty((b, item_stats.shape[1]))
        step = max(1, 2_000_000 // max(1, n))
        for s in range(0, b, step):
            rows = idx[s:s + step]
            flat = (np.arange(rows.shape[0])[:, None] * n + rows).ravel()
            counts = np.bincount(flat, minlength=rows.shape[0] * n).reshape(rows.shape[0], n)
            totals[s:s + step] = counts @ item_stats
        return np.asarray(score(totals), dtype=np.float64)

    return stat


def bootstrap_replicates(values: Sequence[float] | None, n_resamples: int = 1000, seed: int = 1234,
                         statistic: Statistic | None = None, n: int | None = None) -> np.ndarray:
    """The statistic on each of `n_resamples` resamples of the n items, shape (n_resamples,)."""
    if statistic is None:
        arr = _as_array(values)
        statistic, n = _mean_statistic(arr), arr.size
    elif n is None:
        n = _as_array(values).size
    if n < 1:
        raise TunelabError("no items to compute statistics over (n = 0)")
    reps = np.asarray(statistic(_indices(n, n_resamples, seed)), dtype=np.float64)
    if reps.shape != (n_resamples,):
        raise ValueError(f"statistic returned shape {reps.shape}, expected ({n_resamples},)")
    return reps


def bootstrap_ci(values: Sequence[float] | None, n_resamples: int = 1000, seed: int = 1234,
                 alpha: float = 0.05, statistic: Statistic | None = None,
                 n: int | None = None) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of the mean of `values` (or of `statistic`).

    With `statistic`, pass `n` (the item count) or `values` of that length; the statistic gets
    index matrices of shape (n_resamples, n).
    """
    if not 0.0 < alpha < 1.0:
        raise TunelabError(f"alpha must be in (0, 1), got {alpha}")
    reps = bootstrap_replicates(values, n_resamples, seed, statistic, n)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    """B minus A on the items both scored."""

    delta: float                # stat(b) - stat(a) on all items
    ci95: tuple[float, float]   # percentile CI of delta (the (1 - alpha) interval)
    p_value: float              # see paired_bootstrap's p_rule
    n: int
    a: float
    b: float


@dataclass(frozen=True)
class PairedOptions:
    """How paired_bootstrap resamples and tests; the defaults are the compare's and `tunelab diff`'s."""

    n_resamples: int = 1000
    seed: int = 1234
    alpha: float = 0.05
    p_rule: str = "centred"
    # the two systems' values on all items, when the caller computed them itself (a corpus metric's
    # own aggregation): then delta is exactly values[1] - values[0], the difference of the shown values
    values: tuple[float, float] | None = None


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000,
                     seed: int = 1234, alpha: float = 0.05,
                     statistic_a: Statistic | None = None,
                     statistic_b: Statistic | None = None, *,
                     options: PairedOptions | None = None) -> PairedResult:
    """Paired bootstrap test of stat(b) - stat(a) over the same items.

    Both systems are resampled with the same index rows, so per-item difficulty cancels. `a` and
    `b` are per-item values; the statistic defaults to their mean. `options` (PairedOptions), when
    given, replaces n_resamples, seed and alpha and sets p_rule and values.

    p_rule "centred": shift the bootstrap distribution of delta to mean zero (the null) and count
    how often |delta* - delta| >= |delta| (Berg-Kirkpatrick et al. 2012, two-sided).
    p_rule "sacrebleu": `sacrebleu --paired-bs` (Moses' bootstrap-hypothesis-difference-significance
    script): with d* = |delta*|, count how often d* - mean(d*) > |delta|. Either way
    p = (count + 1) / (n_resamples + 1), never exactly 0; and two systems whose every resample
    differs by exactly 0 get p = 1 (sacrebleu's strict > would give 1 / (n_resamples + 1)).
    """
    arr_a, arr_b = _as_array(a, "a"), _as_array(b, "b")
    if arr_a.size != arr_b.size:
        raise TunelabError(f"paired bootstrap needs the same items: a has {arr_a.size}, b has {arr_b.size}")
    o = options or PairedOptions(n_resamples, seed, alpha)
    return _paired(arr_a.size, statistic_a or _mean_statistic(arr_a), statistic_b or _mean_statistic(arr_b), o)


def paired_corpus(stats_a: np.ndarray, stats_b: np.ndarray, score: Callable[[np.ndarray], np.ndarray],
                  options: PairedOptions | None = None) -> PairedResult:
    """The paired bootstrap of a corpus metric (Koehn 2004; what `sacrebleu --paired-bs` does).

    `stats_a`, `stats_b`: the items' sufficient statistics, shape (n, k), row i of both for the
    same item; `score`: (B, k) summed statistics -> (B,) metric values. Each resample sums the
    statistics of the same drawn items for both systems and scores the sums, so delta* is the
    difference of two corpus scores. The default p_rule here is "sacrebleu".
    """
    stats_a, stats_b = np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)
    if stats_a.shape[0] != stats_b.shape[0] or stats_a.shape[0] == 0:
        raise TunelabError(f"paired bootstrap needs the same items: a has {stats_a.shape[0]}, b has {stats_b.shape[0]}")
    o = options or PairedOptions(p_rule="sacrebleu")
    return _paired(stats_a.shape[0], corpus_statistic(stats_a, score), corpus_statistic(stats_b, score), o)


def _paired(n: int, stat_a: Statistic, stat_b: Statistic, o: PairedOptions) -> PairedResult:
    if o.p_rule not in P_RULES:
        raise ValueError(f"p_rule must be one of {P_RULES}, got {o.p_rule!r}")  # a bug, not user input
    if not 0.0 < o.alpha < 1.0:
        raise TunelabError(f"alpha must be in (0, 1), got {o.alpha}")
    if o.values is not None:
        va, vb = float(o.values[0]), float(o.values[1])
    else:
        full = np.arange(n)[None, :]
        va, vb = float(stat_a(full)[0]), float(stat_b(full)[0])
    delta = vb - va
    idx = _indices(n, o.n_resamples, o.seed)
    deltas = np.asarray(stat_b(idx), dtype=np.float64) - np.asarray(stat_a(idx), dtype=np.float64)
    lo, hi = np.quantile(deltas, [o.alpha / 2, 1 - o.alpha / 2])
    if not np.any(np.abs(deltas) > 1e-12) and abs(delta) <= 1e-12:
        p = 1.0  # the same score on every resample: nothing to test
    elif o.p_rule == "sacrebleu":
        spread = np.abs(deltas)
        p = (int(np.sum(spread - spread.mean() > abs(delta))) + 1) / (o.n_resamples + 1)
    else:
        # tolerance so that float noise around an exact tie does not count as a difference
        extreme = np.abs(deltas - delta) >= abs(delta) - 1e-12
        p = (int(extreme.sum()) + 1) / (o.n_resamples + 1)
    return PairedResult(delta=delta, ci95=(float(lo), float(hi)), p_value=float(min(1.0, p)),
                        n=n, a=va, b=vb)
