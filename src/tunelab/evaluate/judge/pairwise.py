"""Judging pairs of answers in both orders; the flip rule; the win rate and its length control.

`judge_both_orders(judge, template, pairs, rubric)` shows every pair twice, the first answer as
A and then as B, and maps each verdict back to the original order: 1 = the first answer is
better, 2 = the second, 0 = a tie, None = unparsed. `combine` applies MT-Bench's rule: the same
verdict in both orders stands, a verdict that flips with the order is a tie, and a pair with an
unreadable judgment in either order is unparsed (neither a win nor a loss).

`lc_win_rate(scores, first_len, second_len)`: the length-controlled win rate, AlpacaEval 2's idea
(Dubois et al. 2024, arXiv 2404.04475): regress the outcome (win 1, tie 0.5, loss 0) on the
length difference with a logistic model, logit p = b0 + b1 * tanh(d / sd(d)), and report the win
rate at equal length, sigmoid(b0). Fitted here by Newton's method in numpy (two parameters: a few
lines; scipy and scikit-learn are not dependencies of tunelab), with a small ridge penalty on b1
so that a perfectly separated sample still has a finite answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from tunelab.evaluate.judge.parse import parse_verdict
from tunelab.evaluate.judge.prompts import JudgeTemplate
from tunelab.evaluate.judge.run import Judge, JudgeRequest

_AS_SHOWN = {"A": 1, "B": 2, "C": 0}  # the verdict letter, first answer shown as A
_SWAPPED = {"A": 2, "B": 1, "C": 0}   # first answer shown as B


@dataclass
class Pair:
    question: str
    first: str
    second: str


@dataclass
class PairJudgment:
    texts: tuple[str, str]                  # the judge's text: first shown as A, then first shown as B
    letters: tuple[Optional[str], Optional[str]]
    verdicts: tuple[Optional[int], Optional[int]]  # each order mapped back to the original
    verdict: Optional[int]                  # combined (the flip rule)


def combine(a: Optional[int], b: Optional[int]) -> Optional[int]:
    if a is None or b is None:
        return None
    return a if a == b else 0


def judge_both_orders(judge: Judge, template: JudgeTemplate, pairs: list[Pair], rubric: Optional[str]) -> list[PairJudgment]:
    requests = []
    for p in pairs:
        for a, b, order in ((p.first, p.second, "first-as-A"), (p.second, p.first, "first-as-B")):
            key = {"template": template.sha256, "kind": "pairwise", "question": p.question, "answers": [a, b],
                   "order": order, "rubric": rubric}
            requests.append(JudgeRequest(template.messages(question=p.question, answer_a=a, answer_b=b, rubric=rubric), key))
    texts = judge.run(requests)
    out = []
    for j in range(len(pairs)):
        t = (texts[2 * j], texts[2 * j + 1])
        letters = (parse_verdict(t[0]), parse_verdict(t[1]))
        v = (_AS_SHOWN.get(letters[0]) if letters[0] else None, _SWAPPED.get(letters[1]) if letters[1] else None)
        out.append(PairJudgment(t, letters, v, combine(*v)))
    return out


def _fit(y: np.ndarray, x: np.ndarray, ridge: float = 1e-2, steps: int = 50) -> np.ndarray:
    """sigmoid(b0) of the logistic fit of each row of y (in [0, 1]) on the same row of x, shape (B, n).

    All rows are fitted at once (one Newton step for every resample together), so a bootstrap of
    1,000 resamples costs about as much as 50 matrix operations on a (1000, n) array.
    """
    b = np.zeros((y.shape[0], 2))
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(b[:, :1] + b[:, 1:] * x)))
        w = p * (1 - p)
        grad = np.stack([(y - p).sum(1), ((y - p) * x).sum(1) - ridge * b[:, 1]], axis=1)
        h00, h01, h11 = w.sum(1) + 1e-9, (w * x).sum(1), (w * x * x).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        step = np.stack([(h11 * grad[:, 0] - h01 * grad[:, 1]) / det, (h00 * grad[:, 1] - h01 * grad[:, 0]) / det], axis=1)
        b = b + step
        if np.abs(step).max() < 1e-10:
            break
    return 1.0 / (1.0 + np.exp(-b[:, 0]))


def lc_win_rate(scores: np.ndarray, first_len: np.ndarray, second_len: np.ndarray, idx: Optional[np.ndarray] = None):
    """The win rate at equal length; with `idx` (B, n), one value per resample row."""
    d = first_len.astype(float) - second_len.astype(float)
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)  # the scale is fixed by the whole sample
    if idx is None:
        return float(_fit(scores[None, :], x[None, :])[0])
    return _fit(scores[idx], x[idx])
