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
  resampled items, its percentile CI and a two-sided p-value.

All resampling draws one index matrix from `numpy.random.default_rng(seed)`, so the same seed and
the same n give the same intervals on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tunelab.errors import TunelabError

Statistic = Callable[[np.ndarray], np.ndarray]  # (B, n) int indices -> (B,) statistics

__all__ = ["stderr", "bootstrap_ci", "bootstrap_replicates", "paired_bootstrap", "PairedResult"]


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
    p_value: float              # two-sided: how often a resampled delta is as far from the
                                # observed one as the observed one is from 0 (null-centred)
    n: int
    a: float
    b: float


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_resamples: int = 1000,
                     seed: int = 1234, alpha: float = 0.05,
                     statistic_a: Statistic | None = None,
                     statistic_b: Statistic | None = None) -> PairedResult:
    """Paired bootstrap test of stat(b) - stat(a) over the same items.

    Both systems are resampled with the same index rows, so per-item difficulty cancels. The
    p-value shifts the bootstrap distribution of delta to mean zero (the null) and counts how
    often |delta* - delta| >= |delta| (Berg-Kirkpatrick et al. 2012, two-sided), with the +1
    correction so that it is never exactly 0: p = (count + 1) / (n_resamples + 1).
    """
    arr_a, arr_b = _as_array(a, "a"), _as_array(b, "b")
    if arr_a.size != arr_b.size:
        raise TunelabError(f"paired bootstrap needs the same items: a has {arr_a.size}, b has {arr_b.size}")
    n = arr_a.size
    stat_a = statistic_a or _mean_statistic(arr_a)
    stat_b = statistic_b or _mean_statistic(arr_b)
    full = np.arange(n)[None, :]
    va, vb = float(stat_a(full)[0]), float(stat_b(full)[0])
    delta = vb - va
    idx = _indices(n, n_resamples, seed)
    deltas = np.asarray(stat_b(idx), dtype=np.float64) - np.asarray(stat_a(idx), dtype=np.float64)
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    # Tolerance so that exactly-equal systems (all deltas 0) give p = 1, not a float-noise value.
    extreme = np.abs(deltas - delta) >= abs(delta) - 1e-12
    p = (int(extreme.sum()) + 1) / (n_resamples + 1)
    return PairedResult(delta=delta, ci95=(float(lo), float(hi)), p_value=float(min(1.0, p)),
                        n=n, a=va, b=vb)
