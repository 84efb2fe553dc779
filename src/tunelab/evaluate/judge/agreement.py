"""How far a judge agrees with human labels, each measure with a 95% bootstrap CI over the pairs.

`agreement(pairs, verdicts) -> list[Measure]`. Definitions (the published numbers they reproduce
are in tests/evaluate/test_judge_agreement.py):
- accuracy: the verdict equals the label, averaged over the presentation orders judged (LLMBar's
  `correct_average`); with one order, that order's accuracy (PandaLM's accuracy).
- accuracy as given / swapped: each order alone (LLMBar's `correct_False` / `correct_True`).
- right in both orders: the pair counts only when both orders give the label (Auto-J's agreement,
  LLMBar's `correct_both`).
- order consistency: both orders give the same verdict (Auto-J's consistency, LLMBar's `equal`).
- agreement with ties / without ties: the combined verdict (the same in both orders, else a tie,
  MT-Bench's rule) equals the label; without ties leaves out pairs that the label or the combined
  verdict calls a tie.
- Cohen's kappa: of the combined verdict and the label (chance-corrected agreement, 3 classes).
- macro F1: F1 per class (first better, second better, tie), averaged over the classes that occur
  (PandaLM's F1).
- prefers longer: of the decisive verdicts on pairs whose answers differ in length (characters),
  the share that picks the longer answer; 0.5 is no length preference.
An unparsed verdict (None) never agrees with anything: it counts against every measure, and the
`unparsed` count says how many there were.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from tunelab.errors import TunelabError
from tunelab.evaluate import stats
from tunelab.evaluate.judge.labels import LabelledPair, Verdicts

UNPARSED = -1  # the code of an unparsed verdict in the arrays below


@dataclass
class Measure:
    name: str
    value: Optional[float]
    ci95: Optional[tuple[float, float]]
    n: int  # the pairs (or verdicts) the measure is over

    def to_json(self) -> dict:
        return {"value": self.value, "ci95": list(self.ci95) if self.ci95 else None, "n": self.n}


def _codes(values: list[Optional[int]]) -> np.ndarray:
    return np.array([UNPARSED if v is None else v for v in values], dtype=np.int64)


def combined(first: np.ndarray, second: Optional[np.ndarray]) -> np.ndarray:
    """One verdict per pair: the same in both orders, else a tie; unparsed when either is."""
    if second is None:
        return first
    out = np.where(first == second, first, 0)
    return np.where((first == UNPARSED) | (second == UNPARSED), UNPARSED, out)


def _ratio(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def stat(idx: np.ndarray) -> np.ndarray:
        d = den[idx].sum(axis=1)
        return np.divide(num[idx].sum(axis=1), d, out=np.full(idx.shape[0], np.nan), where=d > 0)
    return stat


def kappa_stat(a: np.ndarray, b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Cohen's kappa of two label arrays, per row of an index matrix."""
    classes = np.union1d(a, b)

    def stat(idx: np.ndarray) -> np.ndarray:
        x, y = a[idx], b[idx]
        observed = (x == y).mean(axis=1)
        chance = sum((x == k).mean(axis=1) * (y == k).mean(axis=1) for k in classes)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(chance < 1, (observed - chance) / (1 - chance), 1.0)
    return stat


def macro_f1_stat(pred: np.ndarray, gold: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Macro F1 over the classes in gold or the parsed predictions, per row of an index matrix."""
    classes = np.union1d(gold, pred[pred != UNPARSED])

    def stat(idx: np.ndarray) -> np.ndarray:
        p, g = pred[idx], gold[idx]
        scores = []
        for k in classes:
            tp = ((p == k) & (g == k)).sum(axis=1)
            wrong = ((p == k) & (g != k)).sum(axis=1) + ((p != k) & (g == k)).sum(axis=1)
            den = 2 * tp + wrong
            scores.append(np.divide(2 * tp, den, out=np.zeros(len(tp)), where=den > 0))
        return np.mean(scores, axis=0)
    return stat


@dataclass
class _Arrays:
    gold: np.ndarray
    orders: list[np.ndarray]
    combined: np.ndarray
    longer: np.ndarray  # 1 or 2: the longer answer; 0: same length


def _arrays(pairs: list[LabelledPair], verdicts: Verdicts) -> _Arrays:
    if len(verdicts.first) != len(pairs) or (verdicts.second is not None and len(verdicts.second) != len(pairs)):
        raise TunelabError(f"{verdicts.source}: the verdicts do not match the {len(pairs)} pairs one to one")
    orders = [_codes(verdicts.first)] + ([_codes(verdicts.second)] if verdicts.second is not None else [])
    la = np.array([len(p.answers[0]) for p in pairs])
    lb = np.array([len(p.answers[1]) for p in pairs])
    longer = np.where(la > lb, 1, np.where(lb > la, 2, 0))
    gold = np.array([p.gold for p in pairs], dtype=np.int64)
    return _Arrays(gold, orders, combined(orders[0], orders[1] if len(orders) > 1 else None), longer)


def _ratios(a: _Arrays) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Measure name -> (numerator, denominator) per pair, for the measures that are ratios."""
    ones = np.ones(len(a.gold))
    right = [(o == a.gold).astype(float) for o in a.orders]
    out = {"accuracy": (np.mean(right, axis=0), ones)}
    if len(a.orders) == 2:
        out["accuracy as given"] = (right[0], ones)
        out["accuracy swapped"] = (right[1], ones)
        out["right in both orders"] = (right[0] * right[1], ones)
        same = (a.orders[0] == a.orders[1]) & (a.orders[0] != UNPARSED)  # two unparsed texts agree on nothing
        out["order consistency"] = (same.astype(float), ones)
    out["agreement with ties"] = ((a.combined == a.gold).astype(float), ones)
    decisive_pair = ((a.gold != 0) & (a.combined != 0)).astype(float)
    out["agreement without ties"] = ((a.combined == a.gold) * decisive_pair, decisive_pair)
    decisive = [((o == 1) | (o == 2)) & (a.longer != 0) for o in a.orders]
    out["prefers longer"] = (sum(((o == a.longer) & d).astype(float) for o, d in zip(a.orders, decisive)),
                             sum(d.astype(float) for d in decisive))
    return out


def agreement(pairs: list[LabelledPair], verdicts: Verdicts, *, n_resamples: int = 1000,
              seed: int = 1234) -> list[Measure]:
    """Every measure of the module docstring, in a fixed order, with its 95% CI."""
    if not pairs:
        raise TunelabError("no labelled pairs to measure agreement on")
    a = _arrays(pairs, verdicts)
    n = len(pairs)
    out = []
    for name, (num, den) in _ratios(a).items():
        total = float(den.sum())
        value = float(num.sum() / total) if total > 0 else None
        ci = _ci(_ratio(num, den), n, n_resamples, seed) if total > 0 else None
        out.append(Measure(name, value, ci, int(total) if name == "prefers longer" else int((den > 0).sum())))
    for name, stat in (("Cohen's kappa", kappa_stat(a.combined, a.gold)), ("macro F1", macro_f1_stat(a.combined, a.gold))):
        whole = float(stat(np.arange(n)[None, :])[0])
        out.append(Measure(name, whole, _ci(stat, n, n_resamples, seed), n))
    unparsed = int(sum((o == UNPARSED).sum() for o in a.orders))
    out.append(Measure("unparsed", float(unparsed), None, n * len(a.orders)))
    return out


def _ci(stat, n: int, n_resamples: int, seed: int) -> Optional[tuple[float, float]]:
    reps = stats.bootstrap_replicates(None, n_resamples, seed, stat, n=n)
    reps = reps[~np.isnan(reps)]  # a resample with no decisive pair has no value for that measure
    if reps.size == 0:
        return None
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return float(lo), float(hi)
