"""Fitting and measuring the toxicity classifier's linear heads.

Hand-written on purpose: the heads are weighted L2 logistic regressions over a few hundred to a
few hundred thousand (sparse, hashed) features, fitted by torch's L-BFGS. scikit-learn would do
the same but is not a tunelab dependency, and its estimators persist by pickling; these weights go
to safetensors. The metrics (AUROC with tied ranks, a bootstrap interval, expected calibration
error) are a few lines of numpy each and are checked against hand-computed values in
tests/safety/test_auroc.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# ---------------------------------------------------------------- metrics


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic; tied scores share mean ranks.

    Equals P(score of a random positive > score of a random negative) + 0.5 P(tie); NaN when one
    class is absent.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct score's first occurrence
    ranks = (first + (counts + 1) / 2.0)[inv]  # 1-based mean rank within a run of ties
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def bootstrap_auroc_ci(scores, labels, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval, resampling positives and negatives separately (some test sets
    hold five statements of a class; a joint resample could draw none)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    lab = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    vals = [auroc(np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]), lab)
            for _ in range(n)]
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return (float(lo), float(hi))


def f1_at(scores: Sequence[float], labels: Sequence[int], threshold: float = 0.5,
          weights: Sequence[float] | None = None) -> float:
    """(Weighted) F1 of the toxic class when score >= threshold is predicted toxic."""
    pred = np.asarray(scores) >= threshold
    y = np.asarray(labels).astype(bool)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    tp = float(w[pred & y].sum())
    denom = float(w[pred].sum() + w[y].sum())
    return 2.0 * tp / denom if denom else 0.0


def ece(probs: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """Expected calibration error: equal-width bins over [0, 1], |mean label - mean prob| weighted
    by the bin's share of items."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return float(total)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # no overflow warnings


# ---------------------------------------------------------------- features


@dataclass
class SparseRows:
    """Rows of hashed n-gram features in CSR form (indptr, indices, values); dense would not fit
    (25k texts x 2^17 buckets x 4 bytes = 13 GB)."""
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    dim: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_texts(cls, texts: Sequence[str], dim: int) -> "SparseRows":
        from tunelab.safety.toxicity import ngram_features

        feats = [ngram_features(t, dim) for t in texts]
        indptr = np.zeros(len(feats) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(i) for i, _ in feats])
        cat = (lambda k, dt: np.concatenate([f[k] for f in feats]) if feats else np.zeros(0, dt))
        return cls(indptr, cat(0, np.int64), cat(1, np.float32), dim)

    def __getitem__(self, rows) -> "SparseRows":
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        take = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(rows) else np.zeros(0, int)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(ends - starts)
        return SparseRows(indptr, self.indices[take], self.values[take], self.dim)

    def torch(self):
        import torch

        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        return torch.sparse_coo_tensor(np.vstack([rows, self.indices]), self.values.astype(np.float64),
                                       (len(self), self.dim), check_invariants=False).coalesce()

    def dot(self, w: np.ndarray) -> np.ndarray:
        """X @ w for a weight vector w of length dim, shape (N,)."""
        rows = np.repeat(np.arange(len(self)), np.diff(self.indptr))
        return np.bincount(rows, weights=self.values.astype(np.float64) * w[self.indices], minlength=len(self))


def take(X, rows):
    """Row subset of a dense matrix or SparseRows."""
    return X[rows]


def linear(X, w: np.ndarray, b: float) -> np.ndarray:
    """Logits X @ w + b for dense or sparse X, float64, shape (N,)."""
    if isinstance(X, SparseRows):
        return X.dot(w.astype(np.float64)) + b
    return np.asarray(X, dtype=np.float64) @ w.astype(np.float64) + b


# ---------------------------------------------------------------- logistic regression


def fit_logreg(X, y: np.ndarray, C: float, sample_weight: np.ndarray,
               max_iter: int = 200) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by full-batch L-BFGS; returns (weight, bias).

    Minimises sum_i s_i * logloss_i + |w|^2 / (2C) (scikit-learn's convention for C); the bias
    is not penalised. X: dense (N, D) array or SparseRows. The gradient is written out
    (X^T (s * (p - y)) + w / C) rather than taken by autograd: with a sparse X, autograd's
    backward rebuilds the transpose on every step, which made a 25k-row fit several times slower.
    """
    import torch

    yt = torch.as_tensor(y, dtype=torch.float64)  # (N,)
    if yt.min() == yt.max():
        raise ValueError("training data needs both classes")
    sw = torch.as_tensor(sample_weight, dtype=torch.float64)  # (N,)
    if isinstance(X, SparseRows):
        coo = X.torch()
        A, At = coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()  # (N, D), (D, N)
    else:
        A = torch.as_tensor(np.asarray(X), dtype=torch.float64)  # (N, D)
        At = A.t()
    w = torch.zeros(A.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        with torch.no_grad():
            z = (A @ w.unsqueeze(1)).squeeze(1) + b  # (N,)
            # logloss = softplus(z) - y z, written stably
            loss = (sw * (torch.nn.functional.softplus(z) - yt * z)).sum() + (w @ w) / (2 * C)
            r = sw * (torch.sigmoid(z) - yt)  # (N,) d loss / d z
            w.grad = (At @ r.unsqueeze(1)).squeeze(1) + w / C
            b.grad = r.sum().reshape(1)
        return loss

    opt.step(closure)
    return w.detach().numpy().astype(np.float32), float(b.detach()[0])


def weighted_logloss(z: np.ndarray, y: np.ndarray, sw: np.ndarray) -> float:
    p = np.clip(sigmoid(z), 1e-7, 1 - 1e-7)
    return float(-np.sum(sw * (y * np.log(p) + (1 - y) * np.log(1 - p))) / np.sum(sw))


def choose_C(X, y: np.ndarray, sw: np.ndarray, folds: np.ndarray, grid: Sequence[float]) -> tuple[float, np.ndarray, dict]:
    """The C in grid with the lowest weighted out-of-fold log-loss (folds: a fold id per row,
    drawn from the training rows only). Returns (C, out-of-fold logits at that C, loss per C)."""
    best, best_loss, best_oof, losses = grid[0], math.inf, None, {}
    for C in grid:
        oof = np.zeros(len(y))
        for k in np.unique(folds):
            tr, te = folds != k, folds == k
            w, b = fit_logreg(take(X, tr), y[tr], C, sw[tr])
            oof[te] = linear(take(X, te), w, b)
        losses[C] = weighted_logloss(oof, y, sw)
        if losses[C] < best_loss:
            best, best_loss, best_oof = C, losses[C], oof
    return best, best_oof, losses


def platt(z: np.ndarray, y: np.ndarray, sw: np.ndarray) -> tuple[float, float]:
    """(a, c) so that sigmoid(a * z + c) fits held-out labels (weighted Platt scaling); a slope
    <= 0 would invert the ranking, so that falls back to the identity."""
    a, c = fit_logreg(z.reshape(-1, 1), y, C=1e6, sample_weight=sw)
    return (float(a[0]), float(c)) if a[0] > 0 else (1.0, 0.0)


def choose_threshold(p: np.ndarray, y: np.ndarray, w: np.ndarray, everyday: np.ndarray,
                     max_everyday_fpr: float) -> tuple[float, dict]:
    """The threshold with the best weighted F1 on the validation rows among those that flag at
    most max_everyday_fpr of the everyday validation rows (the `everyday` mask)."""
    cands = np.unique(np.round(p, 3))
    best_t, best_f1 = 0.5, -1.0
    for t in cands[(cands >= 0.05) & (cands <= 0.95)]:
        if everyday.any() and (p[everyday] >= t).mean() > max_everyday_fpr:
            continue
        f1 = f1_at(p, y, t, w)
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    fpr = float((p[everyday] >= best_t).mean()) if everyday.any() else float("nan")
    return best_t, {"val_weighted_f1": best_f1, "val_everyday_fpr": fpr}
